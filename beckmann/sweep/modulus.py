"""Pairs of θ and the modulus of continuity in θ of a field, from pair differences.

Nothing here is collective: the inputs are the same on every rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann import holder

__all__ = [
    "anchor_positions",
    "coefficient_continuity",
    "pairs_to_compare",
    "stream_pairs",
    "theta_modulus",
]

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
    a = np.repeat(np.arange(n, dtype=np.int64), nb.shape[1])
    b = np.asarray(nb, dtype=np.int64).ravel()
    keep = a != b
    lo, hi = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    key = np.unique(lo * n + hi)  # each unordered pair once, sorted as (lo, hi)
    return np.column_stack([key // n, key % n]).astype(np.int64)


def anchor_positions(k: int, n_anchors: int) -> IntArray:
    """Positions (in stream order) of the at most ``n_anchors`` θ kept in memory, evenly spread."""
    if k <= n_anchors:
        return np.arange(k, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, k - 1, max(n_anchors, 1))).astype(np.int64))


def stream_pairs(k: int, n_anchors: int) -> IntArray:
    """The pairs a streaming pass over ``k`` θ compares, ``(a, b)`` with ``a < b``, sorted.

    Each θ ``b`` meets its predecessor ``b − 1`` (consecutive pairs: the finest scales of a
    1-D grid, the last axis of a product grid) and every anchor ``a < b``
    (:func:`anchor_positions`: the far pairs, up to the whole box). With ``k <= n_anchors`` every
    θ is an anchor and these are all pairs.
    """
    anchors = anchor_positions(k, n_anchors)
    p = {(b - 1, b) for b in range(1, k)}
    p |= {(int(a), b) for b in range(k) for a in anchors if a < b}
    return np.array(sorted(p), dtype=np.int64).reshape(-1, 2)


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


def coefficient_continuity(theta: FloatArray, D: FloatArray, G: FloatArray) -> dict[str, Any]:
    """Continuity in θ of the reduced potentials, from coefficients only. Not collective.

    ``‖∇(φ_M(θ) − φ_M(θ'))‖_{L²}² = Δdᵀ G Δd`` exactly for the reduced fields, over the pairs of
    :func:`beckmann.sweep.modulus.pairs_to_compare` (all pairs up to 400 θ, else neighbours).
    """
    if theta.shape[0] < 2:
        return {"note": "fewer than two θ: no continuity estimate"}
    pairs = pairs_to_compare(theta)
    dD = D[pairs[:, 0]] - D[pairs[:, 1]]
    diff = np.sqrt(np.maximum(np.einsum("pm,pm->p", dD @ G, dD), 0.0))
    dist = np.linalg.norm(theta[pairs[:, 0]] - theta[pairs[:, 1]], axis=1)
    return {
        "pairs": int(pairs.shape[0]),
        "thetas": int(theta.shape[0]),
        "energy": theta_modulus(dist, diff),
        "norm": "‖∇(φ_M(θ) − φ_M(θ'))‖_L2 from the coefficients; |θ−θ'| Euclidean",
    }
