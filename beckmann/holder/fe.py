"""``C^{k,α}`` estimates of finite-element fields and of a solution's fields; collective."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from beckmann.holder.derivatives import (
    interior_mask,
    multi_indices,
    nodal_values,
    recover_derivatives,
)
from beckmann.holder.pointcloud import Method, check_method, estimate, seminorm, sup_norm

__all__ = ["FIELDS", "FieldName", "field_norms", "solution_field", "solution_norms"]

FieldName = Literal["potential", "flux", "velocity"]
FIELDS: tuple[str, ...] = ("potential", "flux", "velocity")


def field_norms(
    u: Any,
    k: int = 0,
    alpha: float | Literal["auto"] = "auto",
    *,
    msh: Any = None,
    degree: int | None = None,
    method: Method = "fast",
    delta_min: float | None = None,
    delta_max: float | None = None,
    h_factor: float = 2.0,
    per_octave: int = 4,
    margin: float = 0.0,
    name: str = "field",
) -> dict[str, Any]:
    """``C^{k,α}`` estimates of a finite-element field; collective.

    Derivatives come from :func:`recover_derivatives` (repeated L2 gradient recovery into
    continuous Lagrange); every estimator is evaluated at the owned nodes of those spaces, so the
    point cloud is distributed like the mesh. The scale window is ``[delta_min, delta_max]`` with
    default ``delta_min = h_factor · h`` (``h`` the largest cell diameter) and ``delta_max`` a
    quarter of the domain's diameter: below a few ``h`` the discrete field is measured.

    ``margin > 0`` keeps only the nodes at least ``margin`` away from the boundary (distance to
    the nearest boundary vertex): interior estimates. Recovered derivatives are least accurate
    at the boundary (one-sided projection, and the corners of a polygonal approximation of a
    curved boundary), which matters for ``k >= 2``; the global norm of MATH.md §3 is
    ``margin = 0``, the default.

    Returns:
        A dict with ``field``, ``k``, ``alpha``, ``h``, ``sup_norms`` (``[Σ_{|β|=j} sup|D^β u|
        for j = 0..k]``), ``sup_tensor`` (``[sup |D^j u|]``, Frobenius norm), ``seminorm``
        (``Σ_{|β|=k} [D^β u]_α``, pairs ``≥ delta_min`` apart), ``seminorms`` (per ``β``),
        ``norm`` (``Σ sup_norms + seminorm``, the ``C^{k,α}`` norm of MATH.md §3), ``exponent``
        (fitted on ``ω`` of the whole tensor ``D^k u``), ``scales``, ``modulus``, ``delta_min``,
        ``delta_max``, ``method``, ``n_points``. ``alpha="auto"`` uses the fitted exponent,
        clipped to ``[0, 1]``.
    """
    from beckmann import mesh as bmesh

    check_method(method)
    ws = recover_derivatives(u, k, msh=msh, degree=degree)
    msh = ws[0].function_space.mesh
    comm = msh.comm
    info = bmesh.describe(msh)
    h = float(info["hmax"])
    diam = float(np.linalg.norm(np.subtract(info["bbox"][1], info["bbox"][0])))
    dmin = h_factor * h if delta_min is None else float(delta_min)
    dmax = 0.25 * diam if delta_max is None else float(delta_max)
    if not (0.0 < dmin < dmax):
        raise ValueError(
            f"empty scale window: delta_min={dmin:g} >= delta_max={dmax:g}; the mesh is too "
            "coarse for this window (refine it, or lower h_factor / raise delta_max)"
        )
    value_size = int(np.prod(ws[0].ufl_shape)) if ws[0].ufl_shape else 1
    d = int(msh.geometry.dim)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    keep = interior_mask(ws[0], margin) if margin > 0 else None
    sup_norms, sup_tensor = [], []
    for j, w in enumerate(ws):
        _, vals = nodal_values(w)
        if keep is not None:
            vals = vals[keep]
        sup_tensor.append(sup_norm(vals, comm))
        sup_norms.append(
            float(sum(sup_norm(vals[:, cols], comm) for _, cols in multi_indices(value_size, d, j)))
        )
    X, top = nodal_values(ws[-1])
    if keep is not None:
        X, top = X[keep], top[keep]
    betas = multi_indices(value_size, d, int(k))
    cols_all = np.concatenate([c for _, c in betas])
    top_unique = top[:, cols_all]
    res = estimate(
        X,
        top_unique,
        comm,
        alpha=alpha,
        delta_min=dmin,
        delta_max=dmax,
        method=method,
        per_octave=per_octave,
    )
    seminorms = {
        "".join(str(i) for i in t) or "0": seminorm(
            X, top[:, cols], comm, res.alpha, delta_min=dmin, method=method
        )
        for t, cols in betas
    }
    semi = float(sum(seminorms.values()))
    return {
        "field": name,
        "k": int(k),
        "alpha": res.alpha,
        "h": h,
        "sup_norms": sup_norms,
        "sup_tensor": sup_tensor,
        "seminorm": semi,
        "seminorms": seminorms,
        "seminorm_tensor": res.seminorm,
        "norm": float(sum(sup_norms) + semi),
        "exponent": res.exponent.to_dict(),
        "exponent_increment": res.exponent_increment.to_dict(),
        "scales": [float(s) for s in res.scales],
        "modulus": [float(w) for w in res.modulus],
        "delta_min": dmin,
        "delta_max": dmax,
        "margin": float(margin),
        "method": method,
        "n_points": res.n_points,
    }


def solution_field(sol: Any, field_name: str, t: float = 0.0) -> Any:
    """The UFL expression (or function) of a solution's ``potential``, ``flux`` or ``velocity``."""
    from beckmann._dolfinx import ufl
    from beckmann.fields import velocity_expression

    if field_name == "potential":
        return sol.phi
    if field_name == "flux":
        return ufl.grad(sol.phi)
    if field_name == "velocity":
        if not 0.0 <= float(t) <= 1.0:
            raise ValueError(f"time t must lie in [0, 1], got {t!r}")
        return velocity_expression(ufl.grad(sol.phi), sol.p0, sol.p1, float(t))
    raise ValueError(f"unknown field {field_name!r}; choose one of {', '.join(FIELDS)}")


def solution_norms(
    sol: Any,
    field_name: str = "potential",
    k: int = 0,
    alpha: float | Literal["auto"] = "auto",
    *,
    t: float = 0.0,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`field_norms` of a solution's field, recovered in the potential's degree; collective.

    ``flux`` and ``velocity`` are projected into continuous vector Lagrange of the potential's
    degree first, then differentiated by recovery like any field.
    """
    expr = solution_field(sol, field_name, t)
    kwargs.setdefault("degree", int(sol.degree))
    out = field_norms(expr, k, alpha, msh=sol.msh, name=field_name, **kwargs)
    if field_name == "velocity":
        out["time"] = float(t)
    return out
