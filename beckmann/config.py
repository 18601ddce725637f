"""One option table, and the layered merge: defaults < config file < ``--set`` on the command line.

Every option beckmann understands is declared once, in :data:`OPTIONS`, with its type, default
and help, the ``[sweep]`` section included (its grid syntax is in :data:`SECTION_NOTES`). The
README's config reference is generated from this table (``beckmann config``),
the CLI's ``--set`` values are checked against it, and unknown keys are errors.
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "OPTIONS",
    "SECTION_NOTES",
    "ConfigError",
    "Option",
    "default_config",
    "load_config",
    "markdown_reference",
    "merge",
    "parse_set",
    "resolve",
]


class ConfigError(ValueError):
    """A configuration value or key is not valid."""


@dataclass(frozen=True)
class Option:
    """One configuration option.

    Attributes:
        type: One of ``int``, ``float``, ``str``, ``bool``, ``list``, ``table``.
        default: The value used when neither the file nor the command line sets one.
        help: One line for the reference.
        choices: Allowed values for a ``str`` option, or the named values a ``float`` option
            takes besides numbers (``"auto"``), or ``None``.
        minimum: Smallest allowed value of an ``int`` / ``float`` option, or ``None``.
    """

    type: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None


_DENSITY_KINDS = ("uniform", "expression", "gaussian_mixture", "image", "samples", "function")


def _density_options(role: str) -> dict[str, Option]:
    return {
        "kind": Option("str", "uniform", f"how the {role} density is given", _DENSITY_KINDS),
        "expr": Option("str", "", "expression in x, y, z and named params (kind=expression)"),
        "params": Option("table", {}, "named numeric parameters used in expr"),
        "weights": Option("list", [], "mixture weights (kind=gaussian_mixture)"),
        "means": Option("list", [], "mixture means, one list of d numbers per component"),
        "covariances": Option(
            "list", [], "mixture covariances: d x d matrices, or one number per component"
        ),
        "floor": Option("float", 0.0, "constant added to the density before normalising"),
        "path": Option("str", "", "file: image (.png/.npy), samples (.npy), function (run dir)"),
        "image_extent": Option(
            "list",
            [],
            "kind=image: box [x0, x1, y0, y1(, z0, z1)] the image covers, 0 outside; default: "
            "the mesh box, of the image's aspect. Row 0 is the top, the first/last pixels lie on "
            "the faces, values are bilinear",
        ),
        "field": Option("str", role, "field read from a run folder (kind=function)"),
        "bandwidth": Option(
            "float", 0.0, "KDE bandwidth (kind=samples); 0 = chosen by bandwidth_rule"
        ),
        "bandwidth_rule": Option(
            "str",
            "cv",
            "kind=samples, bandwidth = 0: cv (leave-one-out likelihood on a log grid around "
            "Scott's) or scott",
            ("cv", "scott"),
        ),
        "min_density": Option(
            "float", 1e-6, "the raw density must be >= this everywhere, else an error", minimum=0.0
        ),
    }


OPTIONS: dict[str, dict[str, Option]] = {
    "mesh": {
        "kind": Option(
            "str",
            "unit_square",
            "built-in mesh or a file",
            ("unit_square", "unit_cube", "disk", "lshape", "file"),
        ),
        "n": Option("int", 32, "cells per side for unit_square / unit_cube"),
        "h": Option("float", 0.05, "element size for the gmsh meshes (disk, lshape)"),
        "path": Option("str", "", "mesh file (.msh or .xdmf) when kind = file"),
        "cells": Option(
            "list",
            [],
            "physical groups (tags or names) of a .msh file that form the domain; default: "
            "the cells in some group (gmsh's convention), or all cells when there are no groups",
        ),
    },
    "source": _density_options("source"),
    "target": _density_options("target"),
    "solver": {
        "degree": Option("int", 2, "Lagrange degree of the potential (1, 2 or 3)"),
        "quadrature_degree": Option(
            "int",
            -1,
            "quadrature degree of the density right-hand sides; -1 = 2*degree when both densities "
            "are smooth (uniform, gaussian_mixture, an expression without abs/min/max/sqrt or "
            "non-integer powers), else 2*degree + 2",
        ),
        "method": Option(
            "str",
            "auto",
            "auto: gmg where the mesh allows it, else gamg; gmg: CG + geometric multigrid (primal, "
            "unit_square, n = m * 2^k with m <= 128); gamg: CG + algebraic multigrid (mixed: "
            "MINRES + block-diagonal AMG); mumps: direct. Not given, a sweep picks: mumps for "
            ">= 16 solves up to 2M dofs in 2-D (200k in 3-D)",
            ("auto", "gmg", "gamg", "mumps"),
        ),
        "formulation": Option(
            "str",
            "primal",
            "primal: φ in Lagrange P_k, F = ∇φ; mixed: F in Raviart-Thomas RT_k, φ in DG_{k-1}, "
            "div F = Π(p0 − p1) in every cell, F·n = 0 exactly (docs/mixed.md); both methods",
            ("primal", "mixed"),
        ),
        "rtol": Option(
            "float",
            "auto",
            "relative residual tolerance of the Krylov solve; auto: matched to the discretisation "
            "error, 1e-3 (h/d)^k but at most 1e-6 (h the largest cell, d the domain's diameter), "
            "for beckmann solve's primal CG; 1e-10 for sweeps, paths and the mixed solve",
            ("auto",),
        ),
        "petsc_options": Option("table", {}, "extra PETSc options, passed through as given"),
    },
    "output": {
        "dir": Option("str", "beckmann-run", "run folder"),
        "times": Option("list", [0.0, 0.5, 1.0], "times t at which the velocity is written"),
        "vtx": Option("bool", False, "also write native-degree VTX (.bp) files"),
        "checkpoint": Option("bool", True, "write a checkpoint that reloads on any rank count"),
    },
    # ``beckmann sweep`` only (beckmann.sweep validates the grid and the expressions' names).
    "sweep": {
        "parameters": Option(
            "table", {}, "the grid: one entry per parameter of the target/source expression"
        ),
        "group_size": Option(
            "int", 0, "ranks per group solving a share of θ; 0 = all ranks in one group"
        ),
        "block": Option(
            "int", 16, "right-hand sides per MUMPS block solve (MatMatSolve); 1 = one by one"
        ),
        "warm_start": Option(
            "bool", True, "GAMG: start each solve from the previous θ's potential"
        ),
        "store_flux": Option(
            "bool", True, "store the flux F = grad φ of every θ (DG_{k-1} values)"
        ),
        "continuity": Option("bool", True, "compute the continuity-in-θ report at the end"),
        "joint_points": Option(
            "int",
            0,
            "points (x, θ) for the joint Hölder estimate in (x, θ); 0 = off (e.g. 20000: on a "
            "small sweep it costs more than the solves)",
        ),
        "continuity_holder": Option(
            "bool",
            False,
            "add C^{k,α} norms of φ(θ) − φ(θ'), F(θ) − F(θ') and p(θ) − p(θ') (costly: field "
            "recovery per pair)",
        ),
        "holder_k": Option(
            "int", 0, "k of docs/math.md: φ in C^{k+2,α}, F in C^{k+1,α}, p1 − p0 in C^{k,α}"
        ),
        "holder_alpha": Option("float", 0.5, "Hölder exponent α in (0, 1] of the C^{k,α} norms"),
        "holder_pairs": Option("int", 12, "at most this many θ pairs for the C^{k,α} norms"),
        "method": Option(
            "str",
            "full",
            "full: one solve per θ; reduced: certified reduced basis (EIM of the target, one "
            "solve per basis function, docs/reduced.md)",
            ("full", "reduced"),
        ),
        "reduced_tol": Option(
            "float", 1e-3, "reduced: target certified bound on ‖∇e‖ relative to ‖∇φ‖"
        ),
        "reduced_max": Option("int", 64, "reduced: largest basis size"),
        "reduced_train": Option(
            "int",
            400,
            "reduced: θ the greedy's basis is validated on: the grid itself when it has at most "
            "this many, else a sub-grid of at most this many θ, edges included (product "
            "grids), or this many Latin-hypercube θ in the box; the greedy trains on a set "
            "0.36 times as large and retrains on this one if that misses one of its θ",
        ),
        "reduced_rhs": Option(
            "str",
            "interpolant",
            "reduced: the truth the bound is against; interpolant: the target's P_k nodal "
            "interpolant, b = M I_h p1 (certificate O(N) per θ, no solve); quadrature: the "
            "target at the quadrature points as beckmann solve (O(N_q) and a mass CG per θ)",
            ("interpolant", "quadrature"),
        ),
    },
}

#: Free-form notes printed after a section's table in the reference (``beckmann config``).
SECTION_NOTES: dict[str, str] = {
    "sweep": "\n".join(
        [
            "`[sweep.parameters]` gives one entry per parameter; the grid is the product of the",
            "entries, first parameter slowest:",
            "",
            "| entry | values |",
            "|---|---|",
            "| `theta = [0.3, 0.5]` or `theta = 0.4` | the listed values |",
            "| `theta = { linspace = [a, b, n] }` | n evenly spaced values, a and b included |",
            "| `theta = { random = [a, b, n], seed = 1 }` | n uniform values in [a, b), sorted |",
            "| `theta = { lhs = [a, b, n], seed = 2 }` | one column of a Latin hypercube; all "
            "`lhs` entries form one joint design (same n) |",
            "",
            "Every name must be a parameter of the target or source expression, and every "
            "expression parameter needs a value (from the grid or `[target.params]`).",
        ]
    ),
}


def default_config() -> dict[str, dict[str, Any]]:
    """Return a fresh nested dict with every option at its default."""
    return {
        s: {k: copy.deepcopy(o.default) for k, o in opts.items()} for s, opts in OPTIONS.items()
    }


def _coerce(section: str, key: str, value: Any) -> Any:
    opt = OPTIONS[section][key]
    name = f"{section}.{key}"
    ok: bool
    if opt.type == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif opt.type == "float":
        if isinstance(value, str) and opt.choices is not None and value in opt.choices:
            return value  # a named value of a numeric option (solver.rtol = "auto")
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif opt.type == "str":
        ok = isinstance(value, str)
    elif opt.type == "bool":
        ok = isinstance(value, bool)
    elif opt.type == "list":
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, dict)
    if not ok:
        named = ""
        if opt.choices and opt.type != "str":
            named = f" or {' / '.join(map(repr, opt.choices))}"
        raise ConfigError(f"{name} must be of type {opt.type}{named}, got {value!r}")
    if opt.type == "float" and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if opt.minimum is not None and value < opt.minimum:
        raise ConfigError(f"{name} must be >= {opt.minimum:g}, got {value!r}")
    if opt.type == "str" and opt.choices is not None and value not in opt.choices:
        raise ConfigError(f"{name} = {value!r} is not one of {', '.join(opt.choices)}")
    return value


def merge(
    base: dict[str, dict[str, Any]], layer: dict[str, Any], *, extra_sections: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """Merge one layer (a parsed TOML document) over ``base``; unknown keys are errors.

    Sections named in ``extra_sections`` (e.g. ``sweep``, owned by another module) are copied
    through unchecked for their owner to validate.
    """
    out = copy.deepcopy(base)
    for section, values in layer.items():
        if section in extra_sections:
            out[section] = _merge_tables(out.get(section), values)
            continue
        if section not in OPTIONS:
            raise ConfigError(
                f"unknown config section [{section}]; known: {', '.join(OPTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table, got {values!r}")
        for key, value in values.items():
            if key not in OPTIONS[section]:
                raise ConfigError(
                    f"unknown config key {section}.{key}; known in [{section}]: "
                    f"{', '.join(OPTIONS[section])}"
                )
            out[section][key] = _coerce(section, key, value)
    return out


def _merge_tables(old: Any, new: Any) -> Any:
    """Recursive merge of nested tables (``new`` wins); other values are replaced."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return copy.deepcopy(new)
    out = copy.deepcopy(old)
    for key, value in new.items():
        out[key] = _merge_tables(out.get(key), value)
    return out


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """Turn ``["solver.degree=3", 'target.expr="1+x"']`` into a nested layer.

    The value is read as a TOML value when it parses as one (numbers, booleans, lists, quoted
    strings, inline tables), else taken as a plain string.
    """
    layer: dict[str, Any] = {}
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        opt = OPTIONS.get(parts[0], {}).get(parts[-1]) if len(parts) == 2 else None
        if opt is not None and opt.type == "str" and not isinstance(value, str):
            value = raw.strip()  # e.g. target.expr=3 is the expression "3"
        node = layer
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with an earlier --set")
        node[parts[-1]] = value
    return layer


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a raw (unvalidated) layer, with a clear error when it is bad.

    Only a regular file of at most 16 MiB is read (never a device or FIFO), as UTF-8.
    """
    from beckmann._resources import regular_file

    p = regular_file(path, "config file", max_bytes=16 * 1024**2)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {str(p)!r}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {str(p)!r} is not UTF-8 text (invalid byte at offset {err.start})"
        ) from err
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {err}") from err


def resolve(
    path: str | Path | None = None,
    sets: list[str] | None = None,
    *,
    base: dict[str, Any] | None = None,
    extra_sections: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Defaults < ``base`` (e.g. the built-in example) < config file < ``--set`` values."""
    cfg = default_config()
    if base is not None:
        cfg = merge(cfg, base, extra_sections=extra_sections)
    if path is not None:
        cfg = merge(cfg, load_config(path), extra_sections=extra_sections)
    if sets:
        cfg = merge(cfg, parse_set(sets), extra_sections=extra_sections)
    return cfg


def markdown_reference() -> str:
    """The config reference as Markdown tables (the README embeds this output)."""
    lines: list[str] = []
    for section, opts in OPTIONS.items():
        lines += [f"**[{section}]**", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, o in opts.items():
            meaning = o.help + (f" ({' / '.join(o.choices)})" if o.choices else "")
            meaning += f" (>= {o.minimum:g})" if o.minimum is not None else ""
            lines.append(f"| `{key}` | {o.type} | `{o.default!r}` | {meaning} |")
        lines.append("")
        if section in SECTION_NOTES:
            lines += [SECTION_NOTES[section], ""]
    return "\n".join(lines)

