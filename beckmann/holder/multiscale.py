"""The tree method: multi-scale branch and bound over a 2^d-tree, exact up to rounding.

About ``n log n`` on fields that are not adversarial. The points are gathered on every rank
(``O(n)`` memory) and sorted along a Morton curve into a ``2^d``-tree of cells; every cell knows
its points' bounding box, the range of each value component and a few representative points
(where each of the first two components is largest and smallest). For one quantity (``ω`` at one
scale, or the seminorm) candidate pairs of cells are refined level by level: a pair whose
distance bounds fall outside the window is dropped, representatives give a lower bound (a real
pair of points), the cells' ranges an upper bound, and a pair whose upper bound does not beat
the best lower bound found so far is dropped; pairs of leaf cells left at the end are compared
point by point. For scalar fields and ``ω``, a pair of cells that lies entirely inside the window
is resolved exactly by its ranges. Under MPI the surviving cell pairs are split over the ranks
once there are enough of them, and the lower bound is shared after every level. The worst case is
``n²`` (e.g. noise); ``scripts/bench_holder.py`` measures the typical one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann.holder.exact import CHUNK_PAIRS, ratio

__all__ = ["Tree", "branch_and_bound", "gather", "solve_spd", "tree_modulus"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Up to this many candidate cell pairs, every pair of representatives gives a lower bound;
#: beyond, only a component's largest value in one cell against its smallest in the other. 0:
#: the latter always. Since the cells' affine bounds prune, the extra pairs cost more than the
#: better bounds save (P3, n = 128, ω at 13 scales of five fields: 6.5 s -> 5.3 s, same values).
REP_PAIRS_ALL = 0

#: Relative slack added to the affine models' residuals and centre terms (see
#: :func:`_affine_bound`): far above the rounding of the float64 sums that compute them, far
#: below anything that changes how much is pruned.
RESID_SLACK = 1e-10


def _morton(q: IntArray, bits: int) -> IntArray:
    n, d = q.shape
    code = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        for c in range(d):
            code |= ((q[:, c] >> b) & 1) << (b * d + c)
    return code


@dataclass
class _Level:
    start: IntArray
    count: IntArray
    lo: FloatArray
    hi: FloatArray
    vmin: FloatArray
    vmax: FloatArray
    reps: IntArray  # (n_cells, n_reps) point indices
    center: FloatArray  # (n_cells, d) mean of the cell's points
    radius: FloatArray  # (n_cells,) largest distance of a point to the centre
    offset: FloatArray  # (n_cells, m) affine model a + slope (x − centre)
    slope: FloatArray  # (n_cells, m, d)
    resid: FloatArray  # (n_cells,) largest |g(x) − model(x)| over the cell's points
    child_start: IntArray | None = None
    child_count: IntArray | None = None


class Tree:
    """Points sorted along a Morton curve; cells of every level are contiguous runs."""

    def __init__(self, X: FloatArray, V: FloatArray, leaf_size: int = 8) -> None:
        n, d = X.shape
        lo = X.min(axis=0)
        ext = float((X.max(axis=0) - lo).max())
        ext = ext if ext > 0 else 1.0
        depth = int(math.ceil(math.log2(max(n / leaf_size, 1.0)) / d))
        depth = max(0, min(depth, 62 // d, 20))
        side = 1 << depth
        q = np.clip(np.floor((X - lo) / ext * side), 0, side - 1).astype(np.int64)
        code = _morton(q, depth)
        order = np.argsort(code, kind="stable")
        self.X = X[order]
        self.V = V[order]
        self.d, self.m, self.depth = d, V.shape[1], depth
        code = code[order]
        ncomp = min(self.m, 2)
        self.levels: list[_Level] = []
        codes_prev: IntArray | None = None
        for lev in range(depth + 1):
            c = code >> (d * (depth - lev))
            start = np.flatnonzero(np.r_[True, c[1:] != c[:-1]]).astype(np.int64)
            count = np.diff(np.r_[start, n]).astype(np.int64)
            cell_of = np.repeat(np.arange(start.size), count)
            vmin = np.minimum.reduceat(self.V, start, axis=0)
            vmax = np.maximum.reduceat(self.V, start, axis=0)
            reps = []
            ar = np.arange(n)
            for k in range(ncomp):
                for ext_v in (vmax, vmin):
                    hit = np.where(self.V[:, k] == ext_v[cell_of, k], ar, n)
                    reps.append(np.minimum.reduceat(hit, start))
            center, radius, offset, slope, resid = _affine_models(
                self.X, self.V, start, count, cell_of
            )
            level = _Level(
                start=start,
                count=count,
                lo=np.minimum.reduceat(self.X, start, axis=0),
                hi=np.maximum.reduceat(self.X, start, axis=0),
                vmin=vmin,
                vmax=vmax,
                reps=np.stack(reps, axis=1),
                center=center,
                radius=radius,
                offset=offset,
                slope=slope,
                resid=resid,
            )
            if codes_prev is not None:
                parent = c[start] >> d
                prev = self.levels[-1]
                prev.child_start = np.searchsorted(parent, codes_prev, side="left")
                prev.child_count = np.searchsorted(parent, codes_prev, side="right") - (
                    prev.child_start
                )
            codes_prev = c[start]
            self.levels.append(level)


def _affine_models(
    X: FloatArray, V: FloatArray, start: IntArray, count: IntArray, cell_of: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per cell: centre, radius, least-squares affine model of ``V`` and its exact residual.

    The model only has to be good, not exact: ``resid`` is measured on the cell's points, so
    :func:`_affine_bound` is a valid bound whatever the fit (a cell whose points are collinear
    gets the ridge-regularised fit).
    """
    n, d = X.shape
    cnt = count.astype(np.float64)
    center = np.add.reduceat(X, start, axis=0) / cnt[:, None]
    Y = X - center[cell_of]
    radius = np.sqrt(np.maximum.reduceat(np.einsum("ij,ij->i", Y, Y), start))
    vmean = np.add.reduceat(V, start, axis=0) / cnt[:, None]
    W = V - vmean[cell_of]
    C = np.add.reduceat(np.einsum("ni,nj->nij", Y, Y).reshape(n, d * d), start, axis=0)
    Cyg = np.add.reduceat(np.einsum("ni,nk->nik", Y, W).reshape(n, d * V.shape[1]), start, axis=0)
    C = C.reshape(-1, d, d)
    scale = np.maximum(np.einsum("cii->c", C) / d, np.finfo(np.float64).tiny)
    Cn = C / scale[:, None, None] + 1e-9 * np.eye(d)
    coef = solve_spd(Cn, Cyg.reshape(-1, d, V.shape[1]) / scale[:, None, None])
    slope = np.ascontiguousarray(np.swapaxes(coef, 1, 2))  # (cells, m, d)
    PY = np.einsum("nkd,nd->nk", slope[cell_of], Y)
    E = W - PY
    # the residual as computed carries the rounding of W and P y; RESID_SLACK covers it
    size = np.sqrt(np.einsum("ij,ij->i", W, W)) + np.sqrt(np.einsum("ij,ij->i", PY, PY))
    size += np.sqrt(np.einsum("ij,ij->i", V, V))
    E2 = np.sqrt(np.einsum("ij,ij->i", E, E)) + RESID_SLACK * size
    resid = np.maximum.reduceat(E2, start)
    return center, radius, vmean, slope, resid


def solve_spd(C: FloatArray, rhs: FloatArray) -> FloatArray:
    """``C⁻¹ rhs`` for a stack of small symmetric positive definite ``C`` (``(w, d, d)``).

    ``d = 1, 2`` in closed form (several times faster than ``np.linalg.solve`` on many tiny
    systems), else ``np.linalg.solve``.
    """
    d = C.shape[-1]
    if d == 1:
        return rhs / C[:, :1, :1]
    if d == 2:
        a, b, c = C[:, 0, 0], C[:, 0, 1], C[:, 1, 1]
        det = (a * c - b * b)[:, None]
        r0, r1 = rhs[:, 0, :], rhs[:, 1, :]
        return np.stack(
            [(c[:, None] * r0 - b[:, None] * r1) / det, (a[:, None] * r1 - b[:, None] * r0) / det],
            axis=1,
        )
    return np.linalg.solve(C, rhs)


def _affine_bound(
    lev: _Level, A: IntArray, B: IntArray, dmin: FloatArray, dmax: FloatArray, alpha: float
) -> FloatArray:
    """An upper bound of ``|g(x) − g(y)| / |x − y|^α`` over ``x ∈ A``, ``y ∈ B``, per pair.

    With the cells' affine models ``g = a + P (x − c) + e`` (``|e| <= ε``) and ``P̄`` the mean
    of the two slopes,

        g(x) − g(y) = P̄ (x − y) + [a_A − a_B − P̄ (c_A − c_B)]
                      + ½ (P_A − P_B) [(x − c_A) + (y − c_B)] + e_A(x) − e_B(y),

    so ``|g(x) − g(y)| <= |P̄| |x − y| + R`` with ``R = |a_A − a_B − P̄ (c_A − c_B)|
    + ½ |P_A − P_B| (r_A + r_B) + ε_A + ε_B`` (Frobenius norms). Divided by ``|x − y|^α`` on
    ``dmin <= |x − y| <= dmax``: ``|P̄| dmax^{1−α} + R / dmin^α``. For a smooth field ``R`` is
    of second order in the cells' size, against first order for the value ranges' bound, which
    is what prunes the seminorm of a smooth potential at ``α = 1``.
    """
    PA, PB = lev.slope[A], lev.slope[B]
    Pm = 0.5 * (PA + PB)
    dP = PA - PB
    dc = lev.center[A] - lev.center[B]
    res = lev.offset[A] - lev.offset[B] - np.einsum("nkd,nd->nk", Pm, dc)
    nP = np.sqrt(np.einsum("nkd,nkd->n", Pm, Pm))
    # rounding of the centre term: a slack relative to the magnitudes that enter it
    mag = (
        np.sqrt(np.einsum("nk,nk->n", lev.offset[A], lev.offset[A]))
        + np.sqrt(np.einsum("nk,nk->n", lev.offset[B], lev.offset[B]))
        + nP * np.sqrt(np.einsum("nd,nd->n", dc, dc))
    )
    R = (
        np.sqrt(np.einsum("nk,nk->n", res, res))
        + RESID_SLACK * mag
        + 0.5 * np.sqrt(np.einsum("nkd,nkd->n", dP, dP)) * (lev.radius[A] + lev.radius[B])
        + lev.resid[A]
        + lev.resid[B]
    )
    if alpha == 1.0:
        ub = nP + R / dmin
    elif alpha == 0.0:
        ub = nP * dmax + R
    else:
        ub = nP * dmax ** (1.0 - alpha) + R / dmin**alpha
    # rounding of the bound itself must not prune a pair whose best is the bound
    return ub * (1.0 + 1e-12)


def _expand(
    A: IntArray, B: IntArray, sa: IntArray, ca: IntArray, sb: IntArray, cb: IntArray
) -> tuple[IntArray, IntArray]:
    """All (a, b) with a in [sa, sa + ca), b in [sb, sb + cb), for each input pair."""
    t = ca * cb
    total = int(t.sum())
    p = np.repeat(np.arange(A.size), t)
    r = np.arange(total) - np.repeat(np.cumsum(t) - t, t)
    nb = cb[p]
    return sa[p] + r // nb, sb[p] + r % nb


def _leaf_pairs(
    tree: Tree, lev: _Level, A: IntArray, B: IntArray, dlo2: float, dhi2: float, alpha: float
) -> float:
    best = 0.0
    if A.size == 0:
        return best
    t = lev.count[A] * lev.count[B]
    cuts = np.searchsorted(
        np.cumsum(t), np.arange(1, 1 + int(t.sum()) // CHUNK_PAIRS) * CHUNK_PAIRS
    )
    for Ai, Bi in zip(np.split(A, cuts), np.split(B, cuts), strict=True):
        ia, ib = _expand(Ai, Bi, lev.start[Ai], lev.count[Ai], lev.start[Bi], lev.count[Bi])
        best = max(best, _pairs_best(tree, ia, ib, dlo2, dhi2, alpha))
    return best


def _pairs_best(
    tree: Tree, ia: IntArray, ib: IntArray, dlo2: float, dhi2: float, alpha: float
) -> float:
    """Largest ``diff / d^alpha`` over the point pairs (ia, ib) inside the window."""
    if ia.size == 0:
        return 0.0
    dx = tree.X[ia] - tree.X[ib]
    d2 = np.einsum("ij,ij->i", dx, dx)
    dv = tree.V[ia] - tree.V[ib]
    diff = np.abs(dv[:, 0]) if tree.m == 1 else np.sqrt(np.einsum("ij,ij->i", dv, dv))
    ok = (d2 > 0.0) & (d2 >= dlo2) & (d2 <= dhi2)
    if not np.any(ok):
        return 0.0
    return float(ratio(diff[ok], d2[ok], alpha).max())


def branch_and_bound(
    tree: Tree, dlo: float, dhi: float, alpha: float, lb0: float, comm: MPI.Comm
) -> float:
    """``max diff / d^alpha`` over pairs with ``dlo <= d <= dhi``, ``d > 0`` (branch and bound)."""
    dlo2, dhi2 = max(dlo, 0.0) ** 2, dhi**2
    P, rank = comm.size, comm.rank
    split = P == 1
    A = np.zeros(1, dtype=np.int64)
    B = np.zeros(1, dtype=np.int64)
    lb = lb0
    tiny = np.finfo(np.float64).tiny
    for k, lev in enumerate(tree.levels):
        if not split and A.size >= 4 * P:
            A, B = A[rank::P], B[rank::P]
            split = True
        gap = np.maximum(0.0, np.maximum(lev.lo[B] - lev.hi[A], lev.lo[A] - lev.hi[B]))
        span = np.maximum(lev.hi[B] - lev.lo[A], lev.hi[A] - lev.lo[B])
        dmin2 = np.einsum("ij,ij->i", gap, gap)
        dmax2 = np.einsum("ij,ij->i", span, span)
        keep = (dmin2 <= dhi2) & (dmax2 >= dlo2) & (dmax2 > 0.0)
        A, B, dmin2, dmax2 = A[keep], B[keep], dmin2[keep], dmax2[keep]
        # lower bound from representative points (real pairs)
        nrep = lev.reps.shape[1] if k < tree.depth else 0  # leaves are compared exactly
        if A.size <= REP_PAIRS_ALL:
            combos = [(i, j) for i in range(nrep) for j in range(nrep)]
        else:  # many pairs: a component's max in one cell against its min in the other
            combos = [(i, i ^ 1) for i in range(nrep)]
        for i, j in combos:
            lb = max(lb, _pairs_best(tree, lev.reps[A, i], lev.reps[B, j], dlo2, dhi2, alpha))
        dv = np.maximum(lev.vmax[A] - lev.vmin[B], lev.vmax[B] - lev.vmin[A])
        ub = np.sqrt(np.einsum("ij,ij->i", dv, dv))
        if tree.m == 1 and alpha == 0.0:
            # a scalar pair of distinct cells inside the window: its best pair is max - min
            full = (A != B) & (dmax2 <= dhi2) & (dmin2 >= dlo2)
            if np.any(full):
                lb = max(lb, float(ub[full].max()))
                ub[full] = 0.0
        dlow = np.sqrt(np.maximum(np.maximum(dmin2, dlo2), tiny))
        if alpha == 1.0:
            ub = ub / dlow
        elif alpha > 0.0:
            ub = ub / dlow**alpha
        if A.size:
            dhigh = np.sqrt(np.minimum(dmax2, dhi2))
            ub = np.minimum(ub, _affine_bound(lev, A, B, dlow, dhigh, alpha))
        if split and P > 1:
            lb = float(comm.allreduce(lb, op=MPI.MAX))
        keep = ub > lb
        A, B = A[keep], B[keep]
        if k == tree.depth:
            lb = max(lb, _leaf_pairs(tree, lev, A, B, dlo2, dhi2, alpha))
            break
        assert lev.child_start is not None and lev.child_count is not None
        A, B = _expand(
            A, B, lev.child_start[A], lev.child_count[A], lev.child_start[B], lev.child_count[B]
        )
        # A <= B holds for the parents and Morton order keeps it for their children
        keep = A <= B
        A, B = A[keep], B[keep]
    if P > 1:
        lb = float(comm.allreduce(lb, op=MPI.MAX))
    return lb


def gather(X: FloatArray, V: FloatArray, comm: MPI.Comm) -> tuple[FloatArray, FloatArray]:
    """All ranks' points and values, concatenated in rank order, on every rank; collective."""
    if comm.size == 1:
        return X, V
    Xs = comm.allgather(X)
    Vs = comm.allgather(V)
    return np.concatenate(Xs, axis=0), np.concatenate(Vs, axis=0)


def tree_modulus(tree: Tree, scales: FloatArray, comm: MPI.Comm) -> FloatArray:
    """``ω(δ)`` at every scale by :func:`branch_and_bound` (``α = 0``); collective."""
    out = np.zeros(scales.size)
    lb = 0.0
    for j, delta in enumerate(scales):
        # ω is non-decreasing: the previous scale's value is a valid lower bound
        lb = branch_and_bound(tree, 0.0, float(delta), 0.0, lb, comm)
        out[j] = lb
    return out
