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

import hashlib
import math
from dataclasses import dataclass
from typing import Any

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


def _rows(a: npt.NDArray[Any], idx: IntArray) -> npt.NDArray[Any]:
    """``a[idx]`` along the first axis.

    ``np.take`` is many times faster than fancy indexing for arrays of more than one dimension
    (NumPy 2.5: 17x for 250k rows of two columns).
    """
    return np.take(a, idx, axis=0)


#: The finest levels whose affine residuals are measured on the points; coarser levels bound
#: them through their children (:func:`_affine_models_up`).
EXACT_LEVELS = 3

#: Cells probed for lower bounds of ``ω`` (:func:`_probe_lower_bounds`), and points taken
#: near each end of a probe.
PROBE_CELLS = 32
PROBE_NEIGHBOURS = 6


def _morton(q: IntArray, bits: int) -> IntArray:
    n, d = q.shape
    code = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        for c in range(d):
            code |= ((q[:, c] >> b) & 1) << (b * d + c)
    return code


@dataclass
class _Cells:
    """One level's cells, from the points alone (shared by every field on the same points)."""

    start: IntArray
    count: IntArray
    cell_of: IntArray  # (n,) the cell of each sorted point
    box: FloatArray  # (n_cells, 2d): lo, hi of the cell's points
    center: FloatArray  # (n_cells, d) mean of the cell's points
    radius: FloatArray  # (n_cells,) largest distance of a point to the centre
    Y: FloatArray  # (n, d) points minus their cell's centre
    Cn: FloatArray  # (n_cells, d, d) normalised (and ridge-regularised) covariance of Y
    scale: FloatArray  # (n_cells,) its normalisation
    child_start: IntArray | None = None
    child_count: IntArray | None = None


class _Geometry:
    """Morton order and the cells of every level of a point cloud; depends on the points only."""

    def __init__(self, X: FloatArray, leaf_size: int) -> None:
        n, d = X.shape
        lo = X.min(axis=0)
        ext = float((X.max(axis=0) - lo).max())
        ext = ext if ext > 0 else 1.0
        depth = int(math.ceil(math.log2(max(n / leaf_size, 1.0)) / d))
        depth = max(0, min(depth, 62 // d, 20))
        side = 1 << depth
        q = np.clip(np.floor((X - lo) / ext * side), 0, side - 1).astype(np.int64)
        code = _morton(q, depth)
        self.order = np.argsort(code, kind="stable")
        self.X = _rows(X, self.order)
        self.d, self.depth = d, depth
        code = code[self.order]
        self.lo, self.ext, self.side, self.code = lo, ext, side, code
        self.levels: list[_Cells] = []
        codes_prev: IntArray | None = None
        for lev in range(depth + 1):
            c = code >> (d * (depth - lev))
            start = np.flatnonzero(np.r_[True, c[1:] != c[:-1]]).astype(np.int64)
            count = np.diff(np.r_[start, n]).astype(np.int64)
            cell_of = np.repeat(np.arange(start.size), count)
            cnt = count.astype(np.float64)
            center = np.add.reduceat(self.X, start, axis=0) / cnt[:, None]
            Y = self.X - _rows(center, cell_of)
            radius = np.sqrt(np.maximum.reduceat(np.einsum("ij,ij->i", Y, Y), start))
            C = np.add.reduceat(np.einsum("ni,nj->nij", Y, Y).reshape(n, d * d), start, axis=0)
            C = C.reshape(-1, d, d)
            scale = np.maximum(np.einsum("cii->c", C) / d, np.finfo(np.float64).tiny)
            box = np.concatenate(
                [
                    np.minimum.reduceat(self.X, start, axis=0),
                    np.maximum.reduceat(self.X, start, axis=0),
                ],
                axis=1,
            )
            cells = _Cells(
                start=start,
                count=count,
                cell_of=cell_of,
                box=box,
                center=center,
                radius=radius,
                Y=Y,
                Cn=C / scale[:, None, None] + 1e-9 * np.eye(d),
                scale=scale,
            )
            if codes_prev is not None:
                parent = c[start] >> d
                prev = self.levels[-1]
                prev.child_start = np.searchsorted(parent, codes_prev, side="left")
                prev.child_count = np.searchsorted(parent, codes_prev, side="right") - (
                    prev.child_start
                )
            codes_prev = c[start]
            self.levels.append(cells)

    def near(self, T: FloatArray) -> IntArray:
        """``(len(T), PROBE_NEIGHBOURS)`` sorted points next to each target in Morton order.

        Points near a target, not the nearest: a cheap search for the probes of
        :func:`_probe_lower_bounds` (any points give valid lower bounds).
        """
        n = self.X.shape[0]
        q = np.clip(np.floor((T - self.lo) / self.ext * self.side), 0, self.side - 1)
        pos = np.searchsorted(self.code, _morton(q.astype(np.int64), self.depth))
        k = PROBE_NEIGHBOURS
        first = np.clip(pos - k // 2, 0, max(n - k, 0))
        return np.minimum(first[:, None] + np.arange(k)[None, :], n - 1)


#: The geometries of the last few point clouds (``--field all`` measures several fields on the
#: same nodes): key (leaf size, shape, digest of the points) -> (points, geometry).
_GEOMETRIES: dict[tuple[int, tuple[int, ...], bytes], tuple[FloatArray, _Geometry]] = {}
_GEOMETRIES_KEPT = 2


def _geometry(X: FloatArray, leaf_size: int) -> _Geometry:
    """The :class:`_Geometry` of ``X``, computed once per distinct point cloud."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    key = (int(leaf_size), X.shape, hashlib.blake2b(X.view(np.uint8).ravel()).digest())
    hit = _GEOMETRIES.get(key)
    if hit is not None and np.array_equal(hit[0], X):
        return hit[1]
    geo = _Geometry(X, leaf_size)
    while len(_GEOMETRIES) >= _GEOMETRIES_KEPT:
        _GEOMETRIES.pop(next(iter(_GEOMETRIES)))
    _GEOMETRIES[key] = (X.copy(), geo)
    return geo


@dataclass
class _Level:
    """One level's value data of a field: ``pack`` rows are cells (see :class:`_Cols`)."""

    pack: FloatArray  # (n_cells, K)
    reps: IntArray  # (n_cells, n_reps) point indices
    ranges: FloatArray  # (n_cells, 2m): vmin, vmax (the first columns of pack)


class _Cols:
    """Column slices of :attr:`_Level.pack`: value ranges, centre, radius and affine model."""

    def __init__(self, d: int, m: int) -> None:
        widths = {"vmin": m, "vmax": m, "center": d, "radius": 1, "offset": m, "slope": m * d}
        widths["resid"] = 1
        self.slices: dict[str, slice] = {}
        k = 0
        for name, w in widths.items():
            self.slices[name] = slice(k, k + w)
            k += w
        self.width = k


class Tree:
    """Points sorted along a Morton curve; cells of every level are contiguous runs.

    The cells (order, boxes, centres, covariances) depend on the points only and are shared by
    every field measured on the same points; the value ranges, representatives and affine
    models are the field's.
    """

    def __init__(self, X: FloatArray, V: FloatArray, leaf_size: int = 8) -> None:
        geo = _geometry(X, leaf_size)
        self.geo = geo
        self.X = geo.X
        self.V = _rows(np.asarray(V, dtype=np.float64), geo.order)
        n = self.X.shape[0]
        self.d, self.m, self.depth = geo.d, self.V.shape[1], geo.depth
        self.cols = _Cols(self.d, self.m)
        ncomp = min(self.m, 2)
        levels: list[_Level] = []
        ar = np.arange(n)
        below: tuple[FloatArray, FloatArray, IntArray] | None = None
        models: tuple[FloatArray, FloatArray, FloatArray, FloatArray] | None = None
        for lev_index in range(geo.depth, -1, -1):
            cells = geo.levels[lev_index]
            # value ranges and representatives from the level below (its cells partition each
            # cell into contiguous runs): the same numbers as over the points, O(cells) work
            if below is None:
                val_max, val_min, idx, starts = self.V, self.V, ar, cells.start
                owner = cells.cell_of
            else:
                val_max, val_min, idx = below
                assert cells.child_start is not None and cells.child_count is not None
                starts = cells.child_start
                owner = np.repeat(np.arange(starts.size), cells.child_count)
            vmin = np.minimum.reduceat(val_min, starts, axis=0)
            vmax = np.maximum.reduceat(val_max, starts, axis=0)
            reps = []
            for k in range(ncomp):
                for j, (ext_v, mine) in enumerate(((vmax, val_max), (vmin, val_min))):
                    # the first point (smallest index) where the extreme is attained
                    at = idx if below is None else idx[:, 2 * k + j]
                    hit = np.where(mine[:, k] == ext_v[owner, k], at, n)
                    reps.append(np.minimum.reduceat(hit, starts))
            rep_arr = np.stack(reps, axis=1)
            below = (vmax, vmin, rep_arr)
            if models is None or lev_index > geo.depth - EXACT_LEVELS:
                models = _affine_models(self.V, cells)
            else:
                models = _affine_models_up(cells, geo.levels[lev_index + 1], *models)
            offset, slope, resid, _ = models
            pack = np.concatenate(
                [
                    vmin,
                    vmax,
                    cells.center,
                    cells.radius[:, None],
                    offset,
                    slope.reshape(slope.shape[0], -1),
                    resid[:, None],
                ],
                axis=1,
            )
            levels.append(
                _Level(
                    pack=pack,
                    reps=rep_arr,
                    ranges=np.ascontiguousarray(pack[:, : 2 * self.m]),
                )
            )
        self.levels = levels[::-1]


def _affine_models(V: FloatArray, cells: _Cells) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per cell: least-squares affine model ``offset + slope (x − centre)`` of ``V``, residual.

    The model only has to be good, not exact: ``resid`` is measured on the cell's points, so
    :func:`_affine_bound` is a valid bound whatever the fit (a cell whose points are collinear
    gets the ridge-regularised fit).
    """
    n, d = cells.Y.shape
    start, cell_of, Y = cells.start, cells.cell_of, cells.Y
    cnt = cells.count.astype(np.float64)
    vmean = np.add.reduceat(V, start, axis=0) / cnt[:, None]
    W = V - _rows(vmean, cell_of)
    Cyg = np.add.reduceat(np.einsum("ni,nk->nik", Y, W).reshape(n, d * V.shape[1]), start, axis=0)
    scale = cells.scale
    coef = solve_spd(cells.Cn, Cyg.reshape(-1, d, V.shape[1]) / scale[:, None, None])
    slope = np.ascontiguousarray(np.swapaxes(coef, 1, 2))  # (cells, m, d)
    PY = np.einsum("nkd,nd->nk", _rows(slope, cell_of), Y)
    E = W - PY
    # the residual as computed carries the rounding of W and P y; RESID_SLACK covers it
    size = np.sqrt(np.einsum("ij,ij->i", W, W)) + np.sqrt(np.einsum("ij,ij->i", PY, PY))
    size += np.sqrt(np.einsum("ij,ij->i", V, V))
    E2 = np.sqrt(np.einsum("ij,ij->i", E, E)) + RESID_SLACK * size
    resid = np.maximum.reduceat(E2, start)
    return vmean, slope, resid, Cyg.reshape(-1, d, V.shape[1])


def _affine_models_up(
    cells: _Cells,
    below: _Cells,
    offset: FloatArray,
    slope: FloatArray,
    resid: FloatArray,
    cyg: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """:func:`_affine_models` of a level from its children's models, ``O(cells)`` work.

    The least-squares sums add up over the children (``Σ_c Cyg_c + n_c (c_c − c) ⊗ (a_c − a)``,
    ``a`` the means); the residual is bounded through the children's: for ``x`` in child ``c``,
    ``g(x) − a − P(x − c_p) = e_c(x) + [a_c − a − P(c_c − c_p)] + (P_c − P)(x − c_c)``, so
    ``ε <= max_c ε_c + |a_c − a − P(c_c − c_p)| + |P_c − P| r_c`` (Frobenius), with
    :data:`RESID_SLACK` for the rounding. A looser ε than the exact one, on the coarse levels
    only (:data:`EXACT_LEVELS`), where few pairs are bounded.
    """
    assert cells.child_start is not None and cells.child_count is not None
    d, m = cells.center.shape[1], offset.shape[1]
    starts = cells.child_start
    owner = np.repeat(np.arange(starts.size), cells.child_count)
    nc = below.count.astype(np.float64)
    cnt = cells.count.astype(np.float64)
    vmean = np.add.reduceat(offset * nc[:, None], starts, axis=0) / cnt[:, None]
    dc = below.center - _rows(cells.center, owner)  # (children, d)
    da = offset - _rows(vmean, owner)  # (children, m)
    Cyg = np.add.reduceat(
        (cyg + nc[:, None, None] * dc[:, :, None] * da[:, None, :]).reshape(-1, d * m),
        starts,
        axis=0,
    ).reshape(-1, d, m)
    coef = solve_spd(cells.Cn, Cyg / cells.scale[:, None, None])
    up = np.ascontiguousarray(np.swapaxes(coef, 1, 2))  # (cells, m, d)
    Pp = _rows(up, owner)  # (children, m, d)
    jump = da - np.einsum("nkd,nd->nk", Pp, dc)
    dP = (slope - Pp).reshape(-1, m * d)
    nPp = np.sqrt(np.einsum("nkd,nkd->n", Pp, Pp))
    mag = (
        np.sqrt(np.einsum("ij,ij->i", offset, offset))
        + np.sqrt(np.einsum("ij,ij->i", da, da))
        + nPp * np.sqrt(np.einsum("ij,ij->i", dc, dc))
    )
    bound = (
        resid
        + np.sqrt(np.einsum("ij,ij->i", jump, jump))
        + np.sqrt(np.einsum("ij,ij->i", dP, dP)) * below.radius
        + RESID_SLACK * mag
    ) * (1.0 + 1e-12)
    return vmean, up, np.maximum.reduceat(bound, starts), Cyg


def solve_spd(C: FloatArray, rhs: FloatArray) -> FloatArray:
    """``C⁻¹ rhs`` for a stack of small symmetric positive definite ``C`` (``(w, d, d)``).

    ``d = 1, 2`` in closed form (several times faster than ``np.linalg.solve`` on many tiny
    systems), else ``np.linalg.solve``.
    """
    d = C.shape[-1]
    if d == 1:
        return rhs / C[:, :1, :1]
    if d == 2:
        a, b, c = C[:, 0, 0, None], C[:, 0, 1, None], C[:, 1, 1, None]
        det = a * c - b * b
        r0, r1 = rhs[:, 0, :], rhs[:, 1, :]
        out = np.empty(rhs.shape)
        out[:, 0, :] = (c * r0 - b * r1) / det
        out[:, 1, :] = (a * r1 - b * r0) / det
        return out
    return np.linalg.solve(C, rhs)


def _affine_bound(
    cols: _Cols,
    GA: FloatArray,
    GB: FloatArray,
    dmin: FloatArray,
    dmax: FloatArray,
    alpha: float,
    d: int,
    m: int,
) -> FloatArray:
    """An upper bound of ``|g(x) − g(y)| / |x − y|^α`` over ``x ∈ A``, ``y ∈ B``, per pair.

    ``GA``, ``GB``: the pairs' rows of the level's ``pack`` (:class:`_Cols`). With the cells'
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
    cols: _Cols, GA: FloatArray, GB: FloatArray, d: int, m: int
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
    tree: Tree, cells: _Cells, A: IntArray, B: IntArray, dlo2: float, dhi2: float, alpha: float
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
    dx = _rows(tree.X, ia) - _rows(tree.X, ib)
    d2 = np.einsum("ij,ij->i", dx, dx)
    dv = _rows(tree.V, ia) - _rows(tree.V, ib)
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
        bA, bB = _rows(cells.box, A), _rows(cells.box, B)
        gap = np.maximum(0.0, np.maximum(bB[:, :d] - bA[:, d:], bA[:, :d] - bB[:, d:]))
        span = np.maximum(bB[:, d:] - bA[:, :d], bA[:, d:] - bB[:, :d])
        dmin2 = np.einsum("ij,ij->i", gap, gap)
        dmax2 = np.einsum("ij,ij->i", span, span)
        keep = (dmin2 <= dhi2) & (dmax2 >= dlo2) & (dmax2 > 0.0)
        A, B, dmin2, dmax2 = A[keep], B[keep], dmin2[keep], dmax2[keep]
        RA, RB = _rows(lev.ranges, A), _rows(lev.ranges, B)
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
            GA, GB = _rows(lev.pack, A), _rows(lev.pack, B)
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
            ia = _rows(lev.reps, A)[:, ci].ravel()
            ib = _rows(lev.reps, B)[:, cj].ravel()
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
