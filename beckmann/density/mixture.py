"""Gaussian mixtures ``sum_i w_i N(x; m_i, C_i)`` (``kind = "gaussian_mixture"``).

Not collective.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.linalg

from beckmann.density.validate import real_number

__all__ = ["GaussianMixture", "spd_factor"]

FloatArray = npt.NDArray[np.float64]


def spd_factor(matrix: FloatArray, what: str, original: Any) -> FloatArray:
    """Lower Cholesky factor of a symmetric positive definite matrix, or a ValueError."""
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{what} must be finite, got {original!r}")
    scale = max(float(np.max(np.abs(matrix))), np.finfo(np.float64).tiny)
    if not np.allclose(matrix, matrix.T, rtol=0.0, atol=1e-12 * scale):
        raise ValueError(f"{what} must be symmetric, got {original!r}")
    try:
        return np.asarray(scipy.linalg.cholesky(matrix, lower=True), dtype=np.float64)
    except np.linalg.LinAlgError as err:
        raise ValueError(f"{what} must be positive definite, got {original!r}") from err


class GaussianMixture:
    """A weighted sum of normal densities, ``sum_i w_i N(x; m_i, C_i)``.

    Args:
        weights: Non-negative weights ``w_i`` (not renormalised).
        means: One point of length ``gdim`` per component.
        covariances: One per component: a ``gdim x gdim`` symmetric positive definite nested
            list, or a positive number ``s`` meaning the isotropic covariance ``s * I`` (a
            variance, not a standard deviation).
        gdim: Dimension, 2 or 3.

    Raises:
        ValueError: The lists disagree in length, a mean or matrix has the wrong size, a weight is
            negative, or a covariance is not symmetric positive definite.
    """

    def __init__(
        self, weights: Sequence[Any], means: Sequence[Any], covariances: Sequence[Any], gdim: int
    ) -> None:
        for what, seq in (("weights", weights), ("means", means), ("covariances", covariances)):
            if not isinstance(seq, Sequence) or isinstance(seq, str):
                raise ValueError(f"gaussian_mixture {what} must be a list, got {seq!r}")
        if not weights:
            raise ValueError("gaussian_mixture needs at least one component; weights is empty")
        if not len(weights) == len(means) == len(covariances):
            raise ValueError(
                "gaussian_mixture weights, means and covariances must have the same length, got "
                f"{len(weights)}, {len(means)} and {len(covariances)}"
            )
        self.gdim = gdim
        self.weights: list[float] = []
        self.means: list[FloatArray] = []
        self._factors: list[FloatArray] = []
        for i, (w, m, c) in enumerate(zip(weights, means, covariances, strict=True)):
            weight = real_number(w, f"gaussian_mixture weights[{i}]")
            if weight < 0:
                raise ValueError(f"gaussian_mixture weights[{i}] must be >= 0, got {w!r}")
            if not isinstance(m, Sequence) or isinstance(m, str) or len(m) != gdim:
                raise ValueError(
                    f"gaussian_mixture means[{i}] must be a list of {gdim} numbers, got {m!r}"
                )
            mean = np.array([real_number(v, f"gaussian_mixture means[{i}]") for v in m])
            if isinstance(c, Sequence) and not isinstance(c, str):
                if len(c) != gdim or any(
                    not isinstance(row, Sequence) or isinstance(row, str) or len(row) != gdim
                    for row in c
                ):
                    raise ValueError(
                        f"gaussian_mixture covariances[{i}] must be a {gdim}x{gdim} nested list "
                        f"or one number, got {c!r}"
                    )
                cov = np.array(
                    [
                        [real_number(v, f"gaussian_mixture covariances[{i}]") for v in row]
                        for row in c
                    ]
                )
            else:
                variance = real_number(c, f"gaussian_mixture covariances[{i}]")
                if variance <= 0:
                    raise ValueError(
                        f"gaussian_mixture covariances[{i}] (a variance) must be > 0, got {c!r}"
                    )
                cov = variance * np.eye(gdim)
            self._factors.append(spd_factor(cov, f"gaussian_mixture covariances[{i}]", c))
            self.weights.append(weight)
            self.means.append(mean)

    def __call__(self, x: FloatArray) -> FloatArray:
        """Evaluate at points ``x`` of shape ``(gdim, N)``; returns shape ``(N,)``."""
        d = self.gdim
        out = np.zeros(x.shape[1])
        for w, mean, factor in zip(self.weights, self.means, self._factors, strict=True):
            z = scipy.linalg.solve_triangular(factor, x[:d] - mean[:, None], lower=True)
            norm = w / ((2.0 * np.pi) ** (d / 2) * float(np.prod(np.diag(factor))))
            out += norm * np.exp(-0.5 * np.einsum("ij,ij->j", z, z))
        return out
