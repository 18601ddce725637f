r"""Exact samples of a finite-element density, and the distributed sample set.

**Sampling** (:func:`sample_density`) is exact for the finite-element density. On each cell the
density, a polynomial of degree :math:`k`, is written in the Bernstein basis
(:mod:`beckmann.density.bernstein`): its mass is the cell volume times the mean Bernstein
coefficient and its maximum is at most the largest coefficient. Cells are drawn by inverse CDF of
the masses, points uniformly in the cell and accepted against that bound. Cells are ordered by
their *original* (input) index and every random number is drawn identically on every rank, so
the same seed gives the same samples on any number of ranks.

A :class:`Samples` is one rank's share of a sample set: global indices, positions and the local
cell of each sample (the rank that owns the cell holds the sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, fem
from beckmann.density.bernstein import bernstein_matrix
from beckmann.locate import MeshCells, cell_values

__all__ = ["Samples", "gather_samples", "sample_density"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass
class Samples:
    """The rank's share of a sample set.

    Attributes:
        ids: Global sample indices (the order of the gathered array).
        x: Positions ``(n_local, d)``.
        cells: Local cell of each sample (-1 when unknown).
        n: Global number of samples.
    """

    ids: IntArray
    x: FloatArray
    cells: npt.NDArray[np.int32]
    n: int
    info: dict[str, Any] = field(default_factory=dict)


def sample_density(p: fem.Function, n: int, seed: int, cells: MeshCells | None = None) -> Samples:
    """Draw ``n`` exact samples of the finite-element density ``p`` (normalised here); collective.

    Cells are drawn with probability ``∫_c p / ∫ p`` (exact: Bernstein mean), points uniformly in
    the cell and accepted with probability ``p(x) / max_c`` (``max_c``: largest Bernstein
    coefficient). Where a cell's Bernstein coefficients are not all non-negative the density may
    dip below zero there; such cells are counted (``info["uncertified_cells"]``) and sampled
    from ``max(p, 0)``. The result does not depend on the number of ranks.

    Raises:
        ValueError: ``n < 1`` or the density has no positive mass.
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"the number of samples must be a positive integer, got {n!r}")
    msh = p.function_space.mesh
    comm = msh.comm
    mc = cells if cells is not None else MeshCells(msh)
    k = int(p.function_space.ufl_element().embedded_superdegree)
    vals, el = cell_values(p, k, mc)
    vals = vals[: mc.n_owned]
    Bc = vals @ bernstein_matrix(el).T
    mass = mc.volume[: mc.n_owned] * np.maximum(Bc.mean(axis=1), 0.0) if Bc.size else np.zeros(0)
    bound = Bc.max(axis=1) if Bc.size else np.zeros(0)
    uncertified = int(comm.allreduce(int(np.count_nonzero(Bc.min(axis=1) < 0)), op=MPI.SUM))
    orig_all = np.concatenate(comm.allgather(mc.original))
    mass_all = np.concatenate(comm.allgather(mass))
    ntotal = int(orig_all.max()) + 1 if orig_all.size else 0
    global_mass = np.zeros(ntotal)
    global_mass[orig_all] = mass_all
    cdf = np.cumsum(global_mass)
    total = cdf[-1] if cdf.size else 0.0
    if not total > 0:
        raise ValueError("the density to sample has no positive mass")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A4D]))
    gcell = np.searchsorted(cdf, rng.random(n) * total, side="right")
    gcell = np.minimum(gcell, ntotal - 1)
    local_of = np.full(ntotal, -1, dtype=np.int64)
    local_of[mc.original] = np.arange(mc.n_owned)
    lc = local_of[gcell]
    ids = np.flatnonzero(lc >= 0)
    lc = lc[ids].astype(np.int32)
    x = np.zeros((ids.size, mc.d))
    pending = np.ones(ids.size, dtype=bool)
    rounds = 0
    proposals = 0
    while True:
        # every rank draws the same numbers for all samples: partition-independent
        E = rng.exponential(size=(n, mc.d + 1))
        U = rng.random(n)
        rounds += 1
        idx = np.flatnonzero(pending)
        if idx.size:
            lam = E[ids[idx]]
            lam /= lam.sum(axis=1, keepdims=True)
            c = lc[idx]
            pv = np.einsum("nj,nj->n", el.tabulate(0, lam[:, 1:])[0, :, :, 0], vals[c])
            acc = U[ids[idx]] * bound[c] <= pv
            good = idx[acc]
            x[good] = np.einsum("nj,njd->nd", lam[acc], mc.vertices[c[acc]])
            pending[good] = False
        proposals += idx.size
        left = comm.allreduce(int(np.count_nonzero(pending)), op=MPI.SUM)
        if left == 0:
            break
        if rounds >= 10000:
            raise RuntimeError(f"rejection sampling did not finish ({left} samples left)")
    acceptance = n / max(comm.allreduce(proposals, op=MPI.SUM), 1)
    info = {"rounds": rounds, "uncertified_cells": uncertified, "acceptance": acceptance}
    return Samples(ids.astype(np.int64), x, lc, int(n), info)


def gather_samples(s: Samples, comm: MPI.Comm, root: int | None = 0) -> FloatArray | None:
    """The global ``(n, d)`` array in sample order, on ``root`` (all ranks if ``None``)."""
    parts = comm.allgather((s.ids, s.x)) if root is None else comm.gather((s.ids, s.x), root=root)
    if parts is None:
        return None
    d = s.x.shape[1]
    out = np.full((s.n, d), np.nan)
    for ids, x in parts:
        out[ids] = x
    return out
