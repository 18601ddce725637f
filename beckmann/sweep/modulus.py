"""Pairs of θ and the modulus of continuity in θ of a field, from pair differences.

Nothing here is collective: the inputs are the same on every rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann import holder

__all__ = ["pairs_to_compare", "theta_modulus"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def pairs_to_compare(theta: FloatArray, max_all: int = 400, k: int = 12) -> IntArray:
    """Pairs of θ to compare: all of them for small grids, else near neighbours."""
    n = theta.shape[0]
    if n <= max_all:
        i, j = np.triu_indices(n, 1)
        return np.column_stack([i, j]).astype(np.int64)
    from scipy.spatial import cKDTree

    _, nb = cKDTree(theta).query(theta, k=min(k + 1, n))
    p = {(min(a, b), max(a, b)) for a in range(n) for b in nb[a] if a != b}
    return np.array(sorted(p), dtype=np.int64)


def theta_modulus(dist: FloatArray, diff: FloatArray) -> dict[str, Any]:
    """Modulus, fitted exponent and seminorm in θ from pair distances and field differences."""
    sel = dist > 0
    dist, diff = dist[sel], diff[sel]
    if dist.size == 0:
        return {"exponent": None, "seminorm": None, "lipschitz": None}
    scales = np.unique(np.round(dist, 14))
    if scales.size > 24:
        scales = np.geomspace(scales[0], scales[-1], 24)
    order = np.argsort(dist)
    cummax = np.maximum.accumulate(diff[order])
    pos = np.searchsorted(dist[order], scales * (1 + 1e-12), side="right") - 1
    omega = np.where(pos >= 0, cummax[np.maximum(pos, 0)], 0.0)
    e = holder.fit_exponent(scales, omega)
    expo = {"estimate": e.estimate, "low": e.low, "high": e.high}
    beta = 1.0 if not np.isfinite(expo["estimate"]) else float(np.clip(expo["estimate"], 0, 1))
    return {
        "exponent": expo,
        "beta": beta,
        "seminorm": float(np.max(diff / dist**beta)),
        "lipschitz": float(np.max(diff / dist)),
        "scales": scales.tolist(),
        "modulus": omega.tolist(),
    }
