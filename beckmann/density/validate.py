"""Small validators shared by the density sources: numbers, boxes, point arrays. Not collective."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["as_points", "check_bbox", "real_number"]

FloatArray = npt.NDArray[np.float64]


def real_number(value: Any, what: str) -> float:
    """Return ``value`` as a finite float, or raise a ValueError quoting it."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{what} must be a real number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return result


def check_bbox(bbox: Any, gdim: int) -> tuple[FloatArray, FloatArray]:
    """The corners ``(lower, upper)`` of a box as float arrays of length ``gdim``, checked."""
    try:
        lo_in, hi_in = bbox
        lo = np.asarray(lo_in, dtype=np.float64).reshape(-1)
        hi = np.asarray(hi_in, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"bbox must be a pair (lower, upper) of arrays, got {bbox!r}") from err
    if lo.shape != (gdim,) or hi.shape != (gdim,):
        raise ValueError(f"bbox corners must have length gdim={gdim}, got {bbox!r}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)):
        raise ValueError(f"bbox must have finite corners with lower < upper, got {bbox!r}")
    return lo, hi


def as_points(x: npt.ArrayLike, gdim: int) -> FloatArray:
    """Points as a ``(3, N)`` float64 array; a ``(gdim, N)`` input is padded with zero rows."""
    pts = np.asarray(x, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] not in (gdim, 3):
        raise ValueError(
            f"points must have shape (3, N) or ({gdim}, N) for gdim={gdim}, got {pts.shape}"
        )
    if pts.shape[0] < 3:
        pts = np.vstack([pts, np.zeros((3 - pts.shape[0], pts.shape[1]))])
    return pts
