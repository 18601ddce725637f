"""Hölder norms, seminorms, moduli of continuity and fitted exponents; collective under MPI.

Definitions (MATH.md §3). For ``g`` sampled at points ``x_i`` (vector values: the Euclidean norm
of the difference),

    ω_g(δ)   = max_{0 < |x_i − x_j| ≤ δ} |g(x_i) − g(x_j)|                 (modulus of continuity)
    [g]_α    = max_{δ_min ≤ |x_i − x_j| ≤ δ_max} |g(x_i) − g(x_j)| / |x_i − x_j|^α   (seminorm)
    ‖g‖_∞    = max_i |g(x_i)|

The lower end ``δ_min`` of the seminorm's window exists for finite-element fields: below the mesh
size ``h`` the discrete field, not the one it approximates, is measured, so FE estimators pass
``delta_min`` a few ``h`` (``delta_min = 0`` is the plain definition). The fitted exponent is the
least-squares slope of ``log ω`` against ``log δ`` on the scales of the window; its band
``(low, high)`` is the range of the local slopes, each taken over one octave (``δ`` to ``≥ 2δ``) of
the window, widened to contain the estimate. A band that is wide says the field is not
self-similar on the window (a mix of a singular and a smooth part, or too few points). A second
fit, ``exponent_increment``, uses ``ω(2δ) − ω(δ)`` and is blind to a constant offset of ``ω``
(a cusp that the discrete field smooths, or that no sample point hits; see :func:`fit_exponent`).

Finite-element fields (:func:`field_norms`, :func:`solution_norms`) are measured at the owned
nodes of continuous Lagrange spaces holding the field and its derivatives, which are recovered
by repeated L2 projection of the gradient (:func:`recover_derivatives`); the window starts at
``2h``. ``beckmann holder DIR`` (:func:`register_cli`) does this for a stored run.

Every public function here is **collective**: the points are distributed (each rank passes its own
``points`` and ``values``), pairs of points on different ranks count, and every rank returns the
same numbers, which do not depend on the number of ranks (up to rounding). Two algorithms:

``exact``
    All pairs, in chunks of at most ``chunk_pairs`` pairs (bounded memory). Rank ``r`` handles
    its own pairs and, in steps ``s = 1, …, P/2``, the pairs between its block and the block of
    rank ``r − s`` received from there (each cross pair is handled once: at ``s = P/2`` the two
    partners split the work in halves). ``O(n²/P)`` work per rank, one pass for the modulus at
    all scales and the seminorm together.
``fast``
    Multi-scale branch and bound, exact up to rounding, about ``n log n`` on fields that are not
    adversarial. The points are gathered on every rank (``O(n)`` memory) and sorted along a
    Morton curve into a ``2^d``-tree of cells; every cell knows its points' bounding box, the
    range of each value component and a few representative points (where each of the first two
    components is largest and smallest). For one quantity (``ω`` at one scale, or the seminorm)
    candidate pairs of cells are refined level by level: a pair whose distance bounds fall outside
    the window is dropped, representatives give a lower bound (a real pair of points), the
    cells' ranges an upper bound, and a pair whose upper bound does not beat the best lower bound
    found so far is dropped; pairs of leaf cells left at the end are compared point by point.
    For scalar fields and ``ω``, a pair of cells that lies entirely inside the window is resolved
    exactly by its ranges. Under MPI the surviving cell pairs are split over the ranks once there
    are enough of them, and the lower bound is shared after every level. The worst case is
    ``n²`` (e.g. noise), the benchmark ``scripts/bench_holder.py`` measures the typical one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI

__all__ = [
    "FIELDS",
    "Exponent",
    "HolderResult",
    "default_scales",
    "estimate",
    "field_norms",
    "fit_exponent",
    "modulus",
    "plot_modulus",
    "recover_derivatives",
    "register_cli",
    "seminorm",
    "solution_field",
    "solution_norms",
    "sup_norm",
]

Method = Literal["exact", "fast"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_CHUNK_PAIRS = 1 << 20


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exponent:
    """A fitted Hölder exponent with its uncertainty band ``low <= estimate <= high``."""

    estimate: float
    low: float
    high: float


@dataclass
class HolderResult:
    """What :func:`estimate` measures on one point cloud.

    Attributes:
        sup: ``max |g|`` over the points.
        alpha: The exponent the seminorm was taken with (the fitted one for ``alpha="auto"``).
        seminorm: ``[g]_alpha`` over pairs with ``delta_min <= |x - y| <= delta_max``.
        scales: The scales ``δ`` of the modulus, ascending.
        modulus: ``ω(δ)`` at ``scales``.
        exponent: Slope of ``log ω`` against ``log δ`` on the window, with its band.
        exponent_increment: The same fitted to the increments ``ω(2δ) − ω(δ)`` (see
            :func:`fit_exponent`): insensitive to a constant offset of ``ω`` (cusps smoothed
            over a cell of an FE field).
        delta_min: Lower end of the window (fit and seminorm).
        delta_max: Upper end of the fit window; the seminorm uses ``seminorm_max``.
        seminorm_max: Upper distance limit of the seminorm (``inf``: none).
        method: ``"exact"`` or ``"fast"``.
        n_points: Global number of points.
    """

    sup: float
    alpha: float
    seminorm: float
    scales: FloatArray
    modulus: FloatArray
    exponent: Exponent
    delta_min: float
    delta_max: float
    seminorm_max: float
    exponent_increment: Exponent
    method: str
    n_points: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (arrays as lists, ``inf`` as ``None``)."""
        out = asdict(self)
        out["scales"] = [float(s) for s in self.scales]
        out["modulus"] = [float(w) for w in self.modulus]
        out["exponent"] = asdict(self.exponent)
        out["exponent_increment"] = asdict(self.exponent_increment)
        if math.isinf(self.seminorm_max):
            out["seminorm_max"] = None
        return out


# --------------------------------------------------------------------------------------------
# input checks (collective)
# --------------------------------------------------------------------------------------------
def _raise_collective(comm: MPI.Comm, message: str | None) -> None:
    """Raise ``ValueError`` on every rank if any rank has a message (the first one wins)."""
    messages = comm.allgather(message)
    for m in messages:
        if m is not None:
            raise ValueError(m)


def _prepare(
    points: npt.ArrayLike, values: npt.ArrayLike, comm: MPI.Comm
) -> tuple[FloatArray, FloatArray]:
    """Check shapes collectively; return ``points`` as (n, d) and ``values`` as (n, m)."""
    X = np.asarray(points, dtype=np.float64)
    V = np.asarray(values, dtype=np.float64)
    err: str | None = None
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    if V.ndim == 1:
        V = V.reshape(-1, 1)
    if X.ndim != 2:
        err = f"points must have shape (n, d), got {X.shape}"
    elif V.ndim != 2:
        err = f"values must have shape (n,) or (n, m), got {V.shape}"
    elif V.shape[0] != X.shape[0]:
        err = f"points and values disagree in length: {X.shape[0]} != {V.shape[0]}"
    elif not (np.all(np.isfinite(X)) and np.all(np.isfinite(V))):
        err = "points and values must be finite (found nan or inf)"
    _raise_collective(comm, err)
    dims = comm.allgather((X.shape[1], V.shape[1]) if X.shape[0] > 0 else None)
    dims_set = {s for s in dims if s is not None}
    if len(dims_set) > 1:
        raise ValueError(f"ranks disagree on (point dimension, value size): {sorted(dims_set)}")
    if dims_set:
        d, m = dims_set.pop()
        if X.shape[0] == 0:
            X, V = X.reshape(0, d), V.reshape(0, m)
    return np.ascontiguousarray(X), np.ascontiguousarray(V)


def _check_method(method: str) -> None:
    if method not in ("exact", "fast"):
        raise ValueError(f"method must be 'exact' or 'fast', got {method!r}")


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not (0.0 <= a <= 1.0) or math.isnan(a):
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    return a


# --------------------------------------------------------------------------------------------
# simple reductions
# --------------------------------------------------------------------------------------------
def sup_norm(values: npt.ArrayLike, comm: MPI.Comm) -> float:
    """``max_i |g(x_i)|`` over all ranks (Euclidean norm for vector values). Collective."""
    V = np.asarray(values, dtype=np.float64)
    V = V.reshape(-1, 1) if V.ndim < 2 else V.reshape(V.shape[0], int(np.prod(V.shape[1:])))
    local = float(np.sqrt(np.max(np.sum(V * V, axis=1)))) if V.shape[0] else 0.0
    return float(comm.allreduce(local, op=MPI.MAX))


def _global_box(X: FloatArray, comm: MPI.Comm) -> tuple[FloatArray, FloatArray, int]:
    d = X.shape[1]
    lo = X.min(axis=0) if X.shape[0] else np.full(d, np.inf)
    hi = X.max(axis=0) if X.shape[0] else np.full(d, -np.inf)
    return (
        _allreduce_array(lo, MPI.MIN, comm),
        _allreduce_array(hi, MPI.MAX, comm),
        int(comm.allreduce(X.shape[0], op=MPI.SUM)),
    )


def _allreduce_array(a: FloatArray, op: MPI.Op, comm: MPI.Comm) -> FloatArray:
    send = np.ascontiguousarray(a, dtype=np.float64)
    recv = np.empty_like(send)
    comm.Allreduce(send, recv, op=op)
    return recv


def default_scales(
    points: npt.ArrayLike,
    comm: MPI.Comm,
    *,
    delta_min: float | None = None,
    delta_max: float | None = None,
    per_octave: int = 4,
) -> FloatArray:
    """Geometric scales from ``delta_min`` to ``delta_max``, ``per_octave`` per factor 2.

    Defaults: ``delta_min`` = 2 × the mean point spacing ``(volume / n)^(1/d)`` of the bounding
    box, ``delta_max`` = a quarter of the bounding box's diagonal. Collective.
    """
    X = np.asarray(points, dtype=np.float64)
    X = X.reshape(-1, 1) if X.ndim == 1 else X
    lo, hi, n = _global_box(X, comm)
    if n < 2:
        raise ValueError(f"need at least 2 points for a modulus of continuity, got {n}")
    ext = hi - lo
    diam = float(np.linalg.norm(ext))
    if diam == 0.0:
        raise ValueError("all points coincide: no scales to measure on")
    pos = ext[ext > 0]
    spacing = float(np.prod(pos) / n) ** (1.0 / pos.size)
    dmin = 2.0 * spacing if delta_min is None else float(delta_min)
    dmax = 0.25 * diam if delta_max is None else float(delta_max)
    if not (0.0 < dmin < dmax):
        raise ValueError(f"need 0 < delta_min < delta_max, got delta_min={dmin}, delta_max={dmax}")
    if per_octave < 1:
        raise ValueError(f"per_octave must be >= 1, got {per_octave}")
    num = max(2, int(math.ceil(per_octave * math.log2(dmax / dmin))) + 1)
    return np.geomspace(dmin, dmax, num)


# --------------------------------------------------------------------------------------------
# exact: all pairs, chunked, spread over ranks
# --------------------------------------------------------------------------------------------
def _pair_diff(Va: FloatArray, Vb: FloatArray) -> FloatArray:
    if Va.shape[1] == 1:
        return np.abs(Va[:, 0, None] - Vb[None, :, 0])
    D = np.zeros((Va.shape[0], Vb.shape[0]))
    for c in range(Va.shape[1]):
        t = Va[:, c, None] - Vb[None, :, c]
        D += t * t
    return np.sqrt(D)


def _pair_dist2(Xa: FloatArray, Xb: FloatArray) -> FloatArray:
    D = np.zeros((Xa.shape[0], Xb.shape[0]))
    for c in range(Xa.shape[1]):
        t = Xa[:, c, None] - Xb[None, :, c]
        D += t * t
    return D


class _ExactAccumulator:
    """Running maxima over pairs: per distance bin (for ω) and of the seminorm ratio."""

    def __init__(
        self, scales: FloatArray, alpha: float | None, dlo: float, dhi: float, chunk_pairs: int
    ) -> None:
        self.edges2 = np.asarray(scales, dtype=np.float64) ** 2
        self.binmax = np.zeros(self.edges2.size + 1)
        self.alpha = alpha
        self.dlo2 = max(dlo, 0.0) ** 2
        self.dhi2 = dhi**2
        self.semi = 0.0
        self.chunk_pairs = max(1, int(chunk_pairs))

    def block(self, Xa: FloatArray, Va: FloatArray, Xb: FloatArray, Vb: FloatArray) -> None:
        """Account for all pairs (a, b), a in block A, b in block B, in bounded chunks."""
        na, nb = Xa.shape[0], Xb.shape[0]
        if na == 0 or nb == 0:
            return
        cols = min(nb, self.chunk_pairs)
        rows = max(1, self.chunk_pairs // cols)
        for j0 in range(0, nb, cols):
            for i0 in range(0, na, rows):
                self._kernel(
                    Xa[i0 : i0 + rows], Va[i0 : i0 + rows], Xb[j0 : j0 + cols], Vb[j0 : j0 + cols]
                )

    def _kernel(self, Xa: FloatArray, Va: FloatArray, Xb: FloatArray, Vb: FloatArray) -> None:
        d2 = _pair_dist2(Xa, Xb).ravel()
        diff = _pair_diff(Va, Vb).ravel()
        if self.edges2.size:
            near = np.flatnonzero((d2 <= self.edges2[-1]) & (d2 > 0.0))
            if near.size:
                idx = np.searchsorted(self.edges2, d2[near])
                np.maximum.at(self.binmax, idx, diff[near])
        if self.alpha is not None:
            ok = (d2 > 0.0) & (d2 >= self.dlo2) & (d2 <= self.dhi2)
            if np.any(ok):
                r = _ratio(diff[ok], d2[ok], self.alpha)
                self.semi = max(self.semi, float(r.max()))

    def modulus(self) -> FloatArray:
        return np.maximum.accumulate(self.binmax[:-1])


def _ratio(diff: FloatArray, d2: FloatArray, alpha: float) -> FloatArray:
    """``diff / d^alpha`` from squared distances; the one formula both methods use."""
    if alpha == 0.0:
        return diff
    if alpha == 1.0:
        return diff / np.sqrt(d2)
    return diff / np.power(d2, 0.5 * alpha)


def _exact(
    X: FloatArray,
    V: FloatArray,
    comm: MPI.Comm,
    scales: FloatArray,
    alpha: float | None,
    dlo: float,
    dhi: float,
    chunk_pairs: int,
) -> tuple[FloatArray, float]:
    acc = _ExactAccumulator(scales, alpha, dlo, dhi, chunk_pairs)
    n = X.shape[0]
    # own pairs: rows [i0, i1) against columns [i0, n) (the diagonal sub-block twice: harmless)
    rows = max(1, min(n, acc.chunk_pairs // max(n, 1)))
    for i0 in range(0, n, rows):
        acc.block(X[i0 : i0 + rows], V[i0 : i0 + rows], X[i0:], V[i0:])
    P, r = comm.size, comm.rank
    for s in range(1, P // 2 + 1):
        Xo, Vo = comm.sendrecv((X, V), dest=(r + s) % P, source=(r - s) % P)
        if 2 * s == P:
            # partners r and r + P/2 meet twice; each takes half of the pairs
            if r < P // 2:
                h = Xo.shape[0] // 2
                acc.block(X, V, Xo[:h], Vo[:h])
            else:
                h = n // 2
                acc.block(X[h:], V[h:], Xo, Vo)
        else:
            acc.block(X, V, Xo, Vo)
    mod = _allreduce_array(acc.modulus(), MPI.MAX, comm)
    semi = float(comm.allreduce(acc.semi, op=MPI.MAX))
    return mod, semi


# --------------------------------------------------------------------------------------------
# fast: multi-scale branch and bound on a 2^d-tree
# --------------------------------------------------------------------------------------------
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
    child_start: IntArray | None = None
    child_count: IntArray | None = None


class _Tree:
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
            level = _Level(
                start=start,
                count=count,
                lo=np.minimum.reduceat(self.X, start, axis=0),
                hi=np.maximum.reduceat(self.X, start, axis=0),
                vmin=vmin,
                vmax=vmax,
                reps=np.stack(reps, axis=1),
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
    tree: _Tree, lev: _Level, A: IntArray, B: IntArray, dlo2: float, dhi2: float, alpha: float
) -> float:
    best = 0.0
    if A.size == 0:
        return best
    t = lev.count[A] * lev.count[B]
    cuts = np.searchsorted(
        np.cumsum(t), np.arange(1, 1 + int(t.sum()) // _CHUNK_PAIRS) * _CHUNK_PAIRS
    )
    for Ai, Bi in zip(np.split(A, cuts), np.split(B, cuts), strict=True):
        ia, ib = _expand(Ai, Bi, lev.start[Ai], lev.count[Ai], lev.start[Bi], lev.count[Bi])
        best = max(best, _pairs_best(tree, ia, ib, dlo2, dhi2, alpha))
    return best


def _pairs_best(
    tree: _Tree, ia: IntArray, ib: IntArray, dlo2: float, dhi2: float, alpha: float
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
    return float(_ratio(diff[ok], d2[ok], alpha).max())


def _bnb(tree: _Tree, dlo: float, dhi: float, alpha: float, lb0: float, comm: MPI.Comm) -> float:
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
        nrep = lev.reps.shape[1]
        for i in range(nrep):
            for j in range(nrep):
                lb = max(lb, _pairs_best(tree, lev.reps[A, i], lev.reps[B, j], dlo2, dhi2, alpha))
        dv = np.maximum(lev.vmax[A] - lev.vmin[B], lev.vmax[B] - lev.vmin[A])
        ub = np.sqrt(np.einsum("ij,ij->i", dv, dv))
        if tree.m == 1 and alpha == 0.0:
            # a scalar pair of distinct cells inside the window: its best pair is max - min
            full = (A != B) & (dmax2 <= dhi2) & (dmin2 >= dlo2)
            if np.any(full):
                lb = max(lb, float(ub[full].max()))
                ub[full] = 0.0
        if alpha > 0.0:
            ub = ub / np.power(np.maximum(np.maximum(dmin2, dlo2), tiny), 0.5 * alpha)
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


def _gather(X: FloatArray, V: FloatArray, comm: MPI.Comm) -> tuple[FloatArray, FloatArray]:
    if comm.size == 1:
        return X, V
    Xs = comm.allgather(X)
    Vs = comm.allgather(V)
    return np.concatenate(Xs, axis=0), np.concatenate(Vs, axis=0)


def _fast_modulus(tree: _Tree, scales: FloatArray, comm: MPI.Comm) -> FloatArray:
    out = np.zeros(scales.size)
    lb = 0.0
    for j, delta in enumerate(scales):
        # ω is non-decreasing: the previous scale's value is a valid lower bound
        lb = _bnb(tree, 0.0, float(delta), 0.0, lb, comm)
        out[j] = lb
    return out


# --------------------------------------------------------------------------------------------
# public estimators
# --------------------------------------------------------------------------------------------
def _check_scales(scales: npt.ArrayLike) -> FloatArray:
    s = np.asarray(scales, dtype=np.float64).ravel()
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0) or np.any(np.diff(s) <= 0):
        raise ValueError(f"scales must be positive, finite and strictly increasing, got {s}")
    return s


def modulus(
    points: npt.ArrayLike,
    values: npt.ArrayLike,
    comm: MPI.Comm,
    scales: npt.ArrayLike,
    *,
    method: Method = "fast",
    chunk_pairs: int = _CHUNK_PAIRS,
) -> FloatArray:
    """Modulus of continuity ``ω(δ) = max_{0 < |x−y| ≤ δ} |g(x) − g(y)|`` at each scale.

    Args:
        points: Rank-local points, shape ``(n_local, d)``.
        values: Rank-local values, shape ``(n_local,)`` or ``(n_local, m)``.
        comm: The communicator the points are distributed over.
        scales: Strictly increasing positive scales ``δ``.
        method: ``"exact"`` (all pairs) or ``"fast"`` (branch and bound, same numbers).
        chunk_pairs: Pairs per chunk of the exact method (memory bound).

    Returns:
        ``ω`` at ``scales``, the same on every rank. Collective.
    """
    _check_method(method)
    s = _check_scales(scales)
    X, V = _prepare(points, values, comm)
    if method == "exact":
        return _exact(X, V, comm, s, None, 0.0, np.inf, chunk_pairs)[0]
    Xg, Vg = _gather(X, V, comm)
    if Xg.shape[0] < 2:
        return np.zeros(s.size)
    return _fast_modulus(_Tree(Xg, Vg), s, comm)


def seminorm(
    points: npt.ArrayLike,
    values: npt.ArrayLike,
    comm: MPI.Comm,
    alpha: float,
    *,
    delta_min: float = 0.0,
    delta_max: float | None = None,
    method: Method = "fast",
    chunk_pairs: int = _CHUNK_PAIRS,
) -> float:
    """Hölder seminorm ``max |g(x) − g(y)| / |x − y|^α`` over ``delta_min <= |x−y| <= delta_max``.

    ``delta_min`` is the lower end of the scale window: for a finite-element field pass a few
    mesh sizes so that the field between nodes is not what is measured. ``delta_max=None`` puts
    no upper limit. Pairs at distance 0 never count. Collective; the same number on every rank.
    """
    _check_method(method)
    a = _check_alpha(alpha)
    dhi = np.inf if delta_max is None else float(delta_max)
    if not (0.0 <= delta_min <= dhi):
        raise ValueError(f"need 0 <= delta_min <= delta_max, got {delta_min}, {delta_max}")
    X, V = _prepare(points, values, comm)
    if method == "exact":
        return _exact(X, V, comm, np.zeros(0), a, float(delta_min), dhi, chunk_pairs)[1]
    Xg, Vg = _gather(X, V, comm)
    if Xg.shape[0] < 2:
        return 0.0
    return _bnb(_Tree(Xg, Vg), float(delta_min), dhi, a, 0.0, comm)


def fit_exponent(
    scales: npt.ArrayLike,
    omega: npt.ArrayLike,
    *,
    delta_min: float | None = None,
    delta_max: float | None = None,
    increments: bool = False,
) -> Exponent:
    """Slope of ``log ω`` against ``log δ`` on ``[delta_min, delta_max]``, with a band.

    With ``increments=True`` the slope is that of ``log(ω(δ') − ω(δ))`` with ``δ'`` the first
    scale ``≥ 2δ`` (both in the window). For ``ω(δ) = C δ^α + B`` it is ``α`` whatever the
    offset ``B``. A finite-element field smooths a cusp over a cell, which lowers ``ω`` by about
    ``C h^α`` at every scale (``B < 0``): the plain slope then overestimates ``α`` (by a factor
    ``1 / (1 − c (h/δ)^α)``), the increment slope does not. A jump (``B > 0``) is invisible to
    increments, so the plain slope is the default.

    The estimate is the least-squares slope over the scales of the window. The band is the range
    of the local slopes, each from a scale ``δ`` to the first scale ``≥ 2δ`` (consecutive scales
    if the window spans less than an octave), widened to contain the estimate. Scales where
    ``ω = 0`` are left out. Fewer than two usable scales give ``nan`` (e.g. a constant field).
    Not collective (pure function of its arguments).
    """
    s = np.asarray(scales, dtype=np.float64).ravel()
    w = np.asarray(omega, dtype=np.float64).ravel()
    if s.shape != w.shape:
        raise ValueError(f"scales and omega differ in shape: {s.shape} != {w.shape}")
    sel = (s > 0) & (w > 0) & np.isfinite(w)
    if delta_min is not None:
        sel &= s >= delta_min * (1 - 1e-12)
    if delta_max is not None:
        sel &= s <= delta_max * (1 + 1e-12)
    if increments:
        s, w = s[sel], w[sel]
        j = np.searchsorted(s, 2.0 * s * (1 - 1e-9))
        ok = j < s.size
        inc = w[j[ok]] - w[ok]
        s, w = s[ok][inc > 0], inc[inc > 0]
        sel = np.ones(s.size, dtype=bool)
    x, y = np.log(s[sel]), np.log(w[sel])
    if x.size < 2 or np.ptp(x) == 0:
        return Exponent(math.nan, math.nan, math.nan)
    slope = float(np.polyfit(x, y, 1)[0])
    local = []
    for i in range(x.size - 1):
        nxt = int(np.searchsorted(x, x[i] + math.log(2.0) * (1 - 1e-9)))
        if nxt >= x.size:
            break
        local.append((y[nxt] - y[i]) / (x[nxt] - x[i]))
    if not local:
        local = list(np.diff(y) / np.diff(x))
    return Exponent(slope, float(min(min(local), slope)), float(max(max(local), slope)))


def estimate(
    points: npt.ArrayLike,
    values: npt.ArrayLike,
    comm: MPI.Comm,
    *,
    alpha: float | Literal["auto"] = "auto",
    scales: npt.ArrayLike | None = None,
    delta_min: float | None = None,
    delta_max: float | None = None,
    seminorm_max: float | None = None,
    method: Method = "fast",
    per_octave: int = 4,
    chunk_pairs: int = _CHUNK_PAIRS,
) -> HolderResult:
    """Sup norm, modulus of continuity, fitted exponent and Hölder seminorm of point data.

    Args:
        points: Rank-local points ``(n_local, d)``.
        values: Rank-local values ``(n_local,)`` or ``(n_local, m)``.
        comm: Communicator.
        alpha: Seminorm exponent in ``[0, 1]``, or ``"auto"``: the fitted exponent (clipped to
            ``[0, 1]``; ``1`` for a constant field).
        scales: Scales of the modulus; default :func:`default_scales` on the window.
        delta_min: Window's lower end (fit and seminorm); default from :func:`default_scales`
            (2 point spacings); FE callers pass a few mesh sizes.
        delta_max: Window's upper end for the fit; default a quarter of the diameter.
        seminorm_max: Upper distance limit of the seminorm; default none (all pairs above
            ``delta_min``).
        method: ``"exact"`` or ``"fast"``.
        per_octave: Scales per factor 2 for the default scales.
        chunk_pairs: Pairs per chunk of the exact method.

    Returns:
        A :class:`HolderResult`, the same on every rank. Collective.
    """
    _check_method(method)
    X, V = _prepare(points, values, comm)
    if scales is None:
        s = default_scales(X, comm, delta_min=delta_min, delta_max=delta_max, per_octave=per_octave)
    else:
        s = _check_scales(scales)
    dmin = float(s[0]) if delta_min is None else float(delta_min)
    dmax = float(s[-1]) if delta_max is None else float(delta_max)
    smax = np.inf if seminorm_max is None else float(seminorm_max)
    fixed = None if alpha == "auto" else _check_alpha(alpha)  # type: ignore[arg-type]
    if alpha != "auto" and not isinstance(alpha, int | float):
        raise ValueError(f"alpha must be a number in [0, 1] or 'auto', got {alpha!r}")
    n = int(comm.allreduce(X.shape[0], op=MPI.SUM))
    tree: _Tree | None = None
    if method == "exact":
        omega, semi = _exact(X, V, comm, s, fixed, dmin, smax, chunk_pairs)
    else:
        Xg, Vg = _gather(X, V, comm)
        tree = _Tree(Xg, Vg) if n >= 2 else None
        omega = _fast_modulus(tree, s, comm) if tree is not None else np.zeros(s.size)
        semi = 0.0
    expo = fit_exponent(s, omega, delta_min=dmin, delta_max=dmax)
    if fixed is None:
        a = 1.0 if math.isnan(expo.estimate) else float(np.clip(expo.estimate, 0.0, 1.0))
    else:
        a = fixed
    if method == "exact":
        if fixed is None:
            semi = _exact(X, V, comm, np.zeros(0), a, dmin, smax, chunk_pairs)[1]
    elif tree is not None:
        semi = _bnb(tree, dmin, smax, a, 0.0, comm)
    return HolderResult(
        sup=sup_norm(V, comm),
        alpha=a,
        seminorm=float(semi),
        scales=s,
        modulus=np.asarray(omega, dtype=np.float64),
        exponent=expo,
        delta_min=dmin,
        delta_max=dmax,
        seminorm_max=smax,
        exponent_increment=fit_exponent(s, omega, delta_min=dmin, delta_max=dmax, increments=True),
        method=method,
        n_points=n,
    )


# --------------------------------------------------------------------------------------------
# finite-element fields: derivatives by recovery, C^{k,α} norms
# --------------------------------------------------------------------------------------------
FieldName = Literal["potential", "flux", "velocity"]
FIELDS: tuple[str, ...] = ("potential", "flux", "velocity")


def _project(expr: Any, W: Any, degree: int) -> Any:
    """L2 projection of a UFL expression into the continuous space ``W``; collective."""
    from beckmann._dolfinx import fem, ufl

    u, v = ufl.TrialFunction(W), ufl.TestFunction(W)
    dx = ufl.dx(metadata={"quadrature_degree": 2 * degree + 2})
    problem = fem.petsc.LinearProblem(
        ufl.inner(u, v) * dx,
        ufl.inner(expr, v) * dx,
        petsc_options_prefix=f"beckmann_holder_project_{id(W)}_",
        petsc_options={
            "ksp_type": "cg",
            "pc_type": "jacobi",
            "ksp_rtol": 1e-13,
            "ksp_atol": 1e-300,
            "ksp_max_it": 2000,
            "ksp_error_if_not_converged": True,
        },
    )
    try:
        uh = problem.solve()
    except Exception as err:  # PETSc errors are not ValueError/RuntimeError
        raise RuntimeError(f"the L2 projection for gradient recovery failed: {err}") from err
    assert isinstance(uh, fem.Function)
    uh.x.scatter_forward()
    for obj in (problem.solver, problem.A, problem.b):
        obj.destroy()
    return uh


def recover_derivatives(u: Any, k: int, *, msh: Any = None, degree: int | None = None) -> list[Any]:
    """Continuous Lagrange functions ``[u, Du, …, D^k u]`` of a field; collective.

    How derivatives are obtained (the FE space represents ``u`` continuously, ``Du`` only
    piecewise): ``D^0`` is ``u`` itself if it is a continuous Lagrange function, else its L2
    projection into continuous Lagrange of degree ``degree``; then ``D^j = Π ∇(D^{j−1})`` with
    ``Π`` the L2 projection into continuous (tensor-valued) Lagrange of degree ``degree``
    (gradient recovery by projection, applied ``j`` times). ``degree`` defaults to the degree of
    ``u``'s space (at least 1). Recovery smooths on the scale of the mesh size ``h``, which is
    why the estimators measure only above a few ``h``; derivatives beyond the FE degree are
    recovered the same way and are meaningful on scales ``≫ h`` only.

    Args:
        u: A ``fem.Function``, a UFL expression on a mesh, or a callable ``f(x) -> values`` with
            ``x`` of shape ``(d, n)`` (as for ``Function.interpolate``; needs ``msh``).
        k: Highest derivative order, ``>= 0``.
        msh: The mesh, for callables.
        degree: Lagrange degree of the recovery spaces.
    """
    from beckmann._dolfinx import fem, ufl

    if int(k) != k or k < 0:
        raise ValueError(f"derivative order k must be an integer >= 0, got {k!r}")
    if isinstance(u, fem.Function):
        msh = u.function_space.mesh
        q = degree or max(1, int(u.function_space.ufl_element().embedded_superdegree))
        shape = tuple(u.ufl_shape)
        el = u.function_space.ufl_element()
        if (not el.discontinuous) and int(el.embedded_superdegree) == q and el.embedded_subdegree:
            w0 = u
        else:
            w0 = _project(
                u, fem.functionspace(msh, ("Lagrange", q, shape) if shape else ("Lagrange", q)), q
            )
    elif callable(u) and not isinstance(u, ufl.core.expr.Expr):
        if msh is None:
            raise ValueError("a callable field needs the mesh (msh=...)")
        q = degree or 2
        probe = np.asarray(u(np.zeros((3, 1))))
        shape = tuple(probe.shape[:-1]) if probe.ndim > 1 else ()
        W0 = fem.functionspace(msh, ("Lagrange", q, shape) if shape else ("Lagrange", q))
        w0 = fem.Function(W0)
        w0.interpolate(u)
        w0.x.scatter_forward()
    else:
        if msh is None:
            from ufl.domain import extract_unique_domain

            dom = extract_unique_domain(u)
            msh = getattr(dom, "ufl_cargo", lambda: None)()
            if msh is None:
                raise ValueError("cannot find the mesh of this UFL expression; pass msh=...")
        q = degree or 2
        shape = tuple(u.ufl_shape)
        W0 = fem.functionspace(msh, ("Lagrange", q, shape) if shape else ("Lagrange", q))
        w0 = _project(u, W0, q)
    d = int(msh.geometry.dim)
    out = [w0]
    for j in range(1, int(k) + 1):
        Wj = fem.functionspace(msh, ("Lagrange", q, shape + (d,) * j))
        out.append(_project(ufl.grad(out[-1]), Wj, q))
    return out


def _nodal(w: Any) -> tuple[FloatArray, FloatArray]:
    """Owned DOF coordinates ``(n, d)`` and values ``(n, bs)`` of a continuous Lagrange function."""
    V = w.function_space
    n = V.dofmap.index_map.size_local
    bs = V.dofmap.index_map_bs
    d = V.mesh.geometry.dim
    X = V.tabulate_dof_coordinates()[:n, :d]
    return np.ascontiguousarray(X), np.ascontiguousarray(w.x.array[: n * bs].reshape(n, bs))


def _interior_mask(w: Any, margin: float) -> npt.NDArray[np.bool_]:
    """Owned nodes of ``w``'s space at distance ``>= margin`` from the boundary; collective."""
    from scipy.spatial import cKDTree

    from beckmann._dolfinx import dmesh

    msh = w.function_space.mesh
    comm = msh.comm
    d = msh.geometry.dim
    tdim = msh.topology.dim
    msh.topology.create_connectivity(tdim - 1, tdim)
    msh.topology.create_connectivity(0, tdim)
    facets = dmesh.exterior_facet_indices(msh.topology)
    verts = dmesh.compute_incident_entities(msh.topology, facets, tdim - 1, 0)
    xb = dmesh.entities_to_geometry(msh, 0, verts).ravel()
    local = msh.geometry.x[np.unique(xb), :d]
    allb = np.concatenate(comm.allgather(local), axis=0)
    X, _ = _nodal(w)
    if allb.shape[0] == 0:
        return np.ones(X.shape[0], dtype=bool)
    dist, _ = cKDTree(allb).query(X)
    return np.asarray(dist >= margin)


def _multi_indices(value_size: int, d: int, j: int) -> list[tuple[tuple[int, ...], IntArray]]:
    """Multi-indices ``β`` with ``|β| = j`` and their value columns.

    ``β`` is a sorted index tuple; the columns pick ``D^β u`` (one per value component) out of the
    flattened ``(value_size, d, …, d)`` tensor of ``D^j u``.
    """
    import itertools

    out = []
    for t in itertools.product(range(d), repeat=j):
        if list(t) != sorted(t):
            continue
        cols = np.array(
            [c * d**j + (np.ravel_multi_index(t, (d,) * j) if j else 0) for c in range(value_size)],
            dtype=np.int64,
        )
        out.append((t, cols))
    return out


def field_norms(
    u: Any,
    k: int = 0,
    alpha: float | Literal["auto"] = "auto",
    *,
    msh: Any = None,
    degree: int | None = None,
    method: Method = "fast",
    delta_min: float | None = None,
    delta_max: float | None = None,
    h_factor: float = 2.0,
    per_octave: int = 4,
    margin: float = 0.0,
    name: str = "field",
) -> dict[str, Any]:
    """``C^{k,α}`` estimates of a finite-element field; collective.

    Derivatives come from :func:`recover_derivatives` (repeated L2 gradient recovery into
    continuous Lagrange); every estimator is evaluated at the owned nodes of those spaces, so the
    point cloud is distributed like the mesh. The scale window is ``[delta_min, delta_max]`` with
    default ``delta_min = h_factor · h`` (``h`` the largest cell diameter) and ``delta_max`` a
    quarter of the domain's diameter: below a few ``h`` the discrete field is measured.

    ``margin > 0`` keeps only the nodes at least ``margin`` away from the boundary (distance to
    the nearest boundary vertex): interior estimates. Recovered derivatives are least accurate
    at the boundary (one-sided projection, and the corners of a polygonal approximation of a
    curved boundary), which matters for ``k >= 2``; the global norm of MATH.md §3 is
    ``margin = 0``, the default.

    Returns:
        A dict with ``field``, ``k``, ``alpha``, ``h``, ``sup_norms`` (``[Σ_{|β|=j} sup|D^β u|
        for j = 0..k]``), ``sup_tensor`` (``[sup |D^j u|]``, Frobenius norm), ``seminorm``
        (``Σ_{|β|=k} [D^β u]_α``, pairs ``≥ delta_min`` apart), ``seminorms`` (per ``β``),
        ``norm`` (``Σ sup_norms + seminorm``, the ``C^{k,α}`` norm of MATH.md §3), ``exponent``
        (fitted on ``ω`` of the whole tensor ``D^k u``), ``scales``, ``modulus``, ``delta_min``,
        ``delta_max``, ``method``, ``n_points``. ``alpha="auto"`` uses the fitted exponent,
        clipped to ``[0, 1]``.
    """
    from beckmann import mesh as bmesh

    _check_method(method)
    ws = recover_derivatives(u, k, msh=msh, degree=degree)
    msh = ws[0].function_space.mesh
    comm = msh.comm
    info = bmesh.describe(msh)
    h = float(info["hmax"])
    diam = float(np.linalg.norm(np.subtract(info["bbox"][1], info["bbox"][0])))
    dmin = h_factor * h if delta_min is None else float(delta_min)
    dmax = 0.25 * diam if delta_max is None else float(delta_max)
    if not (0.0 < dmin < dmax):
        raise ValueError(
            f"empty scale window: delta_min={dmin:g} >= delta_max={dmax:g}; the mesh is too "
            "coarse for this window (refine it, or lower h_factor / raise delta_max)"
        )
    value_size = int(np.prod(ws[0].ufl_shape)) if ws[0].ufl_shape else 1
    d = int(msh.geometry.dim)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    keep = _interior_mask(ws[0], margin) if margin > 0 else None
    sup_norms, sup_tensor = [], []
    for j, w in enumerate(ws):
        _, vals = _nodal(w)
        if keep is not None:
            vals = vals[keep]
        sup_tensor.append(sup_norm(vals, comm))
        sup_norms.append(
            float(
                sum(sup_norm(vals[:, cols], comm) for _, cols in _multi_indices(value_size, d, j))
            )
        )
    X, top = _nodal(ws[-1])
    if keep is not None:
        X, top = X[keep], top[keep]
    betas = _multi_indices(value_size, d, int(k))
    cols_all = np.concatenate([c for _, c in betas])
    top_unique = top[:, cols_all]
    res = estimate(
        X,
        top_unique,
        comm,
        alpha=alpha,
        delta_min=dmin,
        delta_max=dmax,
        method=method,
        per_octave=per_octave,
    )
    seminorms = {
        "".join(str(i) for i in t) or "0": seminorm(
            X, top[:, cols], comm, res.alpha, delta_min=dmin, method=method
        )
        for t, cols in betas
    }
    semi = float(sum(seminorms.values()))
    return {
        "field": name,
        "k": int(k),
        "alpha": res.alpha,
        "h": h,
        "sup_norms": sup_norms,
        "sup_tensor": sup_tensor,
        "seminorm": semi,
        "seminorms": seminorms,
        "seminorm_tensor": res.seminorm,
        "norm": float(sum(sup_norms) + semi),
        "exponent": asdict(res.exponent),
        "exponent_increment": asdict(res.exponent_increment),
        "scales": [float(s) for s in res.scales],
        "modulus": [float(w) for w in res.modulus],
        "delta_min": dmin,
        "delta_max": dmax,
        "margin": float(margin),
        "method": method,
        "n_points": res.n_points,
    }


def solution_field(sol: Any, field_name: str, t: float = 0.0) -> Any:
    """The UFL expression (or function) of a solution's ``potential``, ``flux`` or ``velocity``."""
    from beckmann._dolfinx import ufl
    from beckmann.fields import velocity_expression

    if field_name == "potential":
        return sol.phi
    if field_name == "flux":
        return ufl.grad(sol.phi)
    if field_name == "velocity":
        if not 0.0 <= float(t) <= 1.0:
            raise ValueError(f"time t must lie in [0, 1], got {t!r}")
        return velocity_expression(ufl.grad(sol.phi), sol.p0, sol.p1, float(t))
    raise ValueError(f"unknown field {field_name!r}; choose one of {', '.join(FIELDS)}")


def solution_norms(
    sol: Any,
    field_name: str = "potential",
    k: int = 0,
    alpha: float | Literal["auto"] = "auto",
    *,
    t: float = 0.0,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`field_norms` of a solution's field, recovered in the potential's degree; collective.

    ``flux`` and ``velocity`` are projected into continuous vector Lagrange of the potential's
    degree first, then differentiated by recovery like any field.
    """
    expr = solution_field(sol, field_name, t)
    kwargs.setdefault("degree", int(sol.degree))
    out = field_norms(expr, k, alpha, msh=sol.msh, name=field_name, **kwargs)
    if field_name == "velocity":
        out["time"] = float(t)
    return out


# --------------------------------------------------------------------------------------------
# command line: beckmann holder DIR
# --------------------------------------------------------------------------------------------
def _parse_alpha(text: str) -> float | Literal["auto"]:
    if text == "auto":
        return "auto"
    try:
        a = float(text)
    except ValueError as err:
        raise ValueError(f"--alpha must be a number in [0, 1] or 'auto', got {text!r}") from err
    return _check_alpha(a)


def plot_modulus(result: dict[str, Any], path: str) -> None:
    """Write ``log ω`` against ``log δ`` with the fitted slope to ``path`` (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.asarray(result["scales"])
    w = np.asarray(result["modulus"])
    e = result["exponent"]
    fig, ax = plt.subplots(figsize=(5, 4))
    ok = w > 0
    ax.loglog(s[ok], w[ok], "o-", label=rf"$\omega(\delta)$ of $D^{{{result['k']}}}u$")
    win = (s >= result["delta_min"] * (1 - 1e-12)) & (s <= result["delta_max"] * (1 + 1e-12)) & ok
    if np.any(win) and math.isfinite(e["estimate"]):
        sw = s[win]
        x0, y0 = np.log(sw).mean(), np.log(w[win]).mean()
        for slope, style, lab in (
            (e["estimate"], "-", f"slope {e['estimate']:.3f}"),
            (e["low"], ":", f"band [{e['low']:.3f}, {e['high']:.3f}]"),
            (e["high"], ":", None),
        ):
            ax.loglog(sw, np.exp(y0 + slope * (np.log(sw) - x0)), "k" + style, lw=1, label=lab)
    ax.axvline(result["delta_min"], color="0.6", lw=0.8)
    ax.set_xlabel(r"$\delta$")
    ax.set_ylabel(r"$\omega(\delta)$")
    ax.set_title(f"{result['field']}: k={result['k']}, h={result['h']:.3g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as err:
        raise RuntimeError(f"cannot write the plot {path!r}: {err}") from err
    finally:
        plt.close(fig)


def _cli_holder(args: Any, comm: MPI.Comm) -> int:
    """``beckmann holder DIR``: Hölder estimates of a stored field, JSON on rank 0."""
    import json

    from beckmann import io

    alpha = _parse_alpha(args.alpha)
    if args.k < 0:
        raise ValueError(f"--k must be >= 0, got {args.k}")
    if args.time != 0.0 and args.field != "velocity":
        raise ValueError("--time applies to --field velocity only")
    sol = io.load_run(args.dir, comm)
    kwargs: dict[str, Any] = {"method": args.method, "margin": args.margin}
    if args.delta_min is not None:
        kwargs["delta_min"] = args.delta_min
    if args.delta_max is not None:
        kwargs["delta_max"] = args.delta_max
    result = solution_norms(sol, args.field, args.k, alpha, t=args.time, **kwargs)
    result["run"] = str(args.dir)
    text = json.dumps(result, indent=2)
    if comm.rank == 0:
        if args.json_out:
            try:
                with open(args.json_out, "w") as f:
                    f.write(text + "\n")
            except OSError as err:
                err_msg: str | None = f"cannot write {args.json_out!r}: {err.strerror}"
            else:
                err_msg = None
        else:
            err_msg = None
        if err_msg is None and args.plot:
            try:
                plot_modulus(result, args.plot)
            except RuntimeError as err:
                err_msg = str(err)
    else:
        err_msg = None
    err_msg = comm.bcast(err_msg, root=0)
    if err_msg:
        raise RuntimeError(err_msg)
    if comm.rank == 0:
        print(text)
    return 0


def register_cli(subparsers: Any) -> None:
    """Add the ``holder`` subcommand to the ``beckmann`` command line."""
    p = subparsers.add_parser(
        "holder",
        help="Hölder norms, modulus of continuity and exponent of a stored field",
        description=(
            "Estimate sup norms of D^j u (j <= k), the seminorm [D^k u]_alpha, the C^{k,alpha} "
            "norm, the modulus of continuity and its fitted exponent for a field of a run "
            "folder, on scales above twice the mesh size. Prints JSON (rank 0)."
        ),
    )
    p.add_argument("dir", help="run folder written by `beckmann solve`")
    p.add_argument("--field", choices=FIELDS, default="potential", help="field to measure")
    p.add_argument("--time", type=float, default=0.0, help="time t of the velocity")
    p.add_argument("--k", type=int, default=0, help="derivative order k of C^{k,alpha}")
    p.add_argument("--alpha", default="auto", help="Hölder exponent in [0, 1] or 'auto'")
    p.add_argument("--method", choices=("exact", "fast"), default="fast", help="algorithm")
    p.add_argument("--delta-min", type=float, default=None, help="window start (default 2h)")
    p.add_argument("--delta-max", type=float, default=None, help="window end (default diameter/4)")
    p.add_argument(
        "--margin", type=float, default=0.0, help="only nodes this far from the boundary"
    )
    p.add_argument("--json-out", default="", help="also write the JSON to this file")
    p.add_argument("--plot", default="", help="write log ω vs log δ to this PNG")
    p.set_defaults(func=_cli_holder)
