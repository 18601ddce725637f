"""Regular grids: multilinear interpolation of node values and linear binning of points.

Images are read by :func:`interpolate_grid`; the kernel density estimate bins its samples with
:func:`bin_points`. Not collective.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

__all__ = ["bin_points", "grid_corners", "interpolate_grid"]

FloatArray = npt.NDArray[np.float64]


def grid_corners(
    x: FloatArray, lo: FloatArray, step: FloatArray, shape: tuple[int, ...]
) -> Iterator[tuple[npt.NDArray[np.intp], FloatArray]]:
    """Multilinear stencil of points ``x`` (shape ``(d, N)``) on a regular grid.

    The grid has nodes ``lo + i * step``, ``i < shape``, each ``shape[k] >= 2``. Points outside
    it are clamped onto its boundary. Yields, for each of the ``2**d`` cell corners, the flat
    (C-order) node index and the weight of every point.
    """
    n = np.asarray(shape)
    t = np.clip((x - lo[:, None]) / step[:, None], 0.0, (n - 1)[:, None])
    i0 = np.minimum(t.astype(np.intp), (n - 2)[:, None])
    frac = t - i0
    strides = np.array([int(np.prod(n[k + 1 :])) for k in range(len(n))], dtype=np.intp)
    base = strides @ i0
    for corner in itertools.product((0, 1), repeat=len(n)):
        weight = np.ones(x.shape[1])
        offset = 0
        for k, c in enumerate(corner):
            weight *= frac[k] if c else 1.0 - frac[k]
            offset += c * int(strides[k])
        yield base + offset, weight


def interpolate_grid(
    grid: FloatArray, lo: FloatArray, step: FloatArray, x: FloatArray
) -> FloatArray:
    """Multilinear interpolation of node values ``grid`` at points ``x`` (shape ``(d, N)``)."""
    flat = grid.ravel()
    out = np.zeros(x.shape[1])
    for index, weight in grid_corners(x, lo, step, grid.shape):
        out += weight * flat[index]
    return out


def bin_points(
    x: FloatArray, lo: FloatArray, step: FloatArray, shape: tuple[int, ...]
) -> FloatArray:
    """Linear binning (cloud in cell) of unit masses at ``x`` onto grid nodes."""
    size = int(np.prod(shape))
    counts = np.zeros(size)
    for index, weight in grid_corners(x, lo, step, shape):
        counts += np.bincount(index, weights=weight, minlength=size)
    return counts.reshape(shape)
