"""``beckmann plot DIR``: PNG figures of a run folder (see :mod:`beckmann.plot`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``plot`` to the subcommands."""
    p = sub.add_parser(
        "plot",
        help="draw PNG figures of a run folder (off-screen)",
        description="Draw densities, potential, flux, velocity (and samples, Hölder moduli "
        "where present) of a run folder as PNG files, without a display.",
    )
    p.add_argument("dir", help="run folder written by `beckmann solve` (or a sweep store)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with a sweep store: draw the member at this grid point (one per parameter; "
        "default --out: DIR/figures/NAME=VALUE,...)",
    )
    p.add_argument("--out", help="folder for the PNGs (default: DIR/figures)")
    p.add_argument(
        "--samples",
        help="transported samples, .npy, N x d or T x N x d "
        "(default: DIR/samples.traj.npy or DIR/samples.npy if present)",
    )
    p.add_argument(
        "--holder",
        action="append",
        default=[],
        metavar="JSON",
        help="JSON with Hölder moduli (repeatable; DIR/holder*.json are always read)",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "pyvista", "matplotlib"),
        default="auto",
        help="renderer; auto = pyvista if off-screen OpenGL works, else matplotlib",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace, comm: Any) -> int:
    """Draw the figures; rank 0 prints their paths."""
    from beckmann import plot

    options = {"samples": args.samples, "holder": args.holder, "backend": args.backend}
    if args.param:
        paths, used = plot.render_member(args.dir, args.param, args.out, comm, **options)
    else:
        paths, used = plot.render_run(args.dir, args.out, comm, **options)
    if comm.rank == 0:
        if args.backend == "auto" and used == "matplotlib":
            sys.stderr.write(
                "beckmann: no off-screen OpenGL for pyvista here; drew with matplotlib\n"
            )
        if not args.quiet:
            for p in paths:
                print(p)
    return 0
