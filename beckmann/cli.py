"""Command line: argument parsing and error reporting only; the numerics live elsewhere.

Every subcommand handler has the signature ``handler(args, comm) -> int``. Feature modules add
their subcommands through a ``register_cli(subparsers)`` function listed in :data:`_PLUGINS`.

Errors: a ``ValueError`` (bad input) or ``RuntimeError`` (a failing file or solver) raised
collectively ends every rank with one line on rank 0 and exit code 2 (1 for runtime failures).
An exception raised on some ranks only would leave the others waiting in a collective call; the
handler then aborts the whole MPI job so ``mpirun`` never hangs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_set_option", "main", "read_points"]

_PLUGINS = (
    "beckmann.holder",
    "beckmann.sweep",
    "beckmann.transport",
    "beckmann.requ",
    "beckmann.plot",
)


def read_points(path: str | Path) -> np.ndarray:
    """Read an ``N x d`` array of points from ``.npy`` or ``.csv`` (comma or whitespace)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"points file {str(p)!r} does not exist")
    try:
        if p.suffix == ".npy":
            pts = np.load(p, allow_pickle=False)
        elif p.suffix in (".csv", ".txt"):
            text = p.read_text()
            delim = "," if "," in text else None
            pts = np.loadtxt(p, delimiter=delim, ndmin=2, comments="#")
        else:
            raise ValueError(f"points file {str(p)!r} must be .npy or .csv")
    except (OSError, ValueError) as err:
        if "must be .npy" in str(err):
            raise
        raise ValueError(f"cannot read points from {str(p)!r}: {err}") from err
    pts = np.asarray(pts, dtype=np.float64)
    if pts.ndim == 1:
        pts = pts.reshape(1, -1)
    if pts.ndim != 2:
        raise ValueError(f"points in {str(p)!r} must be an N x d array, got shape {pts.shape}")
    return pts


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """The ``--set SECTION.KEY=VALUE`` option of every command that reads a config."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable); the value is read as TOML",
    )


def _cmd_solve(args: argparse.Namespace, comm: Any) -> int:
    from beckmann import config, pipeline

    base = None if args.config else pipeline.BUILTIN_EXAMPLE
    cfg = config.resolve(args.config, args.set, base=base)
    out = Path(args.out) if args.out else Path(cfg["output"]["dir"])
    sol = pipeline.run(cfg, comm, out=out)
    if comm.rank == 0 and not args.quiet:
        info = sol.info
        keys = ("ndofs", "ranks", "degree", "iterations", "beckmann_cost", "residual", "hmax")
        brief = {k: info[k] for k in keys}
        brief["seconds"] = round(sum(info["timings"].values()), 3)
        brief["out"] = str(out)
        print(json.dumps(brief))
    return 0


def _cmd_probe(args: argparse.Namespace, comm: Any) -> int:
    from beckmann import io

    if getattr(args, "param", None):
        from beckmann import sweep  # noqa: F401 - sweep stores answer probe --param

        return int(sweep.probe_cli(args, comm))  # type: ignore[attr-defined]
    pts = None
    err = None
    if comm.rank == 0:
        try:
            pts = read_points(args.points)
        except ValueError as e:
            err = str(e)
    err, pts = comm.bcast((err, pts), root=0)
    if err:
        raise ValueError(err)
    sol = io.load_run(args.dir, comm)
    res = sol.evaluate(pts, t=args.time)
    text = json.dumps({k: v.tolist() for k, v in res.items()})
    if comm.rank == 0:
        if args.json_out:
            Path(args.json_out).write_text(text + "\n")
        print(text)
    return 0


def _cmd_config(args: argparse.Namespace, comm: Any) -> int:
    from beckmann import config

    if comm.rank == 0:
        print(config.markdown_reference())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``beckmann`` argument parser, with every available subcommand."""
    from beckmann import __version__

    parser = argparse.ArgumentParser(
        prog="beckmann",
        description="Beckmann optimal transport with squared flux: solve, probe and analyse.",
    )
    parser.add_argument("--version", action="version", version=f"beckmann {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("solve", help="solve for potential, flux and velocity")
    p.add_argument("config", nargs="?", help="TOML config (default: the built-in example)")
    add_set_option(p)
    p.add_argument("--out", help="run folder (default: output.dir)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=_cmd_solve)

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
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("config", help="print the config reference (Markdown)")
    p.set_defaults(func=_cmd_config)

    for name in _PLUGINS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        register = getattr(mod, "register_cli", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``beckmann`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from beckmann._dolfinx import MPI

    comm = MPI.COMM_WORLD
    try:
        code = int(args.func(args, comm) or 0)
    except (ValueError, RuntimeError, OSError, KeyboardInterrupt) as err:
        return _fail(err, comm, args.verbose)
    except Exception as err:  # a bug: never hang the other ranks
        if comm.rank == 0 or comm.size == 1:
            traceback.print_exc()
        if comm.size > 1:
            sys.stderr.write(f"beckmann: internal error on rank {comm.rank}: {err!r}\n")
            sys.stderr.flush()
            comm.Abort(3)
        return 3
    return code


def _fail(err: BaseException, comm: Any, verbose: bool) -> int:
    code = 2 if isinstance(err, ValueError) else 1
    if isinstance(err, KeyboardInterrupt):
        code = 130
    if verbose and comm.rank == 0:
        traceback.print_exception(err)
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    if comm.size > 1:
        # Collectively raised errors reach every rank; if this rank alone failed the others may
        # be blocked in a collective call, so we check agreement and abort otherwise.
        from beckmann._dolfinx import MPI

        req = comm.Ibarrier()
        deadline = MPI.Wtime() + 10.0
        while not req.Test():
            time.sleep(0.01)
            if MPI.Wtime() > deadline:
                sys.stderr.write(f"beckmann: error: {msg} (rank {comm.rank})\n")
                sys.stderr.flush()
                comm.Abort(code)
    if comm.rank == 0:
        sys.stderr.write(f"beckmann: error: {msg}\n")
        sys.stderr.flush()
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
