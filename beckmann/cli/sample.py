"""``beckmann sample``: transport samples of the source along the velocity of a path.

Argument parsing only: the numerics are :func:`beckmann.transport.sample_transport`. With
``--model`` the velocity is a network's (built here from :mod:`beckmann.requ` and handed to the
transport library, which knows nothing of networks).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``sample`` to the subcommands."""
    p = sub.add_parser("sample", help="transport samples of the source along v_t")
    p.add_argument("dir", help="run folder (from `beckmann solve --out DIR`)")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--path", default="linear", choices=("linear", "fisher-rao"))
    p.add_argument("--steps", type=int, default=50, help="RK4 steps (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed (rank-count independent)")
    p.add_argument("--method", default="rk4", choices=("rk4", "rk45"))
    p.add_argument("--rtol", type=float, default=1e-5, help="RK45 tolerance (x diameter)")
    p.add_argument("--grid", type=int, default=21, help="time grid of the Fisher-Rao path")
    p.add_argument("--reverse", action="store_true", help="target -> source (t from 1 to 0)")
    p.add_argument("--out", required=True, help="final samples (.npy)")
    p.add_argument("--json-out", help="write the JSON report here")
    p.add_argument(
        "--save-every",
        type=int,
        default=0,
        metavar="K",
        help="also write OUT-stem.traj.npy with the samples every K steps",
    )
    p.add_argument("--bins", type=int, help="histogram bins per axis for the TV distance")
    p.add_argument("--energy-points", type=int, default=3000, help="energy distance subsample")
    p.add_argument(
        "--model", help="velocity network v(x, t[, θ]) (from `beckmann fit`) instead of the FE v_t"
    )
    p.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="θ input of --model (repeatable); with a sweep store as DIR, also p0, p1 at θ",
    )  # fmt: skip
    p.set_defaults(func=_run)


def _check(args: argparse.Namespace) -> Path:
    if args.n is None or args.n < 1:
        raise ValueError(f"--n must be a positive integer, got {args.n!r}")
    if args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps!r}")
    if args.save_every < 0:
        raise ValueError(f"--save-every must be >= 0, got {args.save_every!r}")
    if args.bins is not None and args.bins < 1:
        raise ValueError(f"--bins must be a positive integer, got {args.bins!r}")
    out = Path(args.out)
    if out.suffix != ".npy":
        raise ValueError(f"--out must end in .npy, got {str(out)!r}")
    return out


def _run(args: argparse.Namespace, comm: Any) -> int:
    from beckmann.store.jsonio import dumps_json, write_json
    from beckmann.store.run import load_run
    from beckmann.transport import sample_transport

    out = _check(args)
    velocity = None
    if args.model:
        from beckmann.requ.surrogate import model_velocity

        sol, velocity, _ = model_velocity(args.dir, args.model, args.param, comm)
    elif args.param:
        raise ValueError("--param needs --model")
    else:
        sol = load_run(args.dir, comm)
    res = sample_transport(
        sol,
        args.n,
        path=args.path,
        steps=args.steps,
        seed=args.seed,
        method=args.method,
        rtol=args.rtol,
        n_times=args.grid,
        reverse=args.reverse,
        save_every=args.save_every,
        bins=args.bins,
        energy_points=args.energy_points,
        velocity=velocity,
    )
    report = res["report"]
    if velocity is not None:
        report["model"] = str(args.model)
    report["out"] = str(out)
    if comm.rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, res["samples"])
        if args.save_every:
            tpath = out.with_name(out.stem + ".traj.npy")
            np.save(tpath, np.stack(res["trajectory"]))
            report["trajectory"] = {"path": str(tpath), "times": res["trajectory_times"]}
    if args.json_out:
        write_json(Path(args.json_out), report, comm)
    if comm.rank == 0:
        brief = {
            "n": report["n"],
            "path": report["path"],
            "distances": report["distances"],
            "projected": report["projected"],
            "seconds": round(sum(report["timings"].values()), 3),
        }
        print(dumps_json(brief if args.json_out else report, indent=None))
    return 0
