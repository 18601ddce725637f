r"""Distances between sample sets and densities: histogram TV, energy distance.

* :func:`bin_masses`: the mass of a finite-element density in each bin of a regular histogram,
  by quadrature (the reference of :func:`histogram_tv`);
* :func:`histogram_tv`: :math:`\tfrac12\sum_b |n_b/N - P_b|`;
* :func:`energy_distance`: :math:`2E|X-Y| - E|X-X'| - E|Y-Y'|` (V-statistic), in chunks.

All but :func:`bin_masses` are local (numpy on one rank's arrays).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, basix, fem
from beckmann._resources import require_memory
from beckmann.locate import MeshCells, cell_values

__all__ = [
    "bin_counts",
    "bin_masses",
    "check_bins",
    "energy_distance",
    "histogram_tv",
    "mean_distance",
]

FloatArray = npt.NDArray[np.float64]


def bin_masses(
    p: fem.Function, lo: FloatArray, hi: FloatArray, bins: int, cells: MeshCells | None = None
) -> FloatArray:
    """Mass of the normalised density ``p`` in each histogram bin, by quadrature; collective.

    A degree-10 rule per cell assigns each quadrature point's weight to its bin; with cells much
    smaller than bins the error is far below the sampling noise of a histogram.
    """
    msh = p.function_space.mesh
    comm = msh.comm
    mc = cells if cells is not None else MeshCells(msh)
    k = int(p.function_space.ufl_element().embedded_superdegree)
    vals, el = cell_values(p, k, mc)
    d = mc.d
    ct = basix.CellType.triangle if d == 2 else basix.CellType.tetrahedron
    qp, qw = basix.make_quadrature(ct, 10)
    phi = el.tabulate(0, qp)[0, :, :, 0]
    n = mc.n_owned
    pv = vals[:n] @ phi.T  # (cell, qp)
    w = pv * qw[None, :] * (mc.volume[:n, None] * math.factorial(d))
    lam = np.concatenate([1.0 - qp.sum(axis=1, keepdims=True), qp], axis=1)
    xq = np.einsum("qj,cjd->cqd", lam, mc.vertices[:n])
    hist = bin_counts(xq.reshape(-1, d), w.ravel(), lo, hi, bins)
    total = np.empty_like(hist)
    comm.Allreduce(hist, total, op=MPI.SUM)
    return total / total.sum()


def check_bins(bins: int, d: int) -> None:
    """Refuse ``bins`` per axis whose ``bins**d`` histograms would not fit in memory.

    A comparison holds about four float64 arrays of ``bins**d`` entries (counts, masses and
    their copies).

    Raises:
        ValueError: Too many bins (on every rank: the same numbers everywhere).
    """
    total = float(bins) ** d
    require_memory(32.0 * total, f"--bins {bins} ({bins}^{d} = {total:.3g} bins)",
                   "lower --bins")


def bin_counts(
    x: FloatArray, w: FloatArray | None, lo: FloatArray, hi: FloatArray, bins: int
) -> FloatArray:
    """Weighted counts of points ``x`` in the ``bins**d`` bins of the box ``[lo, hi]``.

    Points outside the box count in the nearest bin.
    """
    d = x.shape[1]
    idx = np.floor((x - lo) / (hi - lo) * bins).astype(np.int64)
    idx = np.clip(idx, 0, bins - 1)
    flat = np.ravel_multi_index(tuple(idx.T), (bins,) * d)
    return np.bincount(flat, weights=w, minlength=bins**d).astype(np.float64)


def histogram_tv(x: FloatArray, masses: FloatArray, lo: FloatArray, hi: FloatArray) -> float:
    """Total variation ``½ Σ |n_b/N − P_b|`` between samples and bin masses ``P``."""
    bins = round(masses.size ** (1.0 / x.shape[1]))
    counts = bin_counts(x, None, lo, hi, bins)
    return float(0.5 * np.abs(counts / x.shape[0] - masses).sum())


def mean_distance(a: FloatArray, b: FloatArray, chunk: int = 1024) -> float:
    """``E|X − Y|`` over all pairs of rows of ``a`` and ``b``, in chunks of ``chunk`` rows."""
    total = 0.0
    for i in range(0, a.shape[0], chunk):
        blk = a[i : i + chunk]
        d2 = (blk**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * blk @ b.T
        total += float(np.sqrt(np.maximum(d2, 0.0)).sum())
    return total / (a.shape[0] * b.shape[0])


def energy_distance(x: FloatArray, y: FloatArray, yy: float | None = None) -> float:
    """Energy distance ``2E|X−Y| − E|X−X'| − E|Y−Y'|`` (V-statistic, ≥ 0), in chunks.

    ``yy`` is ``E|Y−Y'|`` when already known (one reference set, many comparisons).
    """
    yy = mean_distance(y, y) if yy is None else yy
    return float(2.0 * mean_distance(x, y) - mean_distance(x, x) - yy)
