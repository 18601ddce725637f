r"""Fields of a sweep member at points: on the grid, or interpolated between grid values.

On the grid the stored potential is used. Off the grid φ is the tensor-product Lagrange
interpolant in θ of the stored potentials: quadratic on axes with three or more values, linear
on axes with two. The result carries ``error_estimate = max |quadratic − linear|`` at the points
(for potential and flux), an estimate of the linear interpolant's error that is pessimistic for
the quadratic one; it is not a bound. The densities ``p0``, ``p1(θ)`` are recomputed at θ itself
from the stored config, so the velocity ``F / p_t`` uses the exact target at θ.

On a *reduced* store (``[sweep] method = "reduced"``, docs/reduced.md) any θ in the parameter
box is evaluated from the reduced basis, with the certified ``error_bound`` (on
``‖∇(φ_h − φ_M)‖_{L²(Ω)}``, absolute) and ``cost_bound`` (on the Beckmann cost, absolute); a θ
outside the box is refused unless ``extrapolate`` (the bounds are still certified there).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._mpi import agree
from beckmann.fields import Solution
from beckmann.pipeline import build_density
from beckmann.sweep.spec import with_params
from beckmann.sweep.store import SweepStore

__all__ = ["interpolation_weights", "probe", "theta_solution"]

FloatArray = npt.NDArray[np.float64]


def _stencil(axis: list[float], v: float, order: int) -> list[tuple[int, float]]:
    """Lagrange interpolation on ``order + 1`` neighbouring axis values: (position, weight)."""
    a = np.asarray(axis)
    n = a.size
    if n == 1:
        if abs(v - a[0]) > 1e-12 * max(abs(a[0]), 1.0):
            raise ValueError(f"value {v:g} is off the one-point axis {a[0]:g}")
        return [(0, 1.0)]
    if v < a[0] - 1e-12 * max(abs(a[0]), 1.0) or v > a[-1] + 1e-12 * max(abs(a[-1]), 1.0):
        raise ValueError(
            f"value {v:g} lies outside the grid [{a[0]:g}, {a[-1]:g}] (no extrapolation)"
        )
    m = min(order + 1, n)
    j = int(np.clip(np.searchsorted(a, v) - 1, 0, n - 2))  # interval [a_j, a_j+1]
    if m == 3:  # add the neighbour closer to v
        left = j - 1 >= 0 and (j + 2 >= n or v - a[j - 1] <= a[j + 2] - v)
        start = min(max(j - 1 if left else j, 0), n - 3)
        nodes = list(range(start, start + 3))
    else:
        nodes = [j, j + 1]
    w = []
    for k in nodes:
        lk = 1.0
        for q in nodes:
            if q != k:
                lk *= (v - a[q]) / (a[k] - a[q])
        w.append((k, lk))
    return w


def interpolation_weights(
    store: SweepStore, theta: dict[str, float], order: int = 2
) -> dict[int, float]:
    """Tensor-product Lagrange weights ``{grid index: weight}`` of ``theta`` (``order`` 1 or 2).

    Not collective. Raises ``ValueError`` off a product grid, outside it or on a missing point.
    """
    axes = store.grid.axes
    if axes is None:
        raise ValueError(
            "interpolation needs a product grid; this sweep has a Latin-hypercube design "
            "(probe its grid points instead)"
        )
    per = [_stencil(axes[n], theta[n], order) for n in store.grid.names]
    out: dict[int, float] = {}
    for combo in itertools.product(*per):
        t = {n: axes[n][k] for n, (k, _) in zip(store.grid.names, combo, strict=True)}
        i = store.index_of(t)
        if i is None:
            raise ValueError(f"grid point {t} is missing from the sweep")
        out[i] = out.get(i, 0.0) + float(np.prod([w for _, w in combo]))
    return out


def _densities(store: SweepStore, theta: dict[str, float]) -> Solution:
    """A :class:`~beckmann.fields.Solution` with ``p0``, ``p1`` at θ and a zero potential."""
    from beckmann._dolfinx import fem

    cfg = store.config
    V = store.space()
    label = ", ".join(f"{k}={v:.6g}" for k, v in theta.items())
    try:
        p0, _ = build_density(with_params(cfg["source"], theta), "source", V)
        p1, _ = build_density(with_params(cfg["target"], theta), "target", V)
    except ValueError as e:
        raise ValueError(f"θ ({label}): {e}") from e
    return Solution(V.mesh, fem.Function(V, name="potential"), p0, p1)


def theta_solution(store: SweepStore, i: int | None, theta: dict[str, float]) -> Solution:
    """A :class:`~beckmann.fields.Solution` of θ on the store's mesh; collective.

    Its potential is the stored one of grid index ``i`` (zero when ``i`` is ``None``); ``p0``
    and ``p1`` are built at ``theta`` from the stored config (also off the grid). On a reduced
    store (no field per θ) the potential of a grid index is the reduced one at ``theta``
    (:func:`reduced_solution`), so every consumer of grid members (``sample``, ``fit``)
    accepts a reduced store as it accepts a full one.

    Raises:
        ValueError: A density is invalid at ``theta`` (the message names θ).
    """
    from beckmann.sweep.reduced import is_reduced

    if i is not None and is_reduced(store.folder, store.comm):
        return reduced_solution(store, theta, extrapolate=True)[0]
    sol = _densities(store, theta)
    if i is None:
        return sol
    return Solution(sol.msh, store.potential(i), sol.p0, sol.p1)


def _check(
    store: SweepStore, theta: dict[str, float], interpolate: bool
) -> tuple[int | None, dict[str, dict[int, float]]]:
    """Grid index of θ or the interpolation weights; collective (every rank agrees)."""
    i = store.comm.bcast(store.index_of(theta) if store.comm.rank == 0 else None, root=0)
    label = ", ".join(f"{k}={float(v)!r}" for k, v in theta.items())  # all digits: 0.30000000001
    done = set(store.completed())
    err = None
    weights: dict[str, dict[int, float]] = {}
    if i is not None and i not in done:
        err = f"θ ({label}) is on the grid but not stored yet; resume the sweep"
    elif i is None and not interpolate:
        err = f"θ ({label}) is not on the sweep grid; pass --interpolate"
    elif i is None:
        try:
            weights = {
                "quadratic": interpolation_weights(store, theta, 2),
                "linear": interpolation_weights(store, theta, 1),
            }
            missing = sorted(set(weights["quadratic"]) - done)
            if missing:
                raise ValueError(f"{store.grid.label(missing[0])} is needed but not stored yet")
        except ValueError as e:
            err = f"cannot interpolate at θ ({label}): {e}"
    agree(store.comm, err)
    return i, weights


def _reduced_model(store: SweepStore) -> Any:
    """The store's :class:`~beckmann.sweep.reduced.ReducedModel`, loaded once per store."""
    from beckmann.sweep.reduced import ReducedModel

    model = getattr(store, "_reduced_model", None)
    if model is None:
        model, _ = ReducedModel.load(store)
        store._reduced_model = model  # type: ignore[attr-defined]
    return model


def reduced_solution(
    store: SweepStore, theta: dict[str, float], *, extrapolate: bool = False
) -> tuple[Solution, dict[str, Any]]:
    """The reduced fields at any θ of a reduced store and their certificate; collective.

    Returns the :class:`~beckmann.fields.Solution` (potential ``φ_M(θ)``, densities at θ) and
    :meth:`~beckmann.sweep.reduced.ReducedModel.certify`'s bounds plus ``basis_size``,
    ``extrapolated`` and ``truth`` (``[sweep] reduced_rhs``: the discrete solution bounded).

    Raises:
        ValueError: θ outside the parameter box without ``extrapolate`` (on every rank), or a
            density invalid at θ.
    """
    lo, hi = store.grid.box()
    v = np.array([theta[n] for n in store.grid.names])
    span = np.maximum(hi - lo, 1e-300)
    outside = bool(np.any((v < lo - 1e-12 * span) | (v > hi + 1e-12 * span)))
    label = ", ".join(f"{k}={float(x)!r}" for k, x in theta.items())
    box = ", ".join(f"{n} in [{a:g}, {b:g}]" for n, a, b in zip(store.grid.names, lo, hi,
                                                                  strict=True))
    agree(
        store.comm,
        f"θ ({label}) lies outside the parameter box ({box}); pass --extrapolate"
        if outside and not extrapolate
        else None,
    )
    model = _reduced_model(store)
    d = model.coefficients(theta)
    cert = dict(model.certify(theta, d))
    cert.update(basis_size=model.size, extrapolated=outside, truth=model.rhs)
    sol = _densities(store, theta)
    sol.phi.x.array[: model.nloc] = model.potential(d)
    sol.phi.x.scatter_forward()
    return sol, cert


def _probe_reduced(
    store: SweepStore,
    theta: dict[str, float],
    points: npt.ArrayLike,
    t: float,
    extrapolate: bool,
) -> dict[str, Any]:
    """:func:`probe` on a reduced store; collective."""
    sol, cert = reduced_solution(store, theta, extrapolate=extrapolate)
    res = sol.evaluate(points, t=t)
    out: dict[str, Any] = {k: v.tolist() for k, v in res.items()}
    out["theta"] = theta
    out.update(
        {
            "method": "reduced",
            "basis_size": cert["basis_size"],
            "extrapolated": cert["extrapolated"],
            "error_bound": cert["error_bound"],
            "cost": cert["cost"],
            "cost_bound": cert["cost_bound"],
            "relative_bound": cert["relative_bound"],
            "truth": cert["truth"],
            "bounds": "error_bound ≥ ‖∇(φ_h − φ_M)‖_L2(Ω), cost_bound ≥ |J_h − J_M|, φ_h the "
            "P_k solution with the target's " + ("nodal interpolant" if cert["truth"] ==
                                                 "interpolant" else "quadrature values")
            + " (docs/reduced.md)",
        }
    )
    return out


def probe(
    store: SweepStore,
    theta: dict[str, float],
    points: npt.ArrayLike,
    *,
    t: float = 0.0,
    interpolate: bool = False,
    extrapolate: bool = False,
) -> dict[str, Any]:
    """Potential, flux and velocity of θ at points (the JSON of ``beckmann probe``); collective.

    Args:
        store: An opened sweep store.
        theta: A value for every parameter of the sweep.
        points: ``(N, d)`` points, the same on every rank.
        t: Time of the velocity ``v_t = F / ((1 − t) p0 + t p1)``.
        interpolate: Allow θ off the grid (see the module docstring).
        extrapolate: Reduced store: allow θ outside the parameter box.

    Returns:
        ``potential``, ``flux``, ``velocity`` (lists), ``theta``; off the grid also
        ``interpolation`` (method and stencil) and ``error_estimate``.

    Raises:
        ValueError: θ off the grid without ``interpolate``, outside the grid, or not stored yet;
            a point outside the domain (on every rank). Reduced store: θ outside the box
            without ``extrapolate``.
    """
    from beckmann.sweep.reduced import is_reduced

    if is_reduced(store.folder, store.comm):
        return _probe_reduced(store, theta, points, t, extrapolate)
    i, weights = _check(store, theta, interpolate)
    result: dict[str, Any] = {}
    if i is not None:
        sol = theta_solution(store, i, theta)
        res = sol.evaluate(points, t=t)
    else:
        sol = theta_solution(store, None, theta)
        cache: dict[int, dict[str, FloatArray]] = {}
        evals: dict[str, dict[str, FloatArray]] = {}
        for kind, w in weights.items():
            acc: dict[str, FloatArray] = {}
            for j, wj in w.items():
                if j not in cache:
                    s = Solution(sol.msh, store.potential(j), sol.p0, sol.p1)
                    cache[j] = s.evaluate(points, what=("potential", "flux"))
                for k, v in cache[j].items():
                    acc[k] = acc.get(k, 0.0) + wj * v
            evals[kind] = acc
        q, lin = evals["quadratic"], evals["linear"]
        dens = sol.evaluate(points, t=t, what=("source", "target"))
        pt = (1.0 - t) * dens["source"] + t * dens["target"]
        res = {"potential": q["potential"], "flux": q["flux"], "velocity": q["flux"] / pt[:, None]}
        result["interpolation"] = {
            "method": "tensor-product quadratic Lagrange in θ (linear on 2-value axes)",
            "stencil": {str(j): w for j, w in weights["quadratic"].items()},
        }
        result["error_estimate"] = {
            "potential": float(np.abs(q["potential"] - lin["potential"]).max(initial=0.0)),
            "flux": float(np.linalg.norm(q["flux"] - lin["flux"], axis=1).max(initial=0.0)),
        }
    out: dict[str, Any] = {k: v.tolist() for k, v in res.items()}
    out["theta"] = theta
    out.update(result)
    return out
