"""The validated ``[sweep]`` section, and θ values given by name.

The options and their defaults are declared in :data:`beckmann.config.OPTIONS` (section
``sweep``); the grid syntax is in :mod:`beckmann.sweep.grid`. Nothing here is collective.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from beckmann.config import OPTIONS
from beckmann.sweep.grid import Grid, make_grid

__all__ = ["SweepSpec", "parse_params", "parse_sweep", "with_params"]

#: Options that decide the stored results; the others (reports, grouping) may change on resume.
RESULT_OPTIONS = ("parameters", "block", "warm_start", "store_flux")


@dataclass
class SweepSpec:
    """A validated ``[sweep]`` section.

    Attributes:
        grid: The parameter values.
        options: The other ``[sweep]`` keys, with defaults filled in.
    """

    grid: Grid
    options: dict[str, Any] = field(default_factory=dict)


def _options(section: dict[str, Any]) -> dict[str, Any]:
    table = OPTIONS["sweep"]
    unknown = set(section) - set(table)
    if unknown:
        raise ValueError(
            f"unknown config key sweep.{sorted(unknown)[0]}; known in [sweep]: "
            f"{', '.join(table)}"
        )
    options: dict[str, Any] = {}
    for key, opt in table.items():
        if key == "parameters":
            continue
        value = section.get(key, opt.default)
        typ = {"int": int, "float": float, "bool": bool, "str": str}[opt.type]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ValueError(f"sweep.{key} must be of type {opt.type}, got {value!r}")
        if opt.choices is not None and value not in opt.choices:
            raise ValueError(f"sweep.{key} = {value!r} is not one of {', '.join(opt.choices)}")
        options[key] = value
    checks = (
        ("group_size", options["group_size"] >= 0, "must be >= 0"),
        ("block", options["block"] >= 1, "must be >= 1"),
        ("joint_points", options["joint_points"] >= 0, "must be >= 0"),
        ("holder_k", options["holder_k"] >= 0, "must be >= 0"),
        ("holder_alpha", 0.0 < options["holder_alpha"] <= 1.0, "must lie in (0, 1]"),
        ("holder_pairs", options["holder_pairs"] >= 1, "must be >= 1"),
        ("reduced_tol", options["reduced_tol"] > 0.0, "must be > 0"),
        ("reduced_max", options["reduced_max"] >= 1, "must be >= 1"),
        ("reduced_train", options["reduced_train"] >= 1, "must be >= 1"),
    )
    for key, ok, what in checks:
        if not ok:
            raise ValueError(f"sweep.{key} {what}, got {options[key]!r}")
    return options


def parse_sweep(cfg: dict[str, Any]) -> SweepSpec:
    """Validate the ``[sweep]`` section of a resolved config and build the grid.

    Also checks that every grid name is a parameter of the target or source expression and that
    every expression parameter has a value. Not collective (pure function of ``cfg``).

    Raises:
        ValueError: Naming the bad key, parameter or value.
    """
    from beckmann import density

    if cfg.get("solver", {}).get("formulation", "primal") != "primal":
        raise ValueError(
            "beckmann sweep solves the primal formulation only; solver.formulation = 'mixed' "
            "applies to `beckmann solve`"
        )
    section = cfg.get("sweep")
    if not isinstance(section, dict):
        raise ValueError("the config has no [sweep] section; add [sweep.parameters]")
    options = _options(section)
    grid = make_grid(section.get("parameters"))
    used: dict[str, frozenset[str]] = {}
    for role in ("target", "source"):
        sec = cfg[role]
        if sec["kind"] == "expression":
            used[role] = density.Expression(sec["expr"]).parameter_names
        else:
            used[role] = frozenset()
    for name in grid.names:
        if not any(name in u for u in used.values()):
            uses = "; ".join(f"{r} uses: {', '.join(sorted(u)) or 'none'}" for r, u in used.items())
            raise ValueError(
                f"sweep parameter {name!r} is not used by the target or source expression ({uses})"
            )
    for role, names in used.items():
        given = set(grid.names) | set(cfg[role].get("params", {}))
        for p in sorted(names - given):
            raise ValueError(
                f"{role} expression parameter {p!r} has no value: give it in [{role}.params] "
                "or [sweep.parameters]"
            )
    return SweepSpec(grid, options)


def with_params(section: dict[str, Any], theta: dict[str, float]) -> dict[str, Any]:
    """A density section with ``theta`` merged over its ``params`` (a copy)."""
    return {**section, "params": {**section.get("params", {}), **theta}}


def parse_params(items: list[str], names: list[str]) -> dict[str, float]:
    """θ from ``["NAME=VALUE", ...]``: every one of ``names`` once, numbers only.

    Raises:
        ValueError: A malformed item, an unknown name, a non-number or a missing name.
    """
    theta: dict[str, float] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--param expects NAME=VALUE, got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        if k not in names:
            raise ValueError(
                f"--param {k!r} is not a sweep parameter; the sweep has {', '.join(names)}"
            )
        if k in theta:
            raise ValueError(f"--param {k} is given twice; give each parameter once")
        try:
            theta[k] = float(v)
        except ValueError as e:
            raise ValueError(f"--param {item!r}: {v!r} is not a number") from e
    missing = [n for n in names if n not in theta]
    if missing:
        raise ValueError(f"--param needs a value for {', '.join(missing)}")
    return theta
