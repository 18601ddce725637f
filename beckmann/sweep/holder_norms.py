r"""Continuity in θ in Hölder norms ``C^{k,α}`` of whole fields (opt-in: ``continuity_holder``).

For a few pairs of stored θ, :func:`beckmann.holder.field_norms` with fixed ``α`` on the
difference fields: ``φ(θ) − φ(θ')`` in ``C^{k+2,α}``, ``F(θ) − F(θ') = ∇(φ(θ) − φ(θ'))`` in
``C^{k+1,α}`` and ``(p1 − p0)(θ) − (p1 − p0)(θ')`` in ``C^{k,α}`` (the data). Every pair
recovers ``k + 2`` derivatives of ``Δφ`` and ``k + 1`` of ``ΔF`` by L2 projection, hence the
bound on the number of pairs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann import holder
from beckmann._dolfinx import MPI, fem, ufl
from beckmann.pipeline import build_density
from beckmann.sweep.engine import depends_on
from beckmann.sweep.modulus import pairs_to_compare, theta_modulus
from beckmann.sweep.spec import with_params
from beckmann.sweep.store import SweepStore

__all__ = ["holder_pairs", "holder_report"]

FloatArray = npt.NDArray[np.float64]


def holder_pairs(theta: FloatArray, n_max: int) -> npt.NDArray[np.int64]:
    """At most ``n_max`` pairs of compared θ, spread evenly over ``log |θ − θ'|``."""
    pairs = pairs_to_compare(theta)
    if pairs.shape[0] <= n_max:
        return pairs
    dist = np.linalg.norm(theta[pairs[:, 0]] - theta[pairs[:, 1]], axis=1)
    order = np.argsort(np.log(np.maximum(dist, 1e-300)), kind="stable")
    pick = np.unique(np.round(np.linspace(0, order.size - 1, n_max)).astype(np.int64))
    return pairs[np.sort(order[pick])]


def _rhs(store: SweepStore, i: int, cache: dict[str, FloatArray]) -> fem.Function:
    """``p1 − p0`` (normalised, as solved) of θ ``i`` on the store's space; collective."""
    V = store.space()
    theta = store.grid.theta(i)
    vals = []
    for role in ("target", "source"):
        sec = store.config[role]
        depends = depends_on(sec, store.grid.names)
        if not depends and role in cache:
            vals.append(cache[role])
            continue
        p, _ = build_density(with_params(sec, theta) if depends else sec, role, V)
        vals.append(p.x.array.copy())
        if not depends:
            cache[role] = vals[-1]
    f = fem.Function(V, name="rhs")
    f.x.array[:] = vals[0] - vals[1]
    return f


def holder_report(
    store: SweepStore,
    comm: MPI.Comm,
    done: list[int],
    theta: FloatArray,
    *,
    k: int = 0,
    alpha: float = 0.5,
    pairs: int = 12,
) -> dict[str, Any]:
    """``C^{k,α}`` norms of θ-differences; collective, the same result on every rank.

    Per field, the exponent ``β`` of ``θ ↦ field`` in that norm is fitted on the modulus over
    ``|θ − θ'|`` (:func:`beckmann.sweep.modulus.theta_modulus`); ``ratio`` is
    ``‖Δφ‖_{C^{k+2,α}} / ‖Δ(p1 − p0)‖_{C^{k,α}}``, the constant of the Schauder estimate seen on
    the grid (bounded in θ if the estimate holds).
    """
    sel = holder_pairs(theta, pairs)
    V = store.space()
    msh = V.mesh
    degree = int(store.config["solver"]["degree"])
    cache: dict[str, FloatArray] = {}
    phis: dict[int, fem.Function] = {}
    rhss: dict[int, fem.Function] = {}
    for a in np.unique(sel):
        phis[int(a)] = store.potential(done[int(a)])
        rhss[int(a)] = _rhs(store, done[int(a)], cache)
    table = []
    n_phi: dict[str, Any] = {}
    for a, b in sel.tolist():
        dphi = fem.Function(V, name="dphi")
        dphi.x.array[:] = phis[a].x.array - phis[b].x.array
        drhs = fem.Function(V, name="drhs")
        drhs.x.array[:] = rhss[a].x.array - rhss[b].x.array
        # the norms of MATH §4 are over the whole domain: no boundary margin
        n_phi = holder.field_norms(dphi, k + 2, alpha, name="dphi", margin=0.0)
        n_flux = holder.field_norms(
            ufl.grad(dphi), k + 1, alpha, msh=msh, degree=degree, name="dflux", margin=0.0
        )
        n_rhs = holder.field_norms(drhs, k, alpha, degree=degree, name="drhs", margin=0.0)
        table.append(
            {
                "i": done[a],
                "j": done[b],
                "dtheta": float(np.linalg.norm(theta[a] - theta[b])),
                "phi": n_phi["norm"],
                "flux": n_flux["norm"],
                "rhs": n_rhs["norm"],
                "ratio": n_phi["norm"] / n_rhs["norm"] if n_rhs["norm"] > 0 else math.inf,
                "phi_sup_norms": n_phi["sup_norms"],
                "phi_seminorm": n_phi["seminorm"],
            }
        )
    dist = np.array([r["dtheta"] for r in table])
    out: dict[str, Any] = {
        "k": int(k),
        "alpha": float(alpha),
        "pairs": len(table),
        "norms": {
            "phi": f"C^{k + 2},{alpha:g}",
            "flux": f"C^{k + 1},{alpha:g}",
            "rhs": f"C^{k},{alpha:g}",
        },
    }
    for key in ("phi", "flux", "rhs"):
        out[key] = theta_modulus(dist, np.array([r[key] for r in table]))
    ratios = np.array([r["ratio"] for r in table])
    out["ratio"] = {
        "max": float(ratios.max()),
        "min": float(ratios.min()),
        "note": "‖φ(θ) − φ(θ')‖_{C^{k+2,α}} / ‖(p1 − p0)(θ) − (p1 − p0)(θ')‖_{C^{k,α}}",
    }
    out["table"] = table
    out["window"] = {"delta_min": n_phi["delta_min"], "delta_max": n_phi["delta_max"]}
    return out
