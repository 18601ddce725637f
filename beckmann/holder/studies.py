"""Regularity studies: one config solved on several mesh levels, Hölder estimates on one window.

``study(config, levels)`` solves the Beckmann problem of a config on ``levels`` meshes (halving
``mesh.h``, or doubling ``mesh.n``), measures each field on one fixed scale window and with one
fixed boundary margin (the coarsest level's defaults, so every level sees the same scales and
the same region), and reports per level and
field the headline exponent with its band, the seminorm at a fixed ``α``, the sup norm, the
verdict, and the observed rates across levels. With expectations ``FIELD=EXPONENT±TOL`` it says
whether the finest level's exponents are within tolerance: a regression test in one call.
Collective (every rank returns the same dict). See docs/holder.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beckmann._dolfinx import MPI
from beckmann.holder.fe import FIELDS, field_window_factor, solution_norms
from beckmann.holder.fit import BLOWUP_SLOPE, mesh_window, scale_window

__all__ = ["DEFAULT_FIELDS", "Expectation", "parse_expectation", "study"]

#: The fields a study measures by default.
DEFAULT_FIELDS: tuple[str, ...] = ("potential", "flux", "hessian")

_EXPECT = re.compile(
    r"^\s*(?P<field>[A-Za-z-]+)\s*=\s*(?P<value>[-+0-9.eE]+)\s*(?:±|\+-|\+/-)\s*(?P<tol>[0-9.eE]+)\s*$"
)


@dataclass(frozen=True)
class Expectation:
    """``field`` should read the exponent ``exponent`` within ``tol`` at the finest level."""

    field: str
    exponent: float
    tol: float

    def check(self, measured: float | None) -> bool:
        """Whether ``measured`` lies within ``exponent ± tol`` (``None`` never does)."""
        return measured is not None and abs(measured - self.exponent) <= self.tol * (1 + 1e-12)


def parse_expectation(text: str) -> Expectation:
    """``FIELD=EXPONENT±TOL`` (ASCII ``+-`` or ``+/-`` for ``±``) as an :class:`Expectation`."""
    m = _EXPECT.match(text)
    if m is None:
        raise ValueError(f"expectation must read FIELD=EXPONENT±TOL (or +-), got {text!r}")
    field = m.group("field")
    if field not in FIELDS:
        raise ValueError(f"unknown field {field!r} in {text!r}; choose one of {', '.join(FIELDS)}")
    try:
        value, tol = float(m.group("value")), float(m.group("tol"))
    except ValueError as err:
        raise ValueError(f"expectation {text!r}: {err}") from err
    if not (math.isfinite(value) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"expectation {text!r} needs a finite exponent and tolerance >= 0")
    return Expectation(field, value, tol)


def _rate(a: float, b: float, ha: float, hb: float) -> float | None:
    """Growth rate ``log(b/a) / log(ha/hb)``: ``q ~ h^{−rate}``; ``None`` when undefined."""
    if a > 0 and b > 0 and ha > hb > 0:
        return float(math.log(b / a) / math.log(ha / hb))
    return None


def _check_finest(
    levels: int, key: str, start: float, ndofs: int, info: dict[str, Any], degree: int,
    comm: MPI.Comm,
) -> None:
    """Refuse a study whose finest level would not fit in memory, from level 0's size.

    Each level has 2^d times the cells and (about) the unknowns of the one before, so the finest
    of ``levels`` is known once level 0 is solved; checked before level 1 starts.
    """
    from beckmann._resources import require_memory, solve_bytes

    d = int(info["gdim"])
    growth = float(2**d) ** (int(levels) - 1)
    finest = start / 2 ** (levels - 1) if key == "h" else int(start) * 2.0 ** (levels - 1)
    dofs, cells = ndofs * growth, float(info["cells"]) * growth
    require_memory(
        solve_bytes(dofs, cells, d, max(degree, 1)),
        f"study --levels {levels}: the finest level (mesh.{key} = {finest:.6g}, "
        f"{dofs:.3g} unknowns)",
        "lower --levels",
        ranks=comm.size,
    )


def study(
    config: str | Path | dict[str, Any] | None,
    levels: int,
    *,
    refine: str = "auto",
    fields: tuple[str, ...] | list[str] = DEFAULT_FIELDS,
    expect: tuple[Expectation | str, ...] | list[Expectation | str] = (),
    alpha: float | None = None,
    delta_min: float | None = None,
    delta_max: float | None = None,
    sets: list[str] | None = None,
    method: str = "fast",
    comm: MPI.Comm = MPI.COMM_WORLD,
    keep_solutions: bool = False,
) -> dict[str, Any]:
    """A regularity study of a config over ``levels`` mesh levels; collective.

    Args:
        config: A TOML path, a resolved config dict, or ``None`` for the defaults.
        levels: Number of mesh levels, ``>= 2``.
        refine: ``"h"`` halves ``mesh.h`` per level (gmsh meshes), ``"n"`` doubles ``mesh.n``
            (``unit_square`` / ``unit_cube``), ``"auto"`` (default) the one the mesh kind uses.
            A refinement the mesh kind ignores (``h`` on a unit square, any on a mesh file) is
            an error: it would repeat one mesh on every level.
        fields: Names from :data:`beckmann.holder.fe.FIELDS`.
        expect: Expectations (objects or ``FIELD=EXPONENT±TOL`` strings).
        alpha: The fixed exponent of the seminorms; default per field its expected exponent
            (clipped to ``[0, 1]``), else 0.5.
        delta_min: Window start; default the coarsest level's ``3h`` (``6h`` for a field that is
            constant in each cell, :func:`beckmann.holder.fe.window_factor`).
        delta_max: Window end; default ``8 delta_min`` (capped at a quarter of the diameter).
        sets: ``SECTION.KEY=VALUE`` overrides applied to every level (before the refinement).
        method: ``"exact"`` or ``"fast"``.
        comm: Communicator.
        keep_solutions: Also return the solutions under ``"solutions"`` (not JSON).

    Returns:
        A strict-JSON dict: ``levels`` (per level ``h``, ``ndofs``, ``fields``: per field
        ``exponent``, ``estimator``, ``verdict``, ``alpha``, ``seminorm``, ``sup``, ``scales``,
        ``modulus``), ``window``, ``fields`` (per field the finest level's ``exponent`` and
        ``verdict``, ``sup_rates`` and ``seminorm_rates`` between consecutive levels,
        ``exponents`` per level, and the study ``verdict``: ``"unbounded"`` when the sup norm
        grows at a rate ``>= BLOWUP_SLOPE`` between the last two levels and the finest level
        does not read Hölder with a positive exponent), ``expectations``
        (each with ``measured`` and ``ok``), and ``ok`` (all expectations met).
    """
    from beckmann import config as bconfig
    from beckmann import mesh as bmesh
    from beckmann import pipeline

    if int(levels) != levels or levels < 2:
        raise ValueError(f"a study needs levels >= 2, got {levels!r}")
    if refine not in ("auto", "h", "n"):
        raise ValueError(f"refine must be 'auto', 'h' or 'n', got {refine!r}")
    fields = tuple(fields)
    for f in fields:
        if f not in FIELDS:
            raise ValueError(f"unknown field {f!r}; choose one of {', '.join(FIELDS)}")
    exps = [e if isinstance(e, Expectation) else parse_expectation(e) for e in expect]
    for e in exps:
        if e.field not in fields:
            fields = (*fields, e.field)
    if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    if isinstance(config, dict):
        base_cfg = bconfig.resolve(None, list(sets or []), base=config)
    else:
        base_cfg = bconfig.resolve(config, list(sets or []))
    kind = base_cfg["mesh"]["kind"]
    uses = {"unit_square": "n", "unit_cube": "n", "disk": "h", "lshape": "h"}.get(kind)
    if uses is None:
        raise ValueError(
            f"a study refines a built-in mesh; mesh.kind = {kind!r} (a mesh file) cannot be "
            "refined: use unit_square, unit_cube, disk or lshape"
        )
    if refine == "auto":
        refine = uses
    if refine != uses:
        raise ValueError(
            f"--refine {refine} changes mesh.{refine}, which mesh.kind = {kind!r} does not use "
            f"(every level would be the same mesh): use --refine {uses}"
        )
    key = refine
    start = base_cfg["mesh"][key]
    alphas = {}
    for f in fields:
        e = next((x for x in exps if x.field == f), None)
        alphas[f] = (
            float(alpha)
            if alpha is not None
            else (min(max(e.exponent, 0.0), 1.0) if e is not None else 0.5)
        )
    out_levels: list[dict[str, Any]] = []
    solutions = []
    window: tuple[float, float] | None = None
    windows: dict[str, tuple[float, float]] = {}
    margins: dict[str, float] = {}
    for lev in range(int(levels)):
        value = start / 2**lev if refine == "h" else int(start) * 2**lev
        cfg = bconfig.resolve(None, [f"mesh.{key}={value}"], base=base_cfg)
        sol = pipeline.solve(cfg, comm)
        info = bmesh.describe(sol.msh)
        h = float(info["hmax"])
        if window is None:
            diam = math.dist(info["bbox"][0], info["bbox"][1])
            window = scale_window(h, diam, delta_min, delta_max)
            for f in fields:
                # a field constant in each cell starts at 6h (fe.window_factor)
                factor = field_window_factor(f, int(sol.degree))
                if delta_min is None and delta_max is None and 2 * factor * h <= 0.25 * diam:
                    windows[f] = mesh_window(h, diam, factor=factor)
                else:
                    windows[f] = window
        per_field = {}
        for f in fields:
            r = solution_norms(
                sol,
                f,
                0,
                alphas[f],
                delta_min=windows[f][0],
                delta_max=windows[f][1],
                method=method,  # type: ignore[arg-type]
                margin=margins.get(f),
            )
            # one fixed margin too (the coarsest level's default): a margin that shrinks with
            # h lets the sup of, e.g., D²φ grow toward the boundary and read as a blow-up rate
            margins.setdefault(f, float(r["margin"]))
            per_field[f] = {
                k: r[k]
                for k in (
                    "exponent",
                    "exponent_plain",
                    "estimator",
                    "verdict",
                    "alpha",
                    "seminorm",
                    "scales",
                    "modulus",
                    "margin",
                )
            }
            per_field[f]["sup"] = r["sup_tensor"][0]
        ndofs = int(sol.V.dofmap.index_map.size_global)
        if lev == 0:
            _check_finest(levels, key, start, ndofs, info, int(sol.degree), comm)
        out_levels.append({"level": lev, key: value, "h": h, "ndofs": ndofs, "fields": per_field})
        if keep_solutions:
            solutions.append(sol)
    assert window is not None
    summary: dict[str, Any] = {}
    for f in fields:
        rows = [lv["fields"][f] for lv in out_levels]
        hs = [lv["h"] for lv in out_levels]
        sup_rates = [
            _rate(rows[i]["sup"], rows[i + 1]["sup"], hs[i], hs[i + 1])
            for i in range(len(rows) - 1)
        ]
        semi_rates = [
            _rate(rows[i]["seminorm"], rows[i + 1]["seminorm"], hs[i], hs[i + 1])
            for i in range(len(rows) - 1)
        ]
        last = sup_rates[-1]
        verdict = rows[-1]["verdict"]
        if last is not None and last >= BLOWUP_SLOPE and verdict != "holder":
            # a field that reads Hölder with a positive exponent on the window is bounded: its
            # sup converging from below (a cusp resolved as h shrinks, sup − C h^α) is no blow-up
            verdict = "unbounded"
        elif verdict == "unbounded":
            verdict = "holder" if (rows[-1]["exponent"]["estimate"] or 0) > 0 else verdict
        summary[f] = {
            "exponent": rows[-1]["exponent"],
            "estimator": rows[-1]["estimator"],
            "exponents": [r["exponent"]["estimate"] for r in rows],
            "alpha": alphas[f],
            "seminorms": [r["seminorm"] for r in rows],
            "sups": [r["sup"] for r in rows],
            "sup_rates": sup_rates,
            "seminorm_rates": semi_rates,
            "verdict": verdict,
            "window": {"delta_min": windows[f][0], "delta_max": windows[f][1]},
        }
    checks = []
    for e in exps:
        measured = summary[e.field]["exponent"]["estimate"]
        checks.append(
            {
                "field": e.field,
                "expected": e.exponent,
                "tol": e.tol,
                "measured": measured,
                "ok": e.check(measured),
            }
        )
    result: dict[str, Any] = {
        "refine": refine,
        "levels": out_levels,
        "window": {"delta_min": window[0], "delta_max": window[1]},
        "fields": summary,
        "expectations": checks,
        "ok": all(c["ok"] for c in checks),
    }
    if keep_solutions:
        result["solutions"] = solutions
    return result
