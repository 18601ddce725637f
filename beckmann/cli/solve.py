"""``beckmann solve``: one Beckmann solve into a run folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from beckmann.cli.common import add_set_option

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``solve`` to the subcommands."""
    p = sub.add_parser("solve", help="solve for potential, flux and velocity")
    p.add_argument("config", nargs="?", help="TOML config (default: the built-in example)")
    add_set_option(p)
    p.add_argument("--out", help="run folder (default: output.dir)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing run folder (whole)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace, comm: Any) -> int:
    from beckmann import config, pipeline

    base = None if args.config else _example_base(args.set)
    cfg = config.resolve(args.config, args.set, base=base)
    out = Path(args.out) if args.out else Path(cfg["output"]["dir"])
    sol = pipeline.run(cfg, comm, out=out, overwrite=args.overwrite)
    if comm.rank == 0 and not args.quiet:
        info = sol.info
        keys = ("ndofs", "ranks", "degree", "iterations", "beckmann_cost", "residual", "hmax")
        brief = {k: info[k] for k in keys}
        if info.get("formulation") == "mixed":  # beckmann.mixed_run
            brief["formulation"] = "mixed"
            brief["divergence_defect"] = info["divergence_defect"]
        brief["seconds"] = round(sum(info["timings"].values()), 3)
        brief["out"] = str(out)
        print(json.dumps(brief))
    return 0


def _example_base(assignments: list[str]) -> dict[str, Any]:
    """The built-in example as the base layer, minus what a ``--set`` makes meaningless.

    The example's ``target.params`` (a, b, s) belong to its own expression: a ``--set
    target.expr=...`` without ``target.params`` gets none of them, so a free name such as ``a``
    in the new expression is an error naming it instead of silently meaning 0.3.
    """
    import copy

    from beckmann import config, pipeline

    base = copy.deepcopy(pipeline.BUILTIN_EXAMPLE)
    target = config.parse_set(assignments).get("target")
    if isinstance(target, dict) and "expr" in target and "params" not in target:
        base["target"].pop("params", None)
    return base
