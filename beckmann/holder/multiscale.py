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

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann.holder.exact import CHUNK_PAIRS, ratio
from beckmann.holder.tree import (
    EXACT_LEVELS,
    PROBE_NEIGHBOURS,
    RESID_SLACK,
    Cells,
    Cols,
    Tree,
    rows,
    solve_spd,
)

__all__ = ["EXACT_LEVELS", "Tree", "branch_and_bound", "gather", "solve_spd", "tree_modulus"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Up to this many candidate cell pairs, every pair of representatives gives a lower bound;
#: beyond, only a component's largest value in one cell against its smallest in the other. 0:
#: the latter always. Since the cells' affine bounds prune, the extra pairs cost more than the
#: better bounds save (P3, n = 128, ω at 13 scales of five fields: 6.5 s -> 5.3 s, same values).
REP_PAIRS_ALL = 0

#: Cells probed for lower bounds of ``ω`` (:func:`_probe_lower_bounds`).
PROBE_CELLS = 32


def _affine_bound(
    cols: Cols,
    GA: FloatArray,
    GB: FloatArray,
    dmin: FloatArray,
    dmax: FloatArray,
    alpha: float,
    d: int,
    m: int,
) -> FloatArray:
    """An upper bound of ``|g(x) − g(y)| / |x − y|^α`` over ``x ∈ A``, ``y ∈ B``, per pair.

    ``GA``, ``GB``: the pairs' rows of the level's ``pack`` (:class:`Cols`). With the cells'
    affine models ``g = a + P (x − c) + e`` (``|e| <= ε``) and ``P̄`` the mean of the two slopes,

        g(x) − g(y) = P̄ (x − y) + [a_A − a_B − P̄ (c_A − c_B)]
                      + ½ (P_A − P_B) [(x − c_A) + (y − c_B)] + e_A(x) − e_B(y),

    so ``|g(x) − g(y)| <= |P̄| |x − y| + R`` with ``R = |a_A − a_B − P̄ (c_A − c_B)|
    + ½ |P_A − P_B| (r_A + r_B) + ε_A + ε_B`` (Frobenius norms). Divided by ``|x − y|^α`` on
    ``dmin <= |x − y| <= dmax``: ``|P̄| dmax^{1−α} + R / dmin^α``. For a smooth field ``R`` is
    of second order in the cells' size, against first order for the value ranges' bound, which
    is what prunes the seminorm of a smooth potential at ``α = 1``.
    """
    nP, R = _affine_terms(cols, GA, GB, d, m)
    if alpha == 1.0:
        ub = nP + R / dmin
    elif alpha == 0.0:
        ub = nP * dmax + R
    else:
        ub = nP * dmax ** (1.0 - alpha) + R / dmin**alpha
    # rounding of the bound itself must not prune a pair whose best is the bound
    return ub * (1.0 + 1e-12)


def _affine_terms(
    cols: Cols, GA: FloatArray, GB: FloatArray, d: int, m: int
) -> tuple[FloatArray, FloatArray]:
    """``(|P̄|, R)`` of :func:`_affine_bound`, per pair."""
    s = cols.slices
    n = GA.shape[0]
    PA, PB = GA[:, s["slope"]], GB[:, s["slope"]]
    Pm = 0.5 * (PA + PB)
    dP = PA - PB
    oA, oB = GA[:, s["offset"]], GB[:, s["offset"]]
    dc = GA[:, s["center"]] - GB[:, s["center"]]
    res = oA - oB - np.einsum("nkd,nd->nk", Pm.reshape(n, m, d), dc)
    nP = np.sqrt(np.einsum("ij,ij->i", Pm, Pm))
    # rounding of the centre term: a slack relative to the magnitudes that enter it
    mag = (
        np.sqrt(np.einsum("ij,ij->i", oA, oA))
        + np.sqrt(np.einsum("ij,ij->i", oB, oB))
        + nP * np.sqrt(np.einsum("ij,ij->i", dc, dc))
    )
    rA, rB = GA[:, s["radius"]][:, 0], GB[:, s["radius"]][:, 0]
    R = (
        np.sqrt(np.einsum("ij,ij->i", res, res))
        + RESID_SLACK * mag
        + 0.5 * np.sqrt(np.einsum("ij,ij->i", dP, dP)) * (rA + rB)
        + GA[:, s["resid"]][:, 0]
        + GB[:, s["resid"]][:, 0]
    )
    return nP, R


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
    tree: Tree, cells: Cells, A: IntArray, B: IntArray, dlo2: float, dhi2: float, alpha: float
) -> float:
    best = 0.0
    if A.size == 0:
        return best
    t = cells.count[A] * cells.count[B]
    cuts = np.searchsorted(
        np.cumsum(t), np.arange(1, 1 + int(t.sum()) // CHUNK_PAIRS) * CHUNK_PAIRS
    )
    for Ai, Bi in zip(np.split(A, cuts), np.split(B, cuts), strict=True):
        ia, ib = _expand(Ai, Bi, cells.start[Ai], cells.count[Ai], cells.start[Bi], cells.count[Bi])
        best = max(best, _pairs_best(tree, ia, ib, dlo2, dhi2, alpha))
    return best


def _pairs_best(
    tree: Tree, ia: IntArray, ib: IntArray, dlo2: float, dhi2: float, alpha: float
) -> float:
    """Largest ``diff / d^alpha`` over the point pairs (ia, ib) inside the window."""
    if ia.size == 0:
        return 0.0
    dx = rows(tree.X, ia) - rows(tree.X, ib)
    d2 = np.einsum("ij,ij->i", dx, dx)
    dv = rows(tree.V, ia) - rows(tree.V, ib)
    diff = np.abs(dv[:, 0]) if tree.m == 1 else np.sqrt(np.einsum("ij,ij->i", dv, dv))
    ok = (d2 > 0.0) & (d2 >= dlo2) & (d2 <= dhi2)
    if not np.any(ok):
        return 0.0
    return float(ratio(diff[ok], d2[ok], alpha).max())


def _rep_combos(nrep: int, npairs: int) -> tuple[list[int], list[int]]:
    """Which representatives of the two cells of a pair are compared (lower bounds)."""
    if npairs <= REP_PAIRS_ALL:
        combos = [(i, j) for i in range(nrep) for j in range(nrep)]
    else:  # many pairs: a component's max in one cell against its min in the other
        combos = [(i, i ^ 1) for i in range(nrep)]
    return [i for i, _ in combos], [j for _, j in combos]


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
    d, m = tree.d, tree.m
    for k, (cells, lev) in enumerate(zip(tree.geo.levels, tree.levels, strict=True)):
        if not split and A.size >= 4 * P:
            A, B = A[rank::P], B[rank::P]
            split = True
        bA, bB = rows(cells.box, A), rows(cells.box, B)
        gap = np.maximum(0.0, np.maximum(bB[:, :d] - bA[:, d:], bA[:, :d] - bB[:, d:]))
        span = np.maximum(bB[:, d:] - bA[:, :d], bA[:, d:] - bB[:, :d])
        dmin2 = np.einsum("ij,ij->i", gap, gap)
        dmax2 = np.einsum("ij,ij->i", span, span)
        keep = (dmin2 <= dhi2) & (dmax2 >= dlo2) & (dmax2 > 0.0)
        A, B, dmin2, dmax2 = A[keep], B[keep], dmin2[keep], dmax2[keep]
        RA, RB = rows(lev.ranges, A), rows(lev.ranges, B)
        dv = np.maximum(RA[:, m:] - RB[:, :m], RB[:, m:] - RA[:, :m])
        ub = np.sqrt(np.einsum("ij,ij->i", dv, dv))
        if m == 1 and alpha == 0.0:
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
        # the value ranges' bound first; the affine models' only for the pairs it leaves
        keep = ub > lb
        A, B, ub, dlow, dmax2 = A[keep], B[keep], ub[keep], dlow[keep], dmax2[keep]
        if A.size:
            GA, GB = rows(lev.pack, A), rows(lev.pack, B)
            dhigh = np.sqrt(np.minimum(dmax2, dhi2))
            ub = np.minimum(ub, _affine_bound(tree.cols, GA, GB, dlow, dhigh, alpha, d, m))
        # a pair whose bound does not beat lb has no pair of points that does: neither its
        # representatives (below) nor its children are looked at
        keep = ub > lb
        A, B, ub = A[keep], B[keep], ub[keep]
        # lower bound from representative points (real pairs)
        nrep = lev.reps.shape[1] if k < tree.depth else 0  # leaves are compared exactly
        if nrep and A.size:
            ci, cj = _rep_combos(nrep, A.size)
            ia = rows(lev.reps, A)[:, ci].ravel()
            ib = rows(lev.reps, B)[:, cj].ravel()
            lb = max(lb, _pairs_best(tree, ia, ib, dlo2, dhi2, alpha))
        if split and P > 1:
            lb = float(comm.allreduce(lb, op=MPI.MAX))
        keep = ub > lb
        A, B = A[keep], B[keep]
        if k == tree.depth:
            lb = max(lb, _leaf_pairs(tree, cells, A, B, dlo2, dhi2, alpha))
            break
        assert cells.child_start is not None and cells.child_count is not None
        A, B = _expand(
            A,
            B,
            cells.child_start[A],
            cells.child_count[A],
            cells.child_start[B],
            cells.child_count[B],
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


def _probe_lower_bounds(tree: Tree, scales: FloatArray) -> FloatArray:
    """Lower bounds of ``ω`` at ``scales`` from a few real pairs where the field changes most.

    The cells one level above the leaves whose affine models have the largest slopes: at each
    scale ``δ``, points near ``c ± (δ'/2) u`` (``u`` the slope's top right singular vector,
    ``δ'`` just below ``δ``; :meth:`_Geometry.near`) are compared. A smooth field's ``ω(δ)``
    is nearly attained there (measured: within 1 % on the fields of a P3 run), so
    :func:`branch_and_bound` starts close to its answer instead of at the previous scale's
    ``ω``, which a smooth field's ``ω`` exceeds by about ``2^{1/per_octave}``.
    """
    out = np.zeros(scales.size)
    level = tree.levels[max(tree.depth - 1, 0)]
    if tree.X.shape[0] < 2:
        return out
    d, m, S = tree.d, tree.m, scales.size
    slope = level.pack[:, tree.cols.slices["slope"]]
    top = np.argsort(-np.einsum("ij,ij->i", slope, slope), kind="stable")[:PROBE_CELLS]
    _, _, vt = np.linalg.svd(slope[top].reshape(-1, m, d))
    u = vt[:, 0, :]  # (K, d)
    c = level.pack[top][:, tree.cols.slices["center"]]
    half = 0.5 * scales[:, None] * np.array([0.99, 0.95, 0.9])[None, :]  # (S, R)
    ends = half[:, :, None, None] * u[None, None, :, :]  # (S, R, K, d)
    ia = tree.geo.near((c - ends).reshape(-1, d)).reshape(S, -1, PROBE_NEIGHBOURS)
    ib = tree.geo.near((c + ends).reshape(-1, d)).reshape(S, -1, PROBE_NEIGHBOURS)
    k = PROBE_NEIGHBOURS
    for j, delta in enumerate(scales):
        a = np.repeat(ia[j], k, axis=1).ravel()
        b = np.tile(ib[j], (1, k)).ravel()
        out[j] = _pairs_best(tree, a, b, 0.0, float(delta) ** 2, 0.0)
    return np.maximum.accumulate(out)


def tree_modulus(tree: Tree, scales: FloatArray, comm: MPI.Comm) -> FloatArray:
    """``ω(δ)`` at every scale by :func:`branch_and_bound` (``α = 0``); collective."""
    out = np.zeros(scales.size)
    lb = 0.0
    probe = _probe_lower_bounds(tree, np.asarray(scales, dtype=np.float64))
    for j, delta in enumerate(scales):
        # ω is non-decreasing: the previous scale's value is a valid lower bound, and so is
        # any real pair within the scale
        lb = branch_and_bound(tree, 0.0, float(delta), 0.0, max(lb, float(probe[j])), comm)
        out[j] = lb
    return out
