r"""The Bernstein form of a Lagrange polynomial on a simplex: exact cell masses and bounds.

On a simplex with barycentric coordinates :math:`\lambda`, a polynomial of degree :math:`k` is
:math:`\sum_{|\alpha| = k} b_\alpha B_\alpha(\lambda)` with
:math:`B_\alpha = \binom{k}{\alpha}\lambda^\alpha \ge 0` and :math:`\sum_\alpha B_\alpha = 1`.
Hence the largest coefficient bounds the polynomial, the mean coefficient is its cell average,
and a value is a short sum of products of barycentric coordinates (cheaper than a general
tabulation at low degree).
"""

from __future__ import annotations

import math
from itertools import combinations_with_replacement
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["bernstein_matrix", "monomials", "multi_indices", "multinomials"]

FloatArray = npt.NDArray[np.float64]


def multi_indices(k: int, d: int) -> list[tuple[int, ...]]:
    """The multi-indices ``|α| = k`` in ``d + 1`` barycentric variables, as sorted tuples."""
    return list(combinations_with_replacement(range(d + 1), k))


def monomials(lam: FloatArray, k: int) -> FloatArray:
    """``∏_i λ_i^{α_i}`` for all ``|α| = k`` (order of :func:`multi_indices`), ``(n, nα)``."""
    combos = multi_indices(k, lam.shape[1] - 1)
    out = np.empty((lam.shape[0], len(combos)))
    for a, combo in enumerate(combos):
        if not combo:
            out[:, a] = 1.0
            continue
        col = lam[:, combo[0]].copy()
        for i in combo[1:]:
            col *= lam[:, i]
        out[:, a] = col
    return out


def multinomials(k: int, d: int) -> FloatArray:
    """The multinomial coefficients ``k! / α!`` in the order of :func:`multi_indices`."""
    out = []
    for combo in multi_indices(k, d):
        alpha = np.bincount(np.array(combo, dtype=np.int64), minlength=d + 1)
        out.append(math.factorial(k) / np.prod([math.factorial(int(a)) for a in alpha]))
    return np.array(out, dtype=np.float64)


def bernstein_matrix(element: Any) -> FloatArray:
    """Matrix ``M`` with Bernstein coefficients ``b = M @ nodal_values`` for a basix element.

    The Lagrange element's nodal values are ``B(points) b``; ``M`` is that matrix's inverse. On a
    simplex ``B_α ≥ 0`` and ``Σ B_α = 1``, so ``max b`` bounds the polynomial and ``mean b`` is its
    cell average.
    """
    pts = np.asarray(element.points, dtype=np.float64)
    k = int(element.degree)
    d = pts.shape[1]
    lam = np.concatenate([1.0 - pts.sum(axis=1, keepdims=True), pts], axis=1)
    B = monomials(lam, k) * multinomials(k, d)[None, :]
    return np.linalg.inv(B)
