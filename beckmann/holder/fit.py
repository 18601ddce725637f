"""Scales, windows and fitted Hölder exponents of a modulus of continuity (MATH.md §3).

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

__all__ = ["Exponent", "default_scales", "fit_exponent"]

FloatArray = npt.NDArray[np.float64]


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
    if not (0.0 < dmin < dmax):
        raise ValueError(f"need 0 < delta_min < delta_max, got delta_min={dmin}, delta_max={dmax}")
    if per_octave < 1:
        raise ValueError(f"per_octave must be >= 1, got {per_octave}")
    num = max(2, int(math.ceil(per_octave * math.log2(dmax / dmin))) + 1)
    return np.geomspace(dmin, dmax, num)


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
