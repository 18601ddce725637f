"""``beckmann sweep``: solve a parameter sweep into a resumable store."""

from __future__ import annotations

import argparse
import json
from typing import Any

from beckmann.cli.common import add_set_option

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``sweep`` to the subcommands."""
    p = sub.add_parser("sweep", help="solve a parameter sweep into a resumable store")
    p.add_argument("config", help="TOML config with [sweep.parameters]")
    p.add_argument("--out", required=True, help="sweep store folder")
    p.add_argument("--resume", action="store_true", help="continue the sweep stored in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a sweep stored in --out")
    p.add_argument(
        "--group-size", type=int, default=None, help="ranks per group (default sweep.group_size)"
    )
    add_set_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary line")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace, comm: Any) -> int:
    from beckmann import config, sweep

    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: --resume continues "
                         "the sweep stored in --out, --overwrite replaces it")
    cfg = config.resolve(args.config, args.set, extra_sections=("sweep",))
    # solver.method not chosen in the file nor by --set: the sweep picks it (docs/sweep.md)
    layers = [config.load_config(args.config), config.parse_set(args.set or [])]
    auto = not any("method" in (layer.get("solver") or {}) for layer in layers)
    summary = sweep.run_sweep(
        cfg,
        comm,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        group_size=args.group_size,
        progress=not args.quiet,
        auto_method=auto,
    )
    if comm.rank == 0 and not args.quiet:
        keys = ("thetas", "solved", "reused", "ranks", "groups", "seconds_per_theta")
        brief = {k: summary[k] for k in keys}
        phi = summary["continuity"].get("phi") or {}
        brief["phi_theta_exponent"] = (phi.get("exponent") or {}).get("estimate")
        brief["out"] = str(args.out)
        print(json.dumps(brief))
    return 0
