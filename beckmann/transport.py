r"""Moving samples along :math:`v_t`: exact sampling, batched evaluation, RK4/RK45, distances.

A user draws samples :math:`X_0 \sim p_0`, integrates :math:`dX/dt = v_t(X)` from :math:`t = 0`
to :math:`1` with the velocity of a :class:`~beckmann.paths.PathFlux`, and should end with samples
of :math:`p_1` (MATH.md §2).

**Sampling** (:func:`sample_density`) is exact for the finite-element density. On each cell the
density, a polynomial of degree :math:`k`, is written in the Bernstein basis: its mass is the cell
volume times the mean Bernstein coefficient and its maximum is at most the largest coefficient.
Cells are drawn by inverse CDF of the masses, points uniformly in the cell and accepted against
that bound. Cells are ordered by their *original* (input) index and every random number is drawn
identically on every rank, so the same seed gives the same samples on any number of ranks.

**Evaluation** (:class:`FieldEvaluator`) keeps, per cell, the nodal values of :math:`p_0, p_1`
(DG\ :sub:`k`) and of each grid flux (DG\ :sub:`k-1`), the inverse affine map and the neighbour
across each facet. A sample remembers its cell: at the next stage its barycentric coordinates in
that cell are checked, points that left are walked to the neighbour across the most violated
facet, and only points that get lost are searched in the bounding-box tree. Basis functions are
tabulated with basix at all reference points at once.

**MPI**: each rank moves the samples in its owned cells. Stage points may fall in ghost cells
(evaluated locally) or beyond (gathered and evaluated by the rank that owns them); after each
step samples whose cell belongs to another rank migrate there. Points that leave the domain
(round-off, discretisation error of :math:`F\cdot n = 0`) are projected to the closest point of the
nearest cell, a deterministic rule, and counted.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from itertools import combinations_with_replacement
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, basix, fem, geometry
from beckmann.fields import Solution
from beckmann.paths import PathFlux, solve_path

__all__ = [
    "FieldEvaluator",
    "MeshCells",
    "Samples",
    "Transporter",
    "bernstein_matrix",
    "bin_masses",
    "energy_distance",
    "gather_samples",
    "histogram_tv",
    "register_cli",
    "sample_density",
    "sample_transport",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Barycentric tolerance for "inside a cell".
INSIDE_TOL = 1e-10


# --------------------------------------------------------------------------------------------
# Local cell geometry


class MeshCells:
    """Affine maps, volumes and facet neighbours of the rank's owned and ghost cells.

    Args:
        msh: An affine simplex mesh (geometric and topological dimension equal).
    """

    def __init__(self, msh: Any) -> None:
        tdim = msh.topology.dim
        d = msh.geometry.dim
        if d != tdim:
            raise ValueError(f"transport needs a mesh with gdim == tdim, got {d} and {tdim}")
        nodes = np.asarray(msh.geometry.dofmaps[0])
        if nodes.shape[1] != tdim + 1:
            raise ValueError("transport needs an affine simplex mesh (linear geometry)")
        imap = msh.topology.index_map(tdim)
        self.msh = msh
        self.comm = msh.comm
        self.d = d
        self.n_owned = int(imap.size_local)
        self.n_local = int(imap.size_local + imap.num_ghosts)
        self.ghost_owner = np.asarray(imap.owners, dtype=np.int64)
        nodes = nodes[: self.n_local]
        x = msh.geometry.x[:, :d]
        v = x[nodes]  # (cell, vertex, coord)
        self.vertices = v
        self.x0 = np.ascontiguousarray(v[:, 0])
        J = np.transpose(v[:, 1:] - v[:, :1], (0, 2, 1))  # J[:, :, j] = v_{j+1} - v_0
        self.K = np.linalg.inv(J) if self.n_local else np.zeros((0, d, d))
        self.volume = np.abs(np.linalg.det(J)) / math.factorial(d) if self.n_local else np.zeros(0)
        self.neighbors = _facet_neighbors(nodes)
        self.original = np.asarray(msh.topology.original_cell_index[: self.n_owned], dtype=np.int64)
        self.tree_local = geometry.bb_tree(
            msh, tdim, entities=np.arange(self.n_local, dtype=np.int32)
        )
        owned = np.arange(self.n_owned, dtype=np.int32)
        self.tree_owned = geometry.bb_tree(msh, tdim, entities=owned)
        self.midpoint_tree = geometry.create_midpoint_tree(msh, tdim, owned)
        self.walk_steps = 0
        self.tree_searches = 0

    def barycentric(self, x: FloatArray, cells: npt.NDArray[np.int32]) -> FloatArray:
        """Barycentric coordinates ``(n, d+1)`` of points ``x`` in ``cells``."""
        X = np.einsum("nij,nj->ni", self.K[cells], x - self.x0[cells])
        return np.concatenate([1.0 - X.sum(axis=1, keepdims=True), X], axis=1)

    def find_local(
        self, x: FloatArray, guess: npt.NDArray[np.int32], max_walk: int = 8
    ) -> tuple[npt.NDArray[np.int32], FloatArray]:
        """Cells (owned or ghost, ``-1`` if none) containing ``x``, starting from ``guess``.

        Returns:
            ``(cells, lam)``: the cells and the barycentric coordinates of the points in them.
        """
        n = x.shape[0]
        cells = np.array(guess, dtype=np.int32, copy=True)
        X = np.zeros((n, self.d + 1))
        todo = np.flatnonzero(cells >= 0)
        search = [np.flatnonzero(cells < 0)]
        for _ in range(max_walk + 1):
            if todo.size == 0:
                break
            lam = self.barycentric(x[todo], cells[todo])
            worst = lam.argmin(axis=1)
            inside = lam[np.arange(todo.size), worst] >= -INSIDE_TOL
            X[todo[inside]] = lam[inside]
            todo, worst = todo[~inside], worst[~inside]
            if todo.size == 0:
                break
            nxt = self.neighbors[cells[todo], worst]
            self.walk_steps += todo.size
            stuck = nxt < 0
            search.append(todo[stuck])
            todo = todo[~stuck]
            cells[todo] = nxt[~stuck]
        search.append(todo)
        lost = np.concatenate(search).astype(np.int64)
        if lost.size:
            self.tree_searches += lost.size
            found = _tree_search(self.msh, self.tree_local, x[lost])
            cells[lost] = found
            ok = found >= 0
            if ok.any():
                X[lost[ok]] = self.barycentric(x[lost[ok]], found[ok])
        return cells, X

    def closest_point(self, x: FloatArray) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int32]]:
        """For each point, the closest owned cell, the closest point in it and its distance."""
        n = x.shape[0]
        if n == 0 or self.n_owned == 0:
            return np.full(n, np.inf), np.zeros((n, self.d)), np.full(n, -1, dtype=np.int32)
        x3 = np.zeros((n, 3))
        x3[:, : self.d] = x
        cells = geometry.compute_closest_entity(
            self.tree_owned, self.midpoint_tree, self.msh, x3
        ).astype(np.int32)
        dist = np.full(n, np.inf)
        close = np.zeros((n, self.d))
        for i in range(n):
            c = cells[i]
            if c < 0:
                continue
            verts = np.zeros((self.d + 1, 3))
            verts[:, : self.d] = self.vertices[c]
            delta = geometry.compute_distance_gjk(verts, x3[i])
            q = x[i] + delta[: self.d]
            # nudge onto the closed cell so the point locates: clip barycentric coordinates
            lam = np.clip(self.barycentric(q[None, :], np.array([c]))[0], 0.0, None)
            lam /= lam.sum()
            close[i] = lam @ self.vertices[c]
            dist[i] = float(np.linalg.norm(delta))
        return dist, close, cells


def _facet_neighbors(nodes: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """``nb[c, i]``: the cell across the facet opposite local vertex ``i`` of ``c``, or -1."""
    n, nv = nodes.shape
    nb = np.full((n, nv), -1, dtype=np.int32)
    if n == 0:
        return nb
    keys, owner, local = [], [], []
    for i in range(nv):
        keys.append(np.sort(np.delete(nodes, i, axis=1), axis=1))
        owner.append(np.arange(n))
        local.append(np.full(n, i))
    k = np.concatenate(keys)
    c = np.concatenate(owner)
    li = np.concatenate(local)
    order = np.lexsort(k.T[::-1])
    k, c, li = k[order], c[order], li[order]
    same = np.all(k[1:] == k[:-1], axis=1)
    a = np.flatnonzero(same)
    nb[c[a], li[a]] = c[a + 1]
    nb[c[a + 1], li[a + 1]] = c[a]
    return nb


def _tree_search(msh: Any, tree: Any, x: FloatArray) -> npt.NDArray[np.int32]:
    n = x.shape[0]
    out = np.full(n, -1, dtype=np.int32)
    if n == 0:
        return out
    x3 = np.zeros((n, 3))
    x3[:, : x.shape[1]] = x
    cand = geometry.compute_collisions_points(tree, x3)
    coll = geometry.compute_colliding_cells(msh, cand, x3)
    counts = np.diff(coll.offsets)
    has = counts > 0
    out[has] = coll.array[coll.offsets[:-1][has]]
    return out


# --------------------------------------------------------------------------------------------
# Bernstein form of a Lagrange element (exact cell masses and bounds)


def _multi_indices(k: int, d: int) -> list[tuple[int, ...]]:
    return list(combinations_with_replacement(range(d + 1), k))


def _monomials(lam: FloatArray, k: int) -> FloatArray:
    """``∏_i λ_i^{α_i}`` for all ``|α| = k`` (order of :func:`_multi_indices`), ``(n, nα)``."""
    combos = _multi_indices(k, lam.shape[1] - 1)
    out = np.empty((lam.shape[0], len(combos)))
    for a, combo in enumerate(combos):
        if not combo:
            out[:, a] = 1.0
            continue
        col = lam[:, combo[0]].copy()
        for i in combo[1:]:
            col *= lam[:, i]
        out[:, a] = col
    return out


def _multinomials(k: int, d: int) -> FloatArray:
    out = []
    for combo in _multi_indices(k, d):
        alpha = np.bincount(np.array(combo, dtype=np.int64), minlength=d + 1)
        out.append(math.factorial(k) / np.prod([math.factorial(int(a)) for a in alpha]))
    return np.array(out, dtype=np.float64)


def bernstein_matrix(element: Any) -> FloatArray:
    """Matrix ``M`` with Bernstein coefficients ``b = M @ nodal_values`` for a basix element.

    The Lagrange element's nodal values are ``B(points) b``; ``M`` is that matrix's inverse. On a
    simplex ``B_α ≥ 0`` and ``Σ B_α = 1``, so ``max b`` bounds the polynomial and ``mean b`` is its
    cell average.
    """
    pts = np.asarray(element.points, dtype=np.float64)
    k = int(element.degree)
    d = pts.shape[1]
    lam = np.concatenate([1.0 - pts.sum(axis=1, keepdims=True), pts], axis=1)
    B = _monomials(lam, k) * _multinomials(k, d)[None, :]
    return np.linalg.inv(B)


def _dg_values(u: fem.Function, degree: int, cells: MeshCells) -> tuple[FloatArray, Any]:
    """Nodal values ``(n_local, ndofs[, bs])`` of ``u`` in DG_degree, and its basix element."""
    msh = u.function_space.mesh
    shape = u.ufl_shape
    W = fem.functionspace(msh, ("DG", degree, shape) if shape else ("DG", degree))
    w = fem.Function(W)
    w.interpolate(u)
    w.x.scatter_forward()
    if W.element.needs_dof_transformations:  # pragma: no cover - DG Lagrange never does
        raise RuntimeError("DG element with dof transformations is not supported")
    dofs = W.dofmap.list[: cells.n_local]
    bs = W.dofmap.bs
    arr = w.x.array.reshape(-1, bs)[dofs]
    if not shape:
        arr = arr[..., 0]
    return np.ascontiguousarray(arr), W.ufl_element().basix_element


# --------------------------------------------------------------------------------------------
# Fast evaluation of the velocity


class FieldEvaluator:
    """Batched evaluation of ``v_t = F_t / p_t`` of a :class:`PathFlux` at located points.

    Everything a point needs is gathered per cell once: nodal values of ``p0, p1`` (DG_k) and of
    each grid flux (DG_{k-1}); the basis is tabulated with basix at all points at once.
    """

    def __init__(self, pf: PathFlux, cells: MeshCells | None = None) -> None:
        sol = pf.sol
        self.pf = pf
        self.path = pf.path
        self.cells = cells if cells is not None else MeshCells(sol.msh)
        k = sol.degree
        self.P0, self.el_p = _dg_values(sol.p0, k, self.cells)
        self.P1, _ = _dg_values(sol.p1, k, self.cells)
        self.F = []
        for F in pf.fluxes:
            arr, self.el_f = _dg_values(F, k - 1, self.cells)
            self.F.append(arr)
        d = self.cells.d
        self.k = k
        # scaled Bernstein coefficients: value = Σ_α c_α ∏ λ^α (see _monomials)
        Mp = bernstein_matrix(self.el_p) * _multinomials(k, d)[:, None]
        Mf = bernstein_matrix(self.el_f) * _multinomials(k - 1, d)[:, None]
        self.Cp = np.ascontiguousarray(np.stack([self.P0 @ Mp.T, self.P1 @ Mp.T], axis=2))
        self.Cf = [np.ascontiguousarray(np.einsum("ij,cjd->cid", Mf, F)) for F in self.F]
        # one record per cell (geometry, densities, the flux of a one-solve path): a single
        # gather per stage instead of several
        mc = self.cells
        parts = [mc.K.reshape(mc.n_local, -1), mc.x0, self.Cp.reshape(mc.n_local, -1)]
        if len(self.Cf) == 1:
            parts.append(self.Cf[0].reshape(mc.n_local, -1))
        self.recT = np.ascontiguousarray(np.concatenate(parts, axis=1).T)

    def fast_values(
        self, t: float, x: FloatArray, cells: npt.NDArray[np.int32]
    ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Velocity at ``x`` assuming each point is still in its cell ``cells`` (all >= 0).

        Returns the velocity and the mask of points that really are inside their cell; the
        others' values are garbage and must be recomputed after a search. Local.
        """
        d = self.cells.d
        n = x.shape[0]
        # structure of arrays: rows of recT are per-cell quantities, gathered contiguously
        R = np.take(self.recT, cells, axis=1)
        o = d * d
        y = [x[:, j] - R[o + j] for j in range(d)]
        lam = np.empty((d + 1, n))
        for i in range(d):
            acc = R[i * d] * y[0]
            for j in range(1, d):
                acc += R[i * d + j] * y[j]
            lam[i + 1] = acc
        o += d
        lam[0] = 1.0 - lam[1:].sum(axis=0)
        inside = lam.min(axis=0) >= -INSIDE_TOL
        nP = self.Cp.shape[1]
        phi = _monomials(lam.T, self.k).T
        q0 = phi[0] * R[o]
        q1 = phi[0] * R[o + 1]
        for j in range(1, nP):
            q0 += phi[j] * R[o + 2 * j]
            q1 += phi[j] * R[o + 2 * j + 1]
        o += 2 * nP
        psi = _monomials(lam.T, self.k - 1).T
        F = np.zeros((n, d))
        if len(self.Cf) == 1:
            nF = psi.shape[0]
            for c in range(d):
                acc = psi[0] * R[o + c]
                for j in range(1, nF):
                    acc += psi[j] * R[o + j * d + c]
                F[:, c] = acc
        else:
            lamr = np.ascontiguousarray(lam.T)
            psir = _monomials(lamr, self.k - 1)
            for j, w in self.pf.weights(t):
                if w != 0.0:
                    F += w * np.einsum("nj,njd->nd", psir, self.Cf[j][cells])
        p = self.path.density(t, q0, q1)
        return F / p[:, None], inside

    def values(
        self, t: float, cells: npt.NDArray[np.int32], lam: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Velocity ``(n, d)`` and density ``p_t`` ``(n,)`` at barycentric ``lam`` in ``cells``.

        Local (no communication).

        The polynomials are evaluated in Bernstein form, products of barycentric coordinates,
        which for low degree is cheaper than a general tabulation.
        """
        n = lam.shape[0]
        d = self.cells.d
        if n == 0:
            return np.zeros((0, d)), np.zeros(0)
        phi = _monomials(lam, self.k)
        q = np.einsum("nj,njs->ns", phi, self.Cp[cells])
        q0, q1 = q[:, 0], q[:, 1]
        psi = _monomials(lam, self.k - 1)
        F = np.zeros((n, d))
        for j, w in self.pf.weights(t):
            if w != 0.0:
                F += w * np.einsum("nj,njd->nd", psi, self.Cf[j][cells])
        p = self.path.density(t, q0, q1)
        return F / p[:, None], p

    def path_energy(self, substeps: int = 8) -> dict[str, float]:
        """Kinetic energy ``∫∫ |F_t|²/p_t dx dt`` and ``max |v_t|`` of the path; collective.

        Space: a degree ``2k + 2`` rule on each owned cell (the maximum also looks at the DG_k
        nodes). Time: the linear path exactly (``∫_0^1 dt/p_t`` is the logarithmic mean of
        ``1/p0`` and ``1/p1``; ``|v_t|`` peaks at ``t = 0`` or ``1``), other paths by Simpson's
        rule with ``substeps`` (even) intervals in each interval of the solve grid.
        """
        from beckmann.paths import TINY, LinearPath

        mc = self.cells
        d = mc.d
        n = mc.n_owned
        k = int(self.el_p.degree)
        ct = basix.CellType.triangle if d == 2 else basix.CellType.tetrahedron
        qp, qw = basix.make_quadrature(ct, 2 * k + 2)
        pts = np.concatenate([qp, np.asarray(self.el_p.points)])
        wq = np.concatenate([qw, np.zeros(len(self.el_p.points))])
        phi = self.el_p.tabulate(0, pts)[0, :, :, 0]
        psi = self.el_f.tabulate(0, pts)[0, :, :, 0]
        q0 = self.P0[:n] @ phi.T  # (cell, point)
        q1 = self.P1[:n] @ phi.T
        Fq = [np.einsum("qj,cjd->cqd", psi, F[:n]) for F in self.F]
        dx = wq[None, :] * (mc.volume[:n, None] * math.factorial(d))
        comm = mc.comm
        if isinstance(self.path, LinearPath):
            a, b = np.maximum(q0, TINY), np.maximum(q1, TINY)
            with np.errstate(divide="ignore", invalid="ignore"):
                lm = np.where(
                    np.abs(b - a) < 1e-9 * (a + b), 2.0 / (a + b), (np.log(b) - np.log(a)) / (b - a)
                )
            F2 = (Fq[0] ** 2).sum(axis=2)
            ke = float((F2 * lm * dx).sum())
            vmax = float(np.sqrt(F2 / np.minimum(a, b) ** 2).max()) if F2.size else 0.0
        else:
            m = substeps + substeps % 2
            grid = self.pf.times
            ke, vmax = 0.0, 0.0
            for a_t, b_t in zip(grid[:-1], grid[1:], strict=True):
                ts = np.linspace(a_t, b_t, m + 1)
                w = np.ones(m + 1)
                w[1:-1:2], w[2:-1:2] = 4.0, 2.0
                w *= (b_t - a_t) / (3.0 * m)
                for t, wt in zip(ts, w, strict=True):
                    F = sum(wj * Fq[j] for j, wj in self.pf.weights(float(t)))
                    p = self.path.density(float(t), q0, q1)
                    F2 = (F**2).sum(axis=2)
                    ke += wt * float((F2 / p * dx).sum())
                    if F2.size:
                        vmax = max(vmax, float(np.sqrt(F2 / p**2).max()))
        return {
            "kinetic_energy": float(comm.allreduce(ke, op=MPI.SUM)),
            "max_speed": float(comm.allreduce(vmax, op=MPI.MAX)),
        }


# --------------------------------------------------------------------------------------------
# Samples and exact sampling


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
    vals, el = _dg_values(p, k, mc)
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


# --------------------------------------------------------------------------------------------
# Time integration


def _sorted_by_cell(s: Samples) -> Samples:
    """Order the local samples by cell: gathers of per-cell data then touch memory in order."""
    order = np.argsort(s.cells, kind="stable")
    return Samples(s.ids[order], s.x[order], s.cells[order], s.n, s.info)


# Dormand-Prince 5(4) tableau
_DP_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0])
_DP_A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
_DP_B5 = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0])
_DP_B4 = np.array([5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40])


class Transporter:
    """Integrates ``dX/dt = v_t(X)`` for a distributed :class:`Samples` set; collective.

    Args:
        evaluator: The velocity evaluator.
    """

    def __init__(self, evaluator: FieldEvaluator) -> None:
        self.ev = evaluator
        self.mc = evaluator.cells
        self.comm = self.mc.comm
        self.stats = {
            "projected": 0,
            "stage_outside": 0,
            "remote_evaluations": 0,
            "migrated": 0,
            "evaluations": 0,
            "rejected_steps": 0,
        }

    # -- evaluation ----------------------------------------------------------------------
    def velocity(
        self, t: float, x: FloatArray, guess: npt.NDArray[np.int32]
    ) -> tuple[FloatArray, npt.NDArray[np.int32]]:
        """``v_t`` at local points (with cell guesses); collective (for points off this rank)."""
        known = guess >= 0
        if known.all():
            v, inside = self.ev.fast_values(t, x, guess)
        else:
            v, inside = np.zeros_like(x), np.zeros(x.shape[0], dtype=bool)
            if known.any():
                v[known], inside[known] = self.ev.fast_values(t, x[known], guess[known])
        cells = np.array(guess, dtype=np.int32, copy=True)
        redo = np.flatnonzero(~inside)
        if redo.size:
            c2, lam2 = self.mc.find_local(x[redo], guess[redo])
            cells[redo] = c2
            ok = c2 >= 0
            v[redo[ok]] = self.ev.values(t, c2[ok], lam2[ok])[0]
        here = cells >= 0
        lost = np.flatnonzero(~here)
        self.stats["evaluations"] += x.shape[0]
        if self.comm.allreduce(lost.size, op=MPI.SUM):
            vr, _, _, outside = self._remote(t, x[lost])
            v[lost] = vr
            self.stats["remote_evaluations"] += lost.size
            self.stats["stage_outside"] += int(outside.sum())
        return v, cells

    def _remote(
        self, t: float | None, pts: FloatArray
    ) -> tuple[FloatArray, FloatArray, IntArray, npt.NDArray[np.bool_]]:
        """Locate (and evaluate at ``t``) points lost on their rank; collective.

        Returns ``(v, x, owner, outside)`` for this rank's points: velocity (zeros if ``t`` is
        None), the position (projected when outside), the owning rank and the outside mask.
        """
        comm = self.comm
        d = self.mc.d
        counts = comm.allgather(pts.shape[0])
        allpts = np.concatenate(comm.allgather(pts)) if sum(counts) else np.zeros((0, d))
        m = allpts.shape[0]
        found = _tree_search(self.mc.msh, self.mc.tree_owned, allpts)
        size = comm.size
        mine = np.where(found >= 0, comm.rank, size).astype(np.int64)
        owner = np.empty_like(mine)
        comm.Allreduce(mine, owner, op=MPI.MIN)
        outside = owner == size
        xnew = allpts.copy()
        if outside.any():
            oi = np.flatnonzero(outside)
            dist, close, ccell = self.mc.closest_point(allpts[oi])
            best = np.empty_like(dist)
            comm.Allreduce(dist, best, op=MPI.MIN)
            cand = np.where(dist == best, comm.rank, size).astype(np.int64)
            win = np.empty_like(cand)
            comm.Allreduce(cand, win, op=MPI.MIN)
            owner[oi] = win
            take = win == comm.rank
            xo = np.where(take[:, None], close, 0.0)
            xs = np.empty_like(xo)
            comm.Allreduce(xo, xs, op=MPI.SUM)
            xnew[oi] = xs
            found[oi[take]] = ccell[take]
        vals = np.zeros((m, d))
        me = np.flatnonzero(owner == comm.rank)
        if t is not None and me.size:
            c = found[me]
            vals[me] = self.ev.values(t, c, self.mc.barycentric(xnew[me], c))[0]
        if t is not None:
            vsum = np.empty_like(vals)
            comm.Allreduce(vals, vsum, op=MPI.SUM)
            vals = vsum
        start = sum(counts[: comm.rank])
        sl = slice(start, start + pts.shape[0])
        return vals[sl], xnew[sl], owner[sl], outside[sl]

    # -- relocation and migration --------------------------------------------------------
    def relocate(self, s: Samples) -> Samples:
        """Locate samples after a step, project escaped ones, migrate to owners; collective."""
        comm = self.comm
        cells, _ = self.mc.find_local(s.x, s.cells)
        dest = np.full(s.ids.size, comm.rank, dtype=np.int64)
        ghost = cells >= self.mc.n_owned
        dest[ghost] = self.mc.ghost_owner[cells[ghost] - self.mc.n_owned]
        lost = np.flatnonzero(cells < 0)
        if comm.allreduce(lost.size, op=MPI.SUM):
            _, xn, owner, outside = self._remote(None, s.x[lost])
            s.x[lost] = xn
            dest[lost] = owner
            self.stats["projected"] += int(outside.sum())
        s.cells = cells
        if comm.size == 1:
            if lost.size:
                s.cells[lost] = -1
            return _sorted_by_cell(s)
        move = dest != comm.rank
        nmove = comm.allreduce(int(move.sum()), op=MPI.SUM)
        if nmove == 0:
            return _sorted_by_cell(s)
        self.stats["migrated"] += int(move.sum())
        send = [
            (s.ids[dest == r], s.x[dest == r]) if r != comm.rank else None for r in range(comm.size)
        ]
        recv = comm.alltoall(send)
        keep = ~move
        ids = [s.ids[keep]] + [r[0] for r in recv if r is not None]
        xs = [s.x[keep]] + [r[1] for r in recv if r is not None]
        cl = [cells[keep]] + [np.full(r[0].size, -1, np.int32) for r in recv if r is not None]
        out = Samples(np.concatenate(ids), np.concatenate(xs), np.concatenate(cl), s.n, s.info)
        return _sorted_by_cell(out)

    # -- integrators ---------------------------------------------------------------------
    def rk4(
        self,
        s: Samples,
        t0: float = 0.0,
        t1: float = 1.0,
        steps: int = 50,
        callback: Any = None,
    ) -> Samples:
        """Classical RK4 with ``steps`` equal steps from ``t0`` to ``t1``; collective.

        ``callback(step, t, samples)`` (collective) is called after every step.
        """
        if not isinstance(steps, int | np.integer) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        h = (t1 - t0) / steps
        s = self.relocate(s)
        for i in range(steps):
            t = t0 + i * h
            x, c = s.x, s.cells
            k1, c = self.velocity(t, x, c)
            k2, _ = self.velocity(t + h / 2, x + h / 2 * k1, c)
            k3, _ = self.velocity(t + h / 2, x + h / 2 * k2, c)
            k4, _ = self.velocity(t + h, x + h * k3, c)
            s.x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            s.cells = c
            s = self.relocate(s)
            if callback is not None:
                callback(i + 1, t0 + (i + 1) * h, s)
        return s

    def rk45(
        self,
        s: Samples,
        t0: float = 0.0,
        t1: float = 1.0,
        rtol: float = 1e-5,
        h0: float = 0.05,
        max_steps: int = 100000,
    ) -> Samples:
        """Dormand–Prince 5(4) with one global step size; collective.

        The error estimate is the largest ``|x5 − x4|`` over all samples on all ranks divided by
        ``rtol`` times the domain diameter, so every rank takes the same steps.
        """
        if not rtol > 0:
            raise ValueError(f"rtol must be positive, got {rtol!r}")
        d = self.mc.d
        lo = np.min(self.mc.x0, axis=0, initial=np.inf) if self.mc.n_local else np.full(d, np.inf)
        hi = np.max(self.mc.x0, axis=0, initial=-np.inf) if self.mc.n_local else -np.full(d, np.inf)
        glo, ghi = np.empty(d), np.empty(d)
        self.comm.Allreduce(np.ascontiguousarray(lo, dtype=np.float64), glo, op=MPI.MIN)
        self.comm.Allreduce(np.ascontiguousarray(hi, dtype=np.float64), ghi, op=MPI.MAX)
        diam = float(np.linalg.norm(ghi - glo))
        tol = rtol * max(diam, 1e-300)
        sign = 1.0 if t1 >= t0 else -1.0
        t = t0
        h = sign * min(abs(h0), abs(t1 - t0))
        s = self.relocate(s)
        steps = 0
        while sign * (t1 - t) > 1e-14:
            h = sign * min(abs(h), abs(t1 - t))
            x, c = s.x, s.cells
            k = []
            for j in range(7):
                xs = x + h * sum((a * kk for a, kk in zip(_DP_A[j], k, strict=False)), 0.0 * x)
                kv, cj = self.velocity(t + _DP_C[j] * h, xs, c)
                if j == 0:
                    c = cj
                k.append(kv)
            x5 = x + h * sum(b * kk for b, kk in zip(_DP_B5, k, strict=True))
            x4 = x + h * sum(b * kk for b, kk in zip(_DP_B4, k, strict=True))
            local = float(np.abs(x5 - x4).max()) if x.size else 0.0
            err = self.comm.allreduce(local, op=MPI.MAX) / tol
            steps += 1
            if steps > max_steps:
                raise RuntimeError(f"RK45 did not reach t = {t1} in {max_steps} steps")
            if err <= 1.0:
                t += h
                s.x, s.cells = x5, c
                s = self.relocate(s)
            else:
                self.stats["rejected_steps"] += 1
            h *= min(5.0, max(0.2, 0.9 * (max(err, 1e-10)) ** -0.2))
        self.stats["steps"] = steps
        return s


# --------------------------------------------------------------------------------------------
# Distances


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
    vals, el = _dg_values(p, k, mc)
    d = mc.d
    ct = basix.CellType.triangle if d == 2 else basix.CellType.tetrahedron
    qp, qw = basix.make_quadrature(ct, 10)
    phi = el.tabulate(0, qp)[0, :, :, 0]
    n = mc.n_owned
    pv = vals[:n] @ phi.T  # (cell, qp)
    w = pv * qw[None, :] * (mc.volume[:n, None] * math.factorial(d))
    lam = np.concatenate([1.0 - qp.sum(axis=1, keepdims=True), qp], axis=1)
    xq = np.einsum("qj,cjd->cqd", lam, mc.vertices[:n])
    hist = _bin_counts(xq.reshape(-1, d), w.ravel(), lo, hi, bins)
    total = np.empty_like(hist)
    comm.Allreduce(hist, total, op=MPI.SUM)
    return total / total.sum()


def _bin_counts(
    x: FloatArray, w: FloatArray | None, lo: FloatArray, hi: FloatArray, bins: int
) -> FloatArray:
    d = x.shape[1]
    idx = np.floor((x - lo) / (hi - lo) * bins).astype(np.int64)
    idx = np.clip(idx, 0, bins - 1)
    flat = np.ravel_multi_index(tuple(idx.T), (bins,) * d)
    return np.bincount(flat, weights=w, minlength=bins**d).astype(np.float64)


def histogram_tv(x: FloatArray, masses: FloatArray, lo: FloatArray, hi: FloatArray) -> float:
    """Total variation ``½ Σ |n_b/N − P_b|`` between samples and bin masses ``P``."""
    bins = round(masses.size ** (1.0 / x.shape[1]))
    counts = _bin_counts(x, None, lo, hi, bins)
    return float(0.5 * np.abs(counts / x.shape[0] - masses).sum())


def _mean_dist(a: FloatArray, b: FloatArray, chunk: int = 1024) -> float:
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
    yy = _mean_dist(y, y) if yy is None else yy
    return float(2.0 * _mean_dist(x, y) - _mean_dist(x, x) - yy)


# --------------------------------------------------------------------------------------------
# The whole experiment


def _solver_kwargs(sol: Solution) -> dict[str, Any]:
    cfg = sol.info.get("config") or {}
    s = cfg.get("solver", {}) if isinstance(cfg, dict) else {}
    out: dict[str, Any] = {}
    for key in ("method", "rtol", "petsc_options"):
        if key in s:
            out[key] = s[key]
    return out


def sample_transport(
    sol: Solution,
    n: int,
    *,
    path: str = "linear",
    steps: int = 50,
    seed: int = 0,
    method: str = "rk4",
    rtol: float = 1e-5,
    n_times: int = 21,
    reverse: bool = False,
    save_every: int = 0,
    bins: int | None = None,
    energy_points: int = 3000,
    path_report: bool = True,
    velocity: Any = None,
) -> dict[str, Any]:
    """Sample the source, transport to the target and measure the result; collective.

    Args:
        sol: A solved run.
        n: Number of samples.
        path: ``linear`` or ``fisher-rao``.
        steps: RK4 steps (also the number of saved intervals for ``save_every``).
        seed: Seed; the samples do not depend on the number of ranks.
        method: ``rk4`` (fixed steps) or ``rk45`` (adaptive, global step).
        rtol: RK45 tolerance relative to the domain diameter.
        n_times: Time grid of a time-dependent path.
        reverse: Sample the target and integrate from ``t = 1`` back to ``0``.
        save_every: Keep the samples every this many RK4 steps (0: only start and end).
        bins: Histogram bins per axis (default about 50 samples per bin).
        energy_points: Subsample size for the O(m²) energy distance.
        path_report: Also compute the path's kinetic energy and maximum speed.
        velocity: ``velocity(cells)`` returns an evaluator used instead of the FE velocity
            (e.g. :class:`beckmann.surrogate.NetworkVelocity`); linear path only, no path report.

    Returns:
        ``{"samples": (n, d) array on rank 0 else None, "start": ..., "trajectory": list,
        "report": dict}``.
    """
    if method not in ("rk4", "rk45"):
        raise ValueError(f"method must be 'rk4' or 'rk45', got {method!r}")
    if not isinstance(save_every, int) or save_every < 0:
        raise ValueError(f"save_every must be a non-negative integer, got {save_every!r}")
    if not isinstance(energy_points, int) or energy_points < 2:
        raise ValueError(f"energy_points must be an integer >= 2, got {energy_points!r}")
    comm = sol.comm
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    if velocity is not None and path != "linear":
        raise ValueError(f"a given velocity (--model) follows the linear path, not {path!r}")
    pf = None
    if velocity is None:
        pf = solve_path(sol, path, n_times=n_times, solver=_solver_kwargs(sol))
    mc = MeshCells(sol.msh)
    ev = FieldEvaluator(pf, mc) if pf is not None else velocity(mc)
    timings["path"] = time.perf_counter() - t_start
    src, dst = (sol.p1, sol.p0) if reverse else (sol.p0, sol.p1)
    t0, t1 = (1.0, 0.0) if reverse else (0.0, 1.0)
    tic = time.perf_counter()
    s = sample_density(src, n, seed, mc)
    timings["sample"] = time.perf_counter() - tic
    start = gather_samples(s, comm, root=None)
    traj: list[FloatArray] = []
    traj_t: list[float] = []
    if save_every and comm.rank == 0:
        traj.append(start.copy())
        traj_t.append(t0)

    def keep(step: int, t: float, cur: Samples) -> None:
        if save_every and (step % save_every == 0 or step == steps):
            g = gather_samples(cur, comm)
            if comm.rank == 0:
                traj.append(g)
                traj_t.append(t)

    tr = Transporter(ev)
    tic = time.perf_counter()
    if method == "rk4":
        s = tr.rk4(s, t0, t1, steps, callback=keep if save_every else None)
    else:
        s = tr.rk45(s, t0, t1, rtol=rtol)
    timings["transport"] = time.perf_counter() - tic
    final = gather_samples(s, comm, root=None)
    # distances: against the bin masses of the target and an exact reference sample set
    tic = time.perf_counter()
    d = mc.d
    lo_l = mc.x0.min(axis=0) if mc.n_local else np.full(d, np.inf)
    hi_l = np.max(mc.vertices.reshape(-1, d), axis=0) if mc.n_local else np.full(d, -np.inf)
    lo_l = np.minimum(lo_l, np.min(mc.vertices.reshape(-1, d), axis=0, initial=np.inf))
    lo = np.empty(d)
    hi = np.empty(d)
    comm.Allreduce(lo_l, lo, op=MPI.MIN)
    comm.Allreduce(hi_l, hi, op=MPI.MAX)
    span = hi - lo
    lo, hi = lo - 1e-9 * span, hi + 1e-9 * span
    nb = bins if bins is not None else max(4, round((n / 50.0) ** (1.0 / d)))
    masses = bin_masses(dst, lo, hi, nb, mc)
    exact = gather_samples(sample_density(dst, n, seed + 1_000_003, mc), comm, root=None)
    m = min(energy_points, n)
    ref = gather_samples(sample_density(dst, m, seed + 2_000_003, mc), comm, root=None)
    report: dict[str, Any] = {}
    if comm.rank == 0:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xE7E7]))
        sub = rng.choice(n, size=m, replace=False) if m < n else np.arange(n)
        dist: dict[str, dict[str, float]] = {}
        yy = _mean_dist(ref, ref)
        for name, pts in (("transported", final), ("exact", exact), ("untransported", start)):
            dist[name] = {
                "tv_histogram": histogram_tv(pts, masses, lo, hi),
                "energy": energy_distance(pts[sub], ref, yy),
            }
        report["distances"] = dist
    report = comm.bcast(report, root=0)
    timings["distances"] = time.perf_counter() - tic
    if path_report and pf is not None:
        tic = time.perf_counter()
        report["path_energy"] = ev.path_energy()
        timings["path_report"] = time.perf_counter() - tic
    stats = {k: int(comm.allreduce(v, op=MPI.SUM)) for k, v in tr.stats.items()}
    if "steps" in tr.stats:
        stats["steps"] = int(tr.stats["steps"])
    report.update(
        {
            "n": int(n),
            "path": path,
            "method": method,
            "steps": int(steps) if method == "rk4" else stats.get("steps"),
            "seed": int(seed),
            "reverse": bool(reverse),
            "ranks": comm.size,
            "grid_times": int(len(pf.times)) if pf is not None else 0,
            "bins_per_axis": int(nb),
            "energy_points": int(m),
            "sampling": s.info,
            "projected": stats["projected"],
            "stage_outside": stats["stage_outside"],
            "stats": stats,
            "timings": {k: float(comm.allreduce(v, op=MPI.MAX)) for k, v in timings.items()},
        }
    )
    return {
        "samples": final if comm.rank == 0 else None,
        "start": start if comm.rank == 0 else None,
        "trajectory": traj,
        "trajectory_times": traj_t,
        "report": report,
    }


# --------------------------------------------------------------------------------------------
# CLI


def register_cli(subparsers: Any) -> None:
    """Add ``beckmann sample`` and ``beckmann paths``."""
    p = subparsers.add_parser("sample", help="transport samples of the source along v_t")
    p.add_argument("dir", help="run folder (from `beckmann solve --out DIR`)")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--path", default="linear", choices=("linear", "fisher-rao"))
    p.add_argument("--steps", type=int, default=50, help="RK4 steps (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed (rank-count independent)")
    p.add_argument("--method", default="rk4", choices=("rk4", "rk45"))
    p.add_argument("--rtol", type=float, default=1e-5, help="RK45 tolerance (x diameter)")
    p.add_argument("--grid", type=int, default=21, help="time grid of the Fisher-Rao path")
    p.add_argument("--reverse", action="store_true", help="target -> source (t from 1 to 0)")
    p.add_argument("--out", required=True, help="final samples (.npy)")
    p.add_argument("--json-out", help="write the JSON report here")
    p.add_argument(
        "--save-every",
        type=int,
        default=0,
        metavar="K",
        help="also write OUT-stem.traj.npy with the samples every K steps",
    )
    p.add_argument("--bins", type=int, help="histogram bins per axis for the TV distance")
    p.add_argument("--energy-points", type=int, default=3000, help="energy distance subsample")
    p.add_argument(
        "--model", help="velocity network v(x, t[, θ]) (from `beckmann fit`) instead of the FE v_t"
    )
    p.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="θ input of --model (repeatable); with a sweep store as DIR, also p0, p1 at θ",
    )  # fmt: skip
    p.set_defaults(func=_cmd_sample)

    p = subparsers.add_parser("paths", help="kinetic energy and max speed of each path")
    p.add_argument("dir", help="run folder")
    p.add_argument("--grid", type=int, default=21, help="time grid of the Fisher-Rao path")
    p.add_argument("--json-out", help="write the JSON here")
    p.set_defaults(func=_cmd_paths)


def _cmd_sample(args: argparse.Namespace, comm: Any) -> int:
    from beckmann import io

    if args.n is None or args.n < 1:
        raise ValueError(f"--n must be a positive integer, got {args.n!r}")
    if args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps!r}")
    if args.save_every < 0:
        raise ValueError(f"--save-every must be >= 0, got {args.save_every!r}")
    if args.bins is not None and args.bins < 1:
        raise ValueError(f"--bins must be a positive integer, got {args.bins!r}")
    out = Path(args.out)
    if out.suffix != ".npy":
        raise ValueError(f"--out must end in .npy, got {str(out)!r}")
    velocity = None
    if getattr(args, "model", None):
        from beckmann.surrogate import model_velocity

        sol, velocity, _ = model_velocity(args.dir, args.model, args.param, comm)
    elif getattr(args, "param", None):
        raise ValueError("--param needs --model")
    else:
        sol = io.load_run(args.dir, comm)
    res = sample_transport(
        sol,
        args.n,
        path=args.path,
        steps=args.steps,
        seed=args.seed,
        method=args.method,
        rtol=args.rtol,
        n_times=args.grid,
        reverse=args.reverse,
        save_every=args.save_every,
        bins=args.bins,
        energy_points=args.energy_points,
        velocity=velocity,
    )
    report = res["report"]
    if velocity is not None:
        report["model"] = str(args.model)
    report["out"] = str(out)
    if comm.rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, res["samples"])
        if args.save_every:
            tpath = out.with_name(out.stem + ".traj.npy")
            np.save(tpath, np.stack(res["trajectory"]))
            report["trajectory"] = {"path": str(tpath), "times": res["trajectory_times"]}
    text = json.dumps(io._jsonable(report))
    if args.json_out:
        io.write_json(Path(args.json_out), report, comm)
    if comm.rank == 0:
        brief = {
            "n": report["n"],
            "path": report["path"],
            "distances": report["distances"],
            "projected": report["projected"],
            "seconds": round(sum(report["timings"].values()), 3),
        }
        print(json.dumps(brief) if args.json_out else text)
    return 0


def _cmd_paths(args: argparse.Namespace, comm: Any) -> int:
    from beckmann import io
    from beckmann.paths import compare_paths

    sol = io.load_run(args.dir, comm)
    res = compare_paths(sol, n_times=args.grid, solver=_solver_kwargs(sol))
    if args.json_out:
        io.write_json(Path(args.json_out), res, comm)
    if comm.rank == 0:
        print(json.dumps(res))
    return 0
