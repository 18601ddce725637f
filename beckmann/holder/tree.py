"""The 2^d-tree of the tree method (:mod:`beckmann.holder.multiscale`): cells and their bounds.

Points sorted along a Morton curve into a ``2^d``-tree of cells. Every cell knows its points'
bounding box, the range of each value component, a few representative points and an affine
model of the values with a bound on its residual (measured on the finest
:data:`EXACT_LEVELS` levels, bounded through the children above). The geometry (cells, boxes,
Morton order) depends on the points only and is shared between fields on the same points.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "EXACT_LEVELS",
    "PROBE_NEIGHBOURS",
    "RESID_SLACK",
    "Cells",
    "Cols",
    "Tree",
    "rows",
    "solve_spd",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Relative slack added to the affine models' residuals and centre terms (see
#: :func:`beckmann.holder.multiscale._affine_bound`): far above the rounding of the float64
#: sums that compute them, far below anything that changes how much is pruned.
RESID_SLACK = 1e-10


def rows(a: npt.NDArray[Any], idx: IntArray) -> npt.NDArray[Any]:
    """``a[idx]`` along the first axis.

    ``np.take`` is many times faster than fancy indexing for arrays of more than one dimension
    (NumPy 2.5: 17x for 250k rows of two columns).
    """
    return np.take(a, idx, axis=0)


#: The finest levels whose affine residuals are measured on the points; coarser levels bound
#: them through their children (:func:`_affine_models_up`).
EXACT_LEVELS = 3

#: Points taken near each end of a probe (:meth:`_Geometry.near`).
PROBE_NEIGHBOURS = 6


def _morton(q: IntArray, bits: int) -> IntArray:
    n, d = q.shape
    code = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        for c in range(d):
            code |= ((q[:, c] >> b) & 1) << (b * d + c)
    return code


@dataclass
class Cells:
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
        self.X = rows(X, self.order)
        self.d, self.depth = d, depth
        code = code[self.order]
        self.lo, self.ext, self.side, self.code = lo, ext, side, code
        self.levels: list[Cells] = []
        codes_prev: IntArray | None = None
        for lev in range(depth + 1):
            c = code >> (d * (depth - lev))
            start = np.flatnonzero(np.r_[True, c[1:] != c[:-1]]).astype(np.int64)
            count = np.diff(np.r_[start, n]).astype(np.int64)
            cell_of = np.repeat(np.arange(start.size), count)
            cnt = count.astype(np.float64)
            center = np.add.reduceat(self.X, start, axis=0) / cnt[:, None]
            Y = self.X - rows(center, cell_of)
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
            cells = Cells(
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
    """One level's value data of a field: ``pack`` rows are cells (see :class:`Cols`)."""

    pack: FloatArray  # (n_cells, K)
    reps: IntArray  # (n_cells, n_reps) point indices
    ranges: FloatArray  # (n_cells, 2m): vmin, vmax (the first columns of pack)


class Cols:
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
        self.V = rows(np.asarray(V, dtype=np.float64), geo.order)
        n = self.X.shape[0]
        self.d, self.m, self.depth = geo.d, self.V.shape[1], geo.depth
        self.cols = Cols(self.d, self.m)
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


def _affine_models(V: FloatArray, cells: Cells) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per cell: least-squares affine model ``offset + slope (x − centre)`` of ``V``, residual.

    The model only has to be good, not exact: ``resid`` is measured on the cell's points, so
    :func:`_affine_bound` is a valid bound whatever the fit (a cell whose points are collinear
    gets the ridge-regularised fit).
    """
    n, d = cells.Y.shape
    start, cell_of, Y = cells.start, cells.cell_of, cells.Y
    cnt = cells.count.astype(np.float64)
    vmean = np.add.reduceat(V, start, axis=0) / cnt[:, None]
    W = V - rows(vmean, cell_of)
    Cyg = np.add.reduceat(np.einsum("ni,nk->nik", Y, W).reshape(n, d * V.shape[1]), start, axis=0)
    scale = cells.scale
    coef = solve_spd(cells.Cn, Cyg.reshape(-1, d, V.shape[1]) / scale[:, None, None])
    slope = np.ascontiguousarray(np.swapaxes(coef, 1, 2))  # (cells, m, d)
    PY = np.einsum("nkd,nd->nk", rows(slope, cell_of), Y)
    E = W - PY
    # the residual as computed carries the rounding of W and P y; RESID_SLACK covers it
    size = np.sqrt(np.einsum("ij,ij->i", W, W)) + np.sqrt(np.einsum("ij,ij->i", PY, PY))
    size += np.sqrt(np.einsum("ij,ij->i", V, V))
    E2 = np.sqrt(np.einsum("ij,ij->i", E, E)) + RESID_SLACK * size
    resid = np.maximum.reduceat(E2, start)
    return vmean, slope, resid, Cyg.reshape(-1, d, V.shape[1])


def _affine_models_up(
    cells: Cells,
    below: Cells,
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
    dc = below.center - rows(cells.center, owner)  # (children, d)
    da = offset - rows(vmean, owner)  # (children, m)
    Cyg = np.add.reduceat(
        (cyg + nc[:, None, None] * dc[:, :, None] * da[:, None, :]).reshape(-1, d * m),
        starts,
        axis=0,
    ).reshape(-1, d, m)
    coef = solve_spd(cells.Cn, Cyg / cells.scale[:, None, None])
    up = np.ascontiguousarray(np.swapaxes(coef, 1, 2))  # (cells, m, d)
    Pp = rows(up, owner)  # (children, m, d)
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
