"""Mean oscillation (Campanato) moduli of point data: the headline exponent of FE fields.

For a field ``g`` sampled at points ``x_i`` and a scale ``s``,

    osc(s) = max_Q ( mean_{x_i ∈ Q} |g(x_i) − P_Q(x_i)|² )^½

over the axis-aligned cubes ``Q`` of side ``s`` (placed on a grid of step ``b``, so every
placement up to ``b`` is tried), ``P_Q`` the least-squares affine fit of ``g`` on the points in
``Q`` (vector values: per component, Euclidean norm). Campanato's theorem: ``osc(s) <= C s^β``
characterises ``C^{0,β}`` for ``0 < β < 1`` and ``C^{1,β−1}`` for ``1 < β < 2``. Against the
modulus of continuity ``ω`` this has two advantages at finite resolution (docs/holder.md):

- the affine part of a field is removed in every cube, so the smooth part of, e.g., ``D²φ``
  next to a cusp leaves ``O(s²)`` instead of a Lipschitz ``L δ`` that pulls ``ω``'s slope
  toward 1;
- the mean over a cube dilutes the few cells where the discretisation smooths a cusp, which
  shifts ``ω`` by an offset ``≈ C h^α`` at every scale.

The cube sums of ``1, y, y yᵀ, g, y gᵀ, |g|²`` come from summed-area tables of the points
binned on the grid of step ``b``: ``O(bins)`` work per scale whatever its size. Cubes that hold
fewer than ``MIN_FILL`` of the points a full cube would hold (outside the domain) are skipped.

Collective: the points are gathered on every rank and sorted, so every rank computes the same
numbers in the same order (bit for bit the same for every partition of the same cloud).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann.holder.fit import Exponent, fit_exponent
from beckmann.holder.multiscale import gather, solve_spd

__all__ = [
    "BINS_PER_SCALE",
    "MAX_BINS",
    "MIN_FILL",
    "oscillation",
    "oscillation_exponent",
]

FloatArray = npt.NDArray[np.float64]

#: Grid steps per smallest cube side: cube placements are tried every ``s_min / BINS_PER_SCALE``.
BINS_PER_SCALE = 8

#: Upper bound on the number of grid bins (the step grows beyond it; 3-d clouds).
MAX_BINS = 4_000_000

#: A cube counts when it holds at least this fraction of the points of a full cube.
MIN_FILL = 0.25

#: Below this fraction of the field's size the oscillation is rounding (the summed-area tables
#: and the square root lose about half of the digits): such scales are left out of the fit, and
#: a field below it at every scale of the window is affine there.
AFFINE_TOL = 1e-6


def _moments(Y: FloatArray, V: FloatArray) -> FloatArray:
    """Per point: ``1, y (d), y_i y_j (i <= j), g (m), y_i g_k (d m), |g|²``."""
    n, d = Y.shape
    cols = [np.ones(n)] + [Y[:, i] for i in range(d)]
    cols += [Y[:, i] * Y[:, j] for i in range(d) for j in range(i, d)]
    cols += [V[:, k] for k in range(V.shape[1])]
    cols += [Y[:, i] * V[:, k] for i in range(d) for k in range(V.shape[1])]
    cols.append(np.einsum("ij,ij->i", V, V))
    return np.stack(cols, axis=1)


def _residuals(S: FloatArray, d: int, m: int) -> FloatArray:
    """Mean squared residual of the affine least-squares fit from cube sums ``S`` (rows)."""
    # one transposed copy: every column below is read contiguously (the values are the same)
    ST = np.ascontiguousarray(S.T)
    w = S.shape[0]
    cnt = ST[0]
    my = [ST[1 + i] / cnt for i in range(d)]
    k = 1 + d
    C = np.empty((w, d, d))
    for i in range(d):
        for j in range(i, d):
            C[:, i, j] = C[:, j, i] = ST[k] / cnt - my[i] * my[j]
            k += 1
    mg = np.empty((w, m))
    for c in range(m):
        mg[:, c] = ST[k + c] / cnt
    k += m
    Cyg = np.empty((w, d, m))
    for i in range(d):
        for c in range(m):
            Cyg[:, i, c] = ST[k + i * m + c] / cnt - my[i] * mg[:, c]
    k += d * m
    var = ST[k] / cnt - np.einsum("wk,wk->w", mg, mg)
    # the affine fit's explained variance tr(Cygᵀ C⁻¹ Cyg); a degenerate cube (points on a
    # line) explains what its pseudo-inverse can
    scale = np.maximum(np.einsum("wii->w", C) / d, np.finfo(np.float64).tiny)
    Cn = C / scale[:, None, None] + 1e-12 * np.eye(d)
    coef = solve_spd(Cn, Cyg) / scale[:, None, None]
    explained = np.einsum("wim,wim->w", coef, Cyg)
    return np.maximum(var - explained, 0.0)


def oscillation(
    points: npt.ArrayLike,
    values: npt.ArrayLike,
    comm: MPI.Comm,
    scales: npt.ArrayLike,
    *,
    bins_per_scale: int = BINS_PER_SCALE,
    weights: npt.ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """``(sides, osc)``: the mean oscillation at the cube sides nearest to ``scales``.

    The sides are multiples of the grid step ``b = scales[0] / bins_per_scale`` (or larger, see
    :data:`MAX_BINS`), duplicates removed. ``osc`` is ``nan`` at a side where no cube is full
    enough (a side larger than the cloud). Collective; the same on every rank.
    """
    X = np.asarray(points, dtype=np.float64)
    V = np.asarray(values, dtype=np.float64)
    X = X.reshape(X.shape[0], -1)
    V = V.reshape(V.shape[0], -1)
    W = np.ones(X.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    X, VW = gather(X, np.c_[V, W], comm)
    V, W = VW[:, :-1], VW[:, -1]
    s = np.asarray(scales, dtype=np.float64).ravel()
    n, d = X.shape
    m = V.shape[1]
    if n < d + 2:
        return s, np.full(s.size, math.nan)
    order = np.lexsort(X.T[::-1])
    X, V, W = np.take(X, order, axis=0), np.take(V, order, axis=0), W[order]
    lo, hi = X.min(axis=0), X.max(axis=0)
    # remove the global affine fit first: it changes no cube's residual, and smaller values
    # lose fewer digits in the summed-area tables
    A = np.c_[np.ones(n), X - lo]
    sw = np.sqrt(W)[:, None]
    V = V - A @ np.linalg.lstsq(A * sw, V * sw, rcond=None)[0]
    ext = np.maximum(hi - lo, 0.0)
    b = float(s[0]) / int(bins_per_scale)
    pos = ext[ext > 0]
    if pos.size and np.prod(np.ceil(pos / b) + 1) > MAX_BINS:
        b = float((np.prod(pos) / MAX_BINS) ** (1.0 / pos.size)) * 1.05
    nb = np.ceil(ext / b).astype(np.int64) + 1
    idx = np.minimum(((X - lo) / b).astype(np.int64), nb - 1)
    flat = np.ravel_multi_index(tuple(idx.T), tuple(nb))
    mom = _moments(X - lo, V) * W[:, None]
    nbins = int(np.prod(nb))
    T = np.stack([np.bincount(flat, weights=c, minlength=nbins) for c in mom.T], axis=-1)
    # the cube's count: points (unweighted) for the fill test, weight for the means
    C = np.bincount(flat, minlength=nbins).astype(np.float64).reshape(*nb)
    for ax in range(d):
        C = np.cumsum(C, axis=ax)
    C = np.pad(C, [(1, 0)] * d)
    T = T.reshape(*nb, mom.shape[1])
    for ax in range(d):
        T = np.cumsum(T, axis=ax)
    T = np.pad(T, [(1, 0)] * d + [(0, 0)])
    volume = float(np.prod(pos)) if pos.size else 1.0
    density = n / volume
    widths = np.unique(np.maximum(1, np.rint(s / b).astype(np.int64)))
    sides = widths * b
    osc = np.full(widths.size, math.nan)
    for i, w in enumerate(widths):
        if np.any(w > nb):
            continue
        # inclusion-exclusion over the cube's corners, summed in corner order
        S: FloatArray | None = None
        N: FloatArray | None = None
        for corner in itertools.product((0, 1), repeat=d):
            sl = tuple(
                slice(w, None) if c else slice(0, T.shape[a] - w) for a, c in enumerate(corner)
            )
            plus = (d - sum(corner)) % 2 == 0
            tS, tN = T[sl + (slice(None),)], C[sl]
            if S is None or N is None:
                S, N = (tS.copy(), tN.copy()) if plus else (-tS, -tN)
            elif plus:
                S += tS
                N += tN
            else:
                S -= tS
                N -= tN
        assert S is not None and N is not None
        full = density * float(sides[i]) ** pos.size
        enough = N.ravel() >= max(d + 2.0, MIN_FILL * full) - 0.5
        S = np.compress(enough, S.reshape(-1, mom.shape[1]), axis=0)
        if S.shape[0]:
            osc[i] = float(np.sqrt(_residuals(S, d, m).max()))
    return sides, osc


def oscillation_exponent(
    sides: npt.ArrayLike,
    osc: npt.ArrayLike,
    size: float,
    delta_min: float,
    delta_max: float,
) -> tuple[Exponent, Exponent]:
    """``(raw, headline)`` exponents of a mean-oscillation modulus on ``[delta_min, delta_max]``.

    ``raw`` is the least-squares slope of ``log osc`` against ``log s`` with the band of its
    octave-local slopes (:func:`beckmann.holder.fit.fit_exponent`): the Campanato regularity
    index, above 1 for a ``C^{1,β}`` field. ``headline`` clips it to 1, the largest Hölder
    exponent. Scales where the oscillation is rounding (below ``AFFINE_TOL · size``,
    ``size`` e.g. the sup norm) are left out; a field below it on the whole window is affine
    there: headline 1, raw ``nan``. Not collective.
    """
    s = np.asarray(sides, dtype=np.float64)
    w = np.asarray(osc, dtype=np.float64)
    win = (s >= delta_min * (1 - 1e-9)) & (s <= delta_max * (1 + 1e-9)) & np.isfinite(w)
    nan = Exponent(math.nan, math.nan, math.nan)
    if np.count_nonzero(win) < 2:
        return nan, nan
    floor = AFFINE_TOL * max(float(size), np.finfo(np.float64).tiny)
    if float(w[win].max()) <= floor:
        return nan, Exponent(1.0, 1.0, 1.0)
    win &= w > floor
    raw = fit_exponent(s[win], w[win])
    if not math.isfinite(raw.estimate):
        return raw, raw
    return raw, Exponent(min(raw.estimate, 1.0), min(raw.low, 1.0), min(raw.high, 1.0))
