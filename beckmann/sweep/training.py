"""The training θ of the reduced basis's greedy (``[sweep] reduced_train``)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from beckmann.sweep.grid import Grid

__all__ = ["training_set"]

FloatArray = npt.NDArray[np.float64]


def _subgrid_counts(lengths: list[int], n_max: int) -> list[int]:
    """Points per axis of a sub-grid with at most ``n_max`` points, as even as the axes allow."""
    m = [min(2, n) for n in lengths]  # both ends of every axis
    while True:
        grow = [i for i, n in enumerate(lengths) if m[i] < n
                and math.prod(m) // m[i] * (m[i] + 1) <= n_max]
        if not grow:
            return m
        i = max(grow, key=lambda i: (lengths[i] - 1) / max(m[i] - 1, 1))
        m[i] += 1


def training_set(grid: Grid, n_max: int) -> FloatArray:
    """The greedy's training θ.

    The grid when it has at most ``n_max`` values. Else, for a product grid, the sub-grid of
    at most ``n_max`` grid θ with evenly spaced indices on every axis, both ends included (the
    box's edges and corners, where an interpolation is worst, are trained on), and for other
    grids a Latin-hypercube set of ``n_max`` θ in the box (seed 0) plus the box's corners.
    """
    if len(grid) <= n_max:
        return np.asarray(grid.values, dtype=np.float64)
    if grid.axes is not None and math.prod(min(2, len(grid.axes[n])) for n in grid.names) <= n_max:
        axes = [np.asarray(grid.axes[n], dtype=np.float64) for n in grid.names]
        counts = _subgrid_counts([a.size for a in axes], n_max)
        sub = [a[np.unique(np.round(np.linspace(0, a.size - 1, c)).astype(int))]
               for a, c in zip(axes, counts, strict=True)]
        mesh = np.meshgrid(*sub, indexing="ij")
        return np.asarray(np.column_stack([g.ravel() for g in mesh]), dtype=np.float64)
    from scipy.stats import qmc

    lo, hi = (np.asarray(a, dtype=np.float64) for a in grid.box())
    dim = lo.size
    u = qmc.LatinHypercube(d=dim, seed=0).random(n_max)
    corners = np.array(np.meshgrid(*[[0.0, 1.0]] * dim, indexing="ij")).reshape(dim, -1).T
    return np.asarray(lo + np.vstack([u, corners]) * (hi - lo), dtype=np.float64)
