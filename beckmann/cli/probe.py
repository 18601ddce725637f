"""``beckmann probe``: evaluate a stored run (or a sweep member) at points."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from beckmann._mpi import on_root
from beckmann.store.files import check_report
from beckmann.store.jsonio import dumps_json, write_json
from beckmann.store.points import read_points
from beckmann.store.run import load_run

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``probe`` to the subcommands."""
    p = sub.add_parser("probe", help="evaluate a stored solution at points")
    p.add_argument("dir", help="run folder (or sweep store with --param)")
    p.add_argument("--points", required=True, help="N x d points, .npy or .csv")
    p.add_argument("--time", type=float, default=0.0, help="time t of the velocity")
    p.add_argument("--json-out", help="also write the JSON here")
    p.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="sweep parameter"
    )
    p.add_argument(
        "--interpolate", action="store_true", help="interpolate between sweep grid values"
    )
    p.add_argument(
        "--extrapolate",
        action="store_true",
        help="reduced sweep store: allow θ outside the parameter box (bounds still certified)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace, comm: Any) -> int:
    if args.param:
        return _probe_param(args, comm)
    check_report(comm, args.json_out)
    pts = on_root(comm, lambda: read_points(args.points))
    sol = load_run(args.dir, comm)
    res = sol.evaluate(pts, t=args.time)
    _report(comm, {k: v.tolist() for k, v in res.items()}, args.json_out)
    return 0


def _report(comm: Any, res: Any, json_out: str | None) -> None:
    """Write ``--json-out`` (atomically, outcome on every rank) and print the JSON on rank 0."""
    if json_out:
        write_json(Path(json_out), res, comm)
    if comm.rank == 0:
        print(dumps_json(res, indent=None))


def _probe_param(args: argparse.Namespace, comm: Any) -> int:
    """``beckmann probe STORE --param NAME=VALUE ... --points FILE``; collective."""
    from beckmann import sweep

    check_report(comm, args.json_out)
    store = sweep.SweepStore(args.dir, comm)
    theta, pts = on_root(
        comm,
        lambda: (sweep.parse_params(args.param, store.grid.names), read_points(args.points)),
    )
    res = sweep.probe(
        store,
        theta,
        pts,
        t=args.time,
        interpolate=args.interpolate,
        extrapolate=args.extrapolate,
    )
    _report(comm, res, args.json_out)
    return 0
