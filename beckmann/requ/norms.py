"""Error norms of a network against a field on held-out points (docs/math.md, "ReQu networks").

For the error ``e = f − u`` of a model ``f`` against values ``u`` (and derivatives ``D_k u``) at
held-out points:

- ``c0_error = sup|e|`` (Euclidean norm of vector values),
- ``c1_error = sup|e| + sup|D_k e|`` (the ``C¹`` norm; ``|D_k e|`` the Frobenius norm),
- ``holder_error = [e]_α`` and ``holder_grad_error = [D_k e]_α``, all-pairs estimates,
- ``l2_error = ‖e‖_{L²(μ)} / ‖u‖_{L²(μ)}``, a Monte Carlo estimate for the measure ``μ`` the
  points were drawn from (uniform, or ``p_t`` for velocity fits sampled along the path),

and the relative versions ``c0_rel``, ``c1_rel`` (divided by ``sup|u|``, ``‖u‖_{C¹}``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from beckmann.requ.flux_velocity import Model
from beckmann.requ.network import check_data, check_derivative_inputs

__all__ = ["errors", "holder_seminorm"]


def holder_seminorm(x: npt.ArrayLike, g: npt.ArrayLike, alpha: float) -> float:
    """Hölder seminorm ``[g]_α = max_{i≠j} |g_i − g_j| / |x_i − x_j|^α`` over all pairs.

    Serial: all points are on this rank. Exact (every pair), by
    :func:`beckmann.holder.seminorm` on ``MPI.COMM_SELF``. Vector values use the Euclidean norm
    of the difference; coincident points are skipped.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"Hölder exponent alpha must be in (0, 1], got {alpha!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    g = np.asarray(g, dtype=np.float64).reshape(len(x), -1)
    if len(x) < 2:
        return 0.0
    from beckmann._dolfinx import MPI
    from beckmann.holder import seminorm

    return float(seminorm(x, g, MPI.COMM_SELF, alpha, method="exact"))


def errors(
    model: Model,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    jac: npt.ArrayLike | None = None,
    *,
    derivative_inputs: Sequence[int] | None = None,
    alpha: float = 0.5,
    holder_points: int = 2000,
) -> dict[str, float]:
    """Errors of ``model`` against values ``y`` (and derivatives ``jac``) at held-out points ``x``.

    Not collective (all points on this rank).

    Args:
        model: The network.
        x: Points, shape ``(N, d)``; means over them estimate integrals for the measure they were
            drawn from.
        y: Target values, ``(N,)`` or ``(N, m)``.
        jac: Target derivatives with respect to ``derivative_inputs``: ``(N, k)`` for a scalar
            field, ``(N, m, k)`` otherwise. Without it only the ``C⁰`` and ``L²`` errors are given.
        derivative_inputs: Indices of the inputs in ``jac`` (default: all).
        alpha: Hölder exponent for ``holder_error`` and ``holder_grad_error``.
        holder_points: The all-pairs Hölder estimate uses the first this many points (0: none).

    Returns:
        ``c0_error``, ``c0_rel``, ``l2_error`` (relative), ``holder_error``, ``alpha``, and with
        ``jac`` also ``c1_error``, ``c1_rel``, ``grad_error`` (``sup|D_k e|``),
        ``holder_grad_error``.
    """
    x, Y, J = check_data(model.input_dim, x, y, jac, model.scalar)
    k = check_derivative_inputs(model.input_dim, derivative_inputs, J)
    e = model(x).reshape(len(x), -1) - Y
    enorm = np.linalg.norm(e, axis=1)
    ynorm = np.linalg.norm(Y, axis=1)
    tiny = float(np.finfo(float).tiny)
    c0 = float(enorm.max())
    out = {
        "c0_error": c0,
        "c0_rel": c0 / max(float(ynorm.max()), tiny),
        "l2_error": float(np.sqrt(np.mean(enorm**2) / max(np.mean(ynorm**2), 1e-300))),
    }
    n = min(len(x), holder_points)
    if n >= 2:
        out["holder_error"] = holder_seminorm(x[:n], e[:n], alpha)
    if J is not None:
        Jm = model.jacobian(x).reshape(len(x), model.output_dim, model.input_dim)[:, :, k]
        De = (Jm - J).reshape(len(x), -1)
        grad = float(np.linalg.norm(De, axis=1).max())
        norm_c1 = float(ynorm.max() + np.linalg.norm(J.reshape(len(x), -1), axis=1).max())
        out["grad_error"] = grad
        out["c1_error"] = c0 + grad
        out["c1_rel"] = (c0 + grad) / max(norm_c1, tiny)
        if n >= 2:
            out["holder_grad_error"] = holder_seminorm(x[:n], De[:n], alpha)
    out["alpha"] = alpha
    return out
