"""Scales, windows and fitted Hölder exponents of a modulus of continuity (docs/math.md §5).

Pure functions of their arguments, except :func:`default_scales` (collective: it needs the
global bounding box of distributed points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann._mpi import global_bbox

__all__ = [
    "BLOWUP_SLOPE",
    "DELTA_MIN_FACTOR",
    "EDGE_TOL",
    "MIN_EXPONENT",
    "OCTAVES",
    "OFFSET_RATIO",
    "PLAIN_OCTAVES",
    "Exponent",
    "classify",
    "default_scales",
    "fit_exponent",
    "geometric_scales",
    "headline_exponent",
    "offset_ratio",
    "mesh_window",
    "profile_slopes",
    "scale_window",
]

FloatArray = npt.NDArray[np.float64]

#: Relative tolerance of window edges: a pair at distance ``d`` counts as ``d <= δ`` when
#: ``d <= δ (1 + EDGE_TOL)`` and as ``d >= δ_min`` when ``d >= δ_min (1 − EDGE_TOL)``. Node
#: coordinates carry partition-dependent rounding in their last bits, and on structured meshes
#: many pair distances sit exactly on the scales (``2h`` is a node-pair distance of
#: ``unit_square``); without the tolerance such pairs would count on some partitions only.
EDGE_TOL = 1e-9

#: Default lower end of a mesh window, in units of the largest cell diameter ``h``.
DELTA_MIN_FACTOR = 3.0

#: Default width of a mesh window in octaves: ``δ_max = 2^OCTAVES δ_min``.
OCTAVES = 3

#: Headline exponents at or below this read "exponent <= 0 at this resolution".
MIN_EXPONENT = 0.05

#: The offset test: the offset power law ``B + C δ^α`` must fit ``ω`` this many times better
#: (relative residual sum of squares) than the pure power law ``C δ^α`` for the increment fit
#: to be the headline (see :func:`headline_exponent`).
OFFSET_RATIO = 20.0

#: The plain slope is taken on the lowest this many octaves of the window.
PLAIN_OCTAVES = 2.0

#: A sup profile steeper than ``ρ^−BLOWUP_SLOPE`` toward its peak reads "unbounded".
BLOWUP_SLOPE = 0.1


@dataclass(frozen=True)
class Exponent:
    """A fitted Hölder exponent with its uncertainty band ``low <= estimate <= high``."""

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        """A strict-JSON dict: ``nan`` (no fit possible) becomes ``None``."""
        return {
            k: (float(v) if math.isfinite(v) else None)
            for k, v in (("estimate", self.estimate), ("low", self.low), ("high", self.high))
        }


def mesh_window(
    h: float,
    diameter: float,
    *,
    factor: float = DELTA_MIN_FACTOR,
    octaves: float = OCTAVES,
) -> tuple[float, float]:
    """The default scale window of a finite-element field: ``[factor h, 2^octaves factor h]``.

    Below a few ``h`` the discrete field, not the one it approximates, is measured; a window of
    a few octaves keeps the fit at the smallest reliable scales, where the exponent is defined,
    and away from the large scales where the modulus saturates (``ω(δ) <= 2 sup|g|``). The upper
    end is capped at a quarter of the domain's ``diameter`` (its bounding box's diagonal).

    Raises:
        ValueError: The mesh is too coarse: ``δ_min`` is not below the cap.
    """
    dmin = float(factor) * float(h)
    dmax = min(dmin * 2.0 ** float(octaves), 0.25 * float(diameter))
    if not (0.0 < dmin < dmax):
        raise ValueError(
            f"empty scale window: delta_min={dmin:g} >= delta_max={dmax:g}; the mesh is too "
            "coarse for this window (refine it, or pass delta_min / delta_max)"
        )
    return dmin, dmax


def scale_window(
    h: float,
    diameter: float,
    delta_min: float | None,
    delta_max: float | None,
    *,
    factor: float = DELTA_MIN_FACTOR,
    octaves: float = OCTAVES,
) -> tuple[float, float]:
    """The scale window from the user's ``delta_min`` / ``delta_max``, the mesh's where not given.

    A given ``delta_min`` without ``delta_max`` spans ``2^octaves`` (capped at a quarter of the
    ``diameter``); the mesh's window (:func:`mesh_window`) is used only for a missing
    ``delta_min``, so a given one works on any mesh.

    Raises:
        ValueError: A given value that is not a finite positive number, or an empty window.
    """
    for name, v in (("delta_min", delta_min), ("delta_max", delta_max)):
        if v is not None and not (math.isfinite(float(v)) and float(v) > 0.0):
            raise ValueError(f"{name} must be a finite positive number, got {v!r}")
    if delta_min is None and delta_max is None:
        return mesh_window(h, diameter, factor=factor, octaves=octaves)
    if delta_min is None:
        dmin, dmax = float(factor) * float(h), float(delta_max)  # type: ignore[arg-type]
        if not dmin < dmax:
            raise ValueError(
                f"empty scale window: delta_min={dmin:g} (the mesh's: {factor:g} h) >= "
                f"delta_max={dmax:g}; pass a larger delta_max or a delta_min"
            )
        return dmin, dmax
    dmin = float(delta_min)
    dmax = (min(dmin * 2.0 ** float(octaves), 0.25 * float(diameter)) if delta_max is None
            else float(delta_max))
    if not dmin < dmax:
        raise ValueError(
            f"need delta_min < delta_max, got delta_min={dmin:g}, delta_max={dmax:g}"
            + (" (a quarter of the domain's diameter)" if delta_max is None else "")
        )
    return dmin, dmax


def geometric_scales(delta_min: float, delta_max: float, per_octave: int = 4) -> FloatArray:
    """``per_octave`` geometric scales per factor 2 from ``delta_min`` to ``delta_max``."""
    if not (0.0 < delta_min < delta_max) or not math.isfinite(delta_max):
        raise ValueError(
            f"need 0 < delta_min < delta_max, got delta_min={delta_min}, delta_max={delta_max}"
        )
    if per_octave < 1:
        raise ValueError(f"per_octave must be >= 1, got {per_octave}")
    num = max(2, int(math.ceil(per_octave * math.log2(delta_max / delta_min) - 1e-9)) + 1)
    return np.geomspace(delta_min, delta_max, num)


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
    lo, hi = global_bbox(X, comm)
    n = int(comm.allreduce(X.shape[0], op=MPI.SUM))
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
    return geometric_scales(dmin, dmax, per_octave)


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


def profile_slopes(scales: npt.ArrayLike, profile: npt.ArrayLike) -> tuple[float, float] | None:
    """Log–log slopes of a sup profile ``M(ρ)`` over the first and the second octave of ``scales``.

    When ``M`` reaches its far-field level (its value at the last scale) within two octaves,
    the two halves of the scales where ``M`` is above that level instead (``None`` if fewer
    than three). ``None`` when the scales span less than
    two octaves or ``M`` vanishes somewhere.
    """
    s = np.asarray(scales, dtype=np.float64)
    m = np.asarray(profile, dtype=np.float64)
    if s.size < 3 or s[-1] < 4.0 * s[0] * (1 - 1e-9) or np.any(m <= 0):
        return None
    i = int(np.searchsorted(s, 2.0 * s[0] * (1 - 1e-9)))
    j = int(np.searchsorted(s, 2.0 * s[i] * (1 - 1e-9)))
    if j >= s.size:  # the second octave is not complete (scales not a power-of-two ladder)
        return None
    if m[j] <= m[-1] * (1 + 1e-9):
        # the profile reaches the far field's level within two octaves, which flattens it for
        # bounded and unbounded peaks alike: compare the halves of the part above that level
        above = int(np.count_nonzero(m > m[-1] * (1 + 1e-9)))
        if above < 3:
            return None
        i, j = above // 2, above - 1
    first = math.log(m[i] / m[0]) / math.log(s[i] / s[0])
    second = math.log(m[j] / m[i]) / math.log(s[j] / s[i])
    return float(first), float(second)


def classify(exponent: Exponent, slopes: tuple[float, float] | None, constant: bool) -> str:
    """The verdict on a field at one resolution (docs/math.md §5).

    - ``"constant"``: ``ω = 0`` on the window (every seminorm is zero);
    - ``"unbounded"``: the sup profile ``M(ρ) = max_{|x − x*| >= ρ} |g(x)|`` around the
      largest value ``x*`` grows toward ``x*`` like ``ρ^{−β}``, ``β >= BLOWUP_SLOPE``, over the
      window's first octave (``slopes`` from :func:`profile_slopes`), and does not flatten
      toward ``x*`` (the first octave is at least as steep as the second, up to 0.02). A
      bounded peak ``sup − C ρ^a`` flattens toward ``x*``. A study confirms the verdict by the
      growth of the sup norm across levels;
    - ``"exponent <= 0 at this resolution"``: the headline exponent is ``<= MIN_EXPONENT`` or
      cannot be fitted (a jump, or an unbounded field that the profile test misses);
    - ``"holder"``: otherwise.
    """
    if constant:
        return "constant"
    if slopes is not None:
        first, second = slopes
        if first <= -BLOWUP_SLOPE and first <= second + 0.02:
            return "unbounded"
    if not math.isfinite(exponent.estimate) or exponent.estimate <= MIN_EXPONENT:
        return "exponent <= 0 at this resolution"
    return "holder"


def offset_ratio(scales: npt.ArrayLike, omega: npt.ArrayLike) -> float:
    """How much better ``B + C δ^α`` fits ``ω`` than ``C δ^α``: the ratio of residual sums.

    Both fitted in relative terms (``Σ (model/ω − 1)²`` for the offset law, ``α`` on a grid of
    step 0.005 in ``(0, 1.6]``; ``Σ (log model − log ω)²`` for the pure law). ``1`` when fewer
    than four scales have ``ω > 0``.
    """
    s = np.asarray(scales, dtype=np.float64)
    w = np.asarray(omega, dtype=np.float64)
    ok = w > 0
    s, w = s[ok], w[ok]
    if s.size < 4 or np.ptp(np.log(s)) == 0:
        return 1.0
    x, y = np.log(s), np.log(w)
    c = np.polyfit(x, y, 1)
    rss2 = float(np.sum((np.polyval(c, x) - y) ** 2))
    one = np.ones_like(s)
    rss3 = math.inf
    for a in np.arange(1, 321) * 0.005:
        A = np.c_[one, s**a] / w[:, None]
        coef = np.linalg.lstsq(A, one, rcond=None)[0]
        rss3 = min(rss3, float(np.sum((A @ coef - 1.0) ** 2)))
    tiny = 1e-30
    return rss2 / max(rss3, tiny) if rss2 > tiny else 1.0


def headline_exponent(
    scales: npt.ArrayLike, omega: npt.ArrayLike, delta_min: float, delta_max: float
) -> tuple[Exponent, str]:
    """The headline exponent of a modulus on the window ``[delta_min, delta_max]``, and its name.

    Two effects bias the plain log–log slope of ``ω`` at finite resolution, in opposite
    directions, and one estimator alone cannot undo both (docs/holder.md, measured cases):

    - an *offset*: a finite-element field smooths a cusp ``C |x − x_0|^α`` over a cell, which
      lowers ``ω`` by about ``C h^α`` at every scale (``ω ≈ C δ^α + B``, ``B < 0``) and biases
      the slope *up* (0.39 for α = 0.25 on the disk at ``h = 0.03``). The increment fit
      (slope of ``ω(2δ) − ω(δ)``) is blind to ``B``;
    - *curvature*: a smooth field's modulus bends over toward saturation (``ω <= 2 sup``), which
      biases the slope *down*, and the increments more so (0.54 instead of 1).

    The offset shows as an offset power law fitting much better than a pure one
    (:func:`offset_ratio` ``>= OFFSET_RATIO``; measured 40–225 on cusps, 2–7 on smooth and
    corner fields). Then the headline is the increment fit (``"increment"``); otherwise it is
    the plain slope on the lowest ``PLAIN_OCTAVES`` octaves of the window, where curvature is
    smallest (``"plain"``). The band is the chosen fit's range of octave-local slopes.

    Not collective.
    """
    s = np.asarray(scales, dtype=np.float64)
    w = np.asarray(omega, dtype=np.float64)
    win = (s >= delta_min * (1 - 1e-12)) & (s <= delta_max * (1 + 1e-12))
    if offset_ratio(s[win], w[win]) >= OFFSET_RATIO:
        expo = fit_exponent(s, w, delta_min=delta_min, delta_max=delta_max, increments=True)
        if math.isfinite(expo.estimate):
            return expo, "increment"
    top = min(delta_max, delta_min * 2.0**PLAIN_OCTAVES)
    plain = fit_exponent(s, w, delta_min=delta_min, delta_max=top)
    return plain, "plain"
