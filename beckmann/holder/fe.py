"""``C^{k,α}`` estimates of finite-element fields and of a solution's fields; collective.

The point cloud of a field is the owned nodes of continuous Lagrange spaces holding the field
and its derivatives (:func:`beckmann.holder.derivatives.recover_derivatives`), distributed like
the mesh. The scale window comes from the mesh (:func:`beckmann.holder.fit.mesh_window`), the
headline exponent is the slope of the mean oscillation of the field sampled at cell quadrature
points (:mod:`beckmann.holder.oscillation`, :data:`OSC_QUADRATURE`), and every result carries
a verdict (:func:`beckmann.holder.fit.classify`). See docs/holder.md.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann.holder.derivatives import (
    interior_mask,
    multi_indices,
    nodal_values,
    quadrature_values,
    recover_derivatives,
)
from beckmann.holder.fit import (
    DELTA_MIN_FACTOR,
    OCTAVES,
    classify,
    geometric_scales,
    profile_slopes,
    scale_window,
)
from beckmann.holder.oscillation import oscillation, oscillation_exponent
from beckmann.holder.pointcloud import Method, check_method, estimate, seminorm, sup_norm

__all__ = [
    "CONSTANT_CELL_FACTOR",
    "FIELDS",
    "MARGIN_FACTOR",
    "FieldName",
    "field_norms",
    "field_window_factor",
    "solution_field",
    "solution_norms",
    "window_factor",
]

FieldName = Literal["potential", "flux", "velocity", "hessian", "density-difference"]
FIELDS: tuple[str, ...] = ("potential", "flux", "velocity", "hessian", "density-difference")

#: Default boundary margin, in units of ``h``, when derivatives of order >= 2 are measured.
MARGIN_FACTOR = 2.0

#: Default ``delta_min`` in units of ``h`` for a field that is constant in each cell (``D^q`` of a
#: ``P_q`` field, averaged at the nodes): its modulus below about ``6h`` is that of the averaging
#: (measured on the square's cusp at P2: local slopes near 1 below ``6h``, ½ above).
CONSTANT_CELL_FACTOR = 6.0

#: Degree of the cell quadrature whose points sample the mean oscillation (3 points per
#: triangle). Measured on the L-shape's φ ~ r^{2/3} (P2, h = 0.1, 0.05, 0.025): 0.655, 0.650,
#: 0.671 against 0.54, 0.54, 0.59 from the nodes, whose uneven weights and the node at the
#: corner's tip bias the smallest cubes.
OSC_QUADRATURE = 2

#: How many derivatives of the potential each field is (for the default margin and the orders
#: up to which cellwise derivatives are exact).
_ORDER = {"potential": 0, "flux": 1, "velocity": 1, "hessian": 2, "density-difference": 0}


def _selection(
    X: npt.NDArray[np.float64],
    keep: npt.NDArray[np.bool_] | None,
    center: npt.NDArray[np.float64] | None,
    radius: float | None,
) -> npt.NDArray[np.bool_]:
    sel = np.ones(X.shape[0], dtype=bool) if keep is None else keep.copy()
    if center is not None and radius is not None:
        sel &= np.linalg.norm(X - center[None, : X.shape[1]], axis=1) <= radius
    return sel


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
    h_factor: float | None = None,
    octaves: float = OCTAVES,
    per_octave: int = 4,
    margin: float | None = None,
    center: npt.ArrayLike | None = None,
    radius: float | None = None,
    base_order: int = 0,
    exact_order: int | None = None,
    recovery: str = "local",
    name: str = "field",
) -> dict[str, Any]:
    """``C^{k,α}`` estimates of a finite-element field; collective.

    Args:
        u: A ``fem.Function``, a UFL expression or a callable (see ``recover_derivatives``).
        k: Derivative order of ``C^{k,α}``.
        alpha: Seminorm exponent in ``[0, 1]`` or ``"auto"`` (the headline exponent, clipped).
        msh: The mesh (callables; UFL expressions whose mesh cannot be found).
        degree: Lagrange degree of the sampling spaces (default ``u``'s, or 2).
        method: ``"exact"`` or ``"fast"`` (the same numbers).
        delta_min: Window start; default ``h_factor · h`` (``h`` the largest cell diameter).
        delta_max: Window end; default ``2^octaves · delta_min``, capped at a quarter of the
            domain's diameter (bounding-box diagonal; ``2 radius`` for a ball).
        h_factor: See ``delta_min``; default :func:`window_factor` of the cellwise degree of
            ``D^k u`` (3, or 6 for a field constant in each cell).
        octaves: See ``delta_max``.
        per_octave: Scales per factor 2.
        margin: Keep only nodes at least this far from the boundary (distance to the nearest
            boundary vertex). Default ``MARGIN_FACTOR · h`` when ``k + base_order >= 2``
            (recovered derivatives are least accurate at the boundary), else 0.
        center: With ``radius``: analyse only the ball ``|x − center| <= radius``.
        radius: See ``center``.
        base_order: How many derivatives of the solved potential ``u`` is (0 for ``φ``, 1 for
            ``∇φ``, 2 for ``D²φ``); sets the default margin and ``exact_order``.
        exact_order: Orders up to which cellwise derivatives are exact (default
            ``degree − base_order``, at least 0).
        recovery: ``"local"`` (cellwise derivatives, nodal averaging) or ``"projection"``.
        name: The field's name in the result.

    Returns:
        A strict-JSON dict: ``field``, ``k``, ``alpha``, ``h``, ``sup_norms``
        (``[Σ_{|β|=j} sup|D^β u| for j = 0..k]``), ``sup_tensor`` (``[sup |D^j u|]``, Frobenius),
        ``seminorm`` (``Σ_{|β|=k} [D^β u]_α``, pairs ``>= delta_min`` apart), ``seminorms``
        (per ``β``), ``norm`` (``Σ sup_norms + seminorm``, docs/math.md §5), ``exponent`` (the
        headline increment fit on ``ω`` of the tensor ``D^k u``, with its band; ``null`` for a
        constant field), ``exponent_plain``, ``estimator``, ``verdict``, ``peak`` and
        ``sup_profile`` (the unboundedness test), ``scales``, ``modulus``, ``delta_min``,
        ``delta_max``, ``window_rule``, ``margin``, ``margin_rule``, ``center``, ``radius``,
        ``recovery``, ``method``, ``n_points``.
    """
    from beckmann import mesh as bmesh

    check_method(method)
    if int(base_order) < 0:
        raise ValueError(f"base_order must be >= 0, got {base_order!r}")
    if (center is None) != (radius is None):
        raise ValueError("center and radius go together")
    c = None if center is None else np.asarray(center, dtype=np.float64).ravel()
    if radius is not None and not (float(radius) > 0 and math.isfinite(float(radius))):
        raise ValueError(f"radius must be > 0, got {radius!r}")
    q_hint = degree
    if exact_order is None and q_hint is not None:
        exact_order = max(0, int(q_hint) - int(base_order))
    ws = recover_derivatives(
        u, k, msh=msh, degree=degree, exact_order=exact_order, recovery=recovery
    )
    msh = ws[0].function_space.mesh
    comm = msh.comm
    q = int(ws[0].function_space.ufl_element().embedded_superdegree)
    cell_degree = (q if exact_order is None else int(exact_order)) - int(k)
    auto_factor = h_factor is None
    d = int(msh.geometry.dim)
    if c is not None and c.size != d:
        raise ValueError(f"center must have {d} coordinates, got {c.size}")
    info = bmesh.describe(msh)
    h = float(info["hmax"])
    diam = float(np.linalg.norm(np.subtract(info["bbox"][1], info["bbox"][0])))
    if radius is not None:
        diam = min(diam, 2.0 * float(radius))
    if auto_factor:
        h_factor = window_factor(cell_degree)
        if 2.0 * h_factor * h > 0.25 * diam:  # coarse mesh: less than an octave left
            h_factor = DELTA_MIN_FACTOR
    assert h_factor is not None
    dmin, dmax = scale_window(h, diam, delta_min, delta_max, factor=h_factor, octaves=octaves)
    if margin is None:
        margin_rule = f"{MARGIN_FACTOR:g} h (derivative order >= 2)"
        mg = MARGIN_FACTOR * h if int(k) + int(base_order) >= 2 else 0.0
        if mg == 0.0:
            margin_rule = "0 (derivative order < 2)"
    else:
        mg, margin_rule = float(margin), "given"
    if not (mg >= 0.0):
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    keep = interior_mask(ws[0], mg) if mg > 0 else None
    X0, _ = nodal_values(ws[0])
    sel = _selection(X0, keep, c, radius)
    if not comm.allreduce(int(np.count_nonzero(sel)), MPI.SUM):
        where = f"margin {mg:g} ({margin_rule})" + (
            f", center {list(map(float, c))} and radius {radius:g}" if c is not None else "")
        raise ValueError(f"no node of the field is left to measure: {where} leave(s) nothing "
                         "of the domain; lower the margin or move the ball into the domain")
    value_size = int(np.prod(ws[0].ufl_shape)) if ws[0].ufl_shape else 1
    sup_norms, sup_tensor = [], []
    for j, w in enumerate(ws):
        _, vals = nodal_values(w)
        vals = vals[sel]
        sup_tensor.append(sup_norm(vals, comm))
        sup_norms.append(
            float(sum(sup_norm(vals[:, cols], comm) for _, cols in multi_indices(value_size, d, j)))
        )
    X, top = nodal_values(ws[-1])
    X, top = X[sel], top[sel]
    betas = multi_indices(value_size, d, int(k))
    cols_all = np.concatenate([cc for _, cc in betas])
    values = top[:, cols_all]
    scales = geometric_scales(dmin, dmax, per_octave)
    # the mean oscillation is an integral mean: sampled at quadrature points with their weights
    # (nodes weigh unevenly, and a node at a cusp's tip biases small cubes: OSC_QUADRATURE)
    Xq, Vq, Wq = quadrature_values(ws[-1], OSC_QUADRATURE)
    selq = np.ones(Xq.shape[0], dtype=bool) if mg == 0.0 else interior_mask(ws[0], mg, Xq)
    selq = _selection(Xq, selq, c, radius)
    sides, osc = oscillation(Xq[selq], Vq[selq][:, cols_all], comm, scales, weights=Wq[selq])
    raw, head = oscillation_exponent(sides, osc, sup_tensor[-1], dmin, dmax)
    use_osc = math.isfinite(head.estimate)
    auto = alpha == "auto"
    if auto and use_osc:
        alpha = float(np.clip(head.estimate, 0.0, 1.0))
    res = estimate(
        X,
        values,
        comm,
        alpha=alpha,
        scales=scales,
        delta_min=dmin,
        delta_max=dmax,
        method=method,
    )
    rd = res.to_dict()
    if use_osc:
        constant = not np.any(res.modulus > 0)
        win = (res.scales >= dmin * (1 - 1e-12)) & (res.scales <= dmax * (1 + 1e-12))
        slopes = profile_slopes(res.scales[win], res.sup_profile[win])
        rd["exponent"], rd["estimator"] = head.to_dict(), "oscillation"
        rd["verdict"] = classify(head, slopes, constant)
        if constant:
            rd["exponent"] = {"estimate": None, "low": None, "high": None}
    else:
        rd["estimator"] = res.estimator
    # one multi-index (k = 0): its seminorm is the tensor's, already measured by estimate
    seminorms = {
        "".join(str(i) for i in t) or "0": (
            res.seminorm
            if len(betas) == 1
            else seminorm(X, top[:, cols], comm, res.alpha, delta_min=dmin, method=method)
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
        "exponent": rd["exponent"],
        "exponent_increment": rd["exponent_increment"],
        "exponent_plain": rd["exponent_plain"],
        "exponent_oscillation": raw.to_dict(),
        "estimator": rd["estimator"],
        "verdict": rd["verdict"],
        "peak": rd["peak"],
        "sup_profile": rd["sup_profile"],
        "scales": rd["scales"],
        "modulus": rd["modulus"],
        "oscillation_scales": [float(x) for x in sides],
        "oscillation": [float(x) if math.isfinite(x) else None for x in osc],
        "delta_min": dmin,
        "delta_max": dmax,
        "window_rule": (
            "given"
            if delta_min is not None and delta_max is not None
            else f"delta_min = {h_factor:g} h, delta_max = 2^{octaves:g} delta_min "
            "(capped at a quarter of the diameter)"
        ),
        "margin": mg,
        "margin_rule": margin_rule,
        "center": None if c is None else [float(x) for x in c],
        "radius": None if radius is None else float(radius),
        "recovery": recovery,
        "method": method,
        "n_points": res.n_points,
    }


def window_factor(cell_degree: int) -> float:
    """Default ``delta_min / h`` for a field of cellwise polynomial degree ``cell_degree``.

    :data:`~beckmann.holder.fit.DELTA_MIN_FACTOR` (3), or :data:`CONSTANT_CELL_FACTOR` (6) for a
    field that is constant in each cell (degree ``<= 0``: ``D^q`` of a ``P_q`` field, or a
    patch-recovered derivative beyond the degree).
    """
    return DELTA_MIN_FACTOR if int(cell_degree) >= 1 else CONSTANT_CELL_FACTOR


def field_window_factor(field_name: str, degree: int) -> float:
    """:func:`window_factor` of a solution's field (``k = 0``) when ``φ`` is ``P_degree``."""
    if field_name not in _ORDER:
        raise ValueError(f"unknown field {field_name!r}; choose one of {', '.join(FIELDS)}")
    return window_factor(int(degree) - _ORDER[field_name])


def solution_field(sol: Any, field_name: str, t: float = 0.0) -> Any:
    """The UFL expression (or function) of one of a solution's :data:`FIELDS`.

    ``potential`` φ, ``flux`` ∇φ, ``velocity`` ``v_t = ∇φ / ((1 − t) p0 + t p1)``, ``hessian``
    D²φ and ``density-difference`` ``p1 − p0``.
    """
    from beckmann._dolfinx import ufl
    from beckmann.fields import velocity_expression

    F = getattr(sol, "flux_rt", None)  # a mixed run (beckmann.mixed): RT flux, DG potential
    if F is not None and field_name in ("potential", "hessian"):
        raise ValueError(
            f"holder --field {field_name} needs a continuous potential; a mixed run's φ is "
            "DG (measure --field flux, velocity or density-difference)"
        )
    F = ufl.grad(sol.phi) if F is None else F
    if field_name == "potential":
        return sol.phi
    if field_name == "flux":
        return F
    if field_name == "hessian":
        return ufl.grad(ufl.grad(sol.phi))
    if field_name == "density-difference":
        return sol.p1 - sol.p0
    if field_name == "velocity":
        if not 0.0 <= float(t) <= 1.0:
            raise ValueError(f"time t must lie in [0, 1], got {t!r}")
        return velocity_expression(F, sol.p0, sol.p1, float(t))
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
    """:func:`field_norms` of a solution's field, sampled in the potential's degree; collective.

    Cellwise derivatives are exact up to the order the potential's degree allows (``D^j`` of
    ``∇φ_h`` for ``j <= q − 1``, and so on); beyond, patch-local recovery.
    """
    expr = solution_field(sol, field_name, t)
    # a mixed run's RT_k flux is of degree k, as ∇φ of a P_{k+1} potential would be
    lift = getattr(sol, "flux_rt", None) is not None and field_name in ("flux", "velocity")
    kwargs.setdefault("degree", int(sol.degree) + int(lift))
    kwargs.setdefault("base_order", _ORDER[field_name])
    out = field_norms(expr, k, alpha, msh=sol.msh, name=field_name, **kwargs)
    if field_name == "velocity":
        out["time"] = float(t)
    return out
