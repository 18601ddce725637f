"""``beckmann paths``: kinetic energy and maximum speed of each probability path of a run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``paths`` to the subcommands."""
    p = sub.add_parser("paths", help="kinetic energy and max speed of each path")
    p.add_argument("dir", help="run folder")
    p.add_argument("--grid", type=int, default=21, help="time grid of the Fisher-Rao path")
    p.add_argument("--json-out", help="write the JSON here")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace, comm: Any) -> int:
    from beckmann.paths import compare_paths, solver_options
    from beckmann.store.files import check_report
    from beckmann.store.jsonio import dumps_json, write_json
    from beckmann.store.run import load_run

    check_report(comm, args.json_out)
    sol = load_run(args.dir, comm)
    res = compare_paths(sol, n_times=args.grid, solver=solver_options(sol))
    if args.json_out:
        write_json(Path(args.json_out), res, comm)
    if comm.rank == 0:
        print(dumps_json(res, indent=None))
    return 0
