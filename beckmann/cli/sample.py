"""``beckmann sample``: transport samples of the source along the velocity of a path.

Argument parsing only: the numerics are :func:`beckmann.transport.sample_transport`. With
``--model`` the velocity is a network's (built here from :mod:`beckmann.requ` and handed to the
transport library, which knows nothing of networks). ``DIR`` may be a run folder or a sweep
store; a store needs ``--param`` for each parameter and, without ``--model``, a grid value θ
(the stored finite-element potential of that member).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["register"]

#: Bytes per sample and coordinate on each rank (start, end and exact sets are gathered on every
#: rank; RK stages; every rank draws all rejection-sampling numbers): a generous estimate.
_BYTES_PER_SAMPLE_PER_DIM = 80

_LOGP_FE = "log p_t(X_t) of the path's density at each sample (rows: times)"
_LOGP_MODEL = (
    "log p_t(X_t) of the finite-element path density p_t = (1 - t) p0 + t p1(θ) at the "
    "network's samples (rows: times); not the density of the network's own flow, which "
    "differs from p_t by the fit error"
)


#: Most RK4 steps ``sample`` takes: RK4's error falls as steps^-4, so at 1e5 steps on the unit
#: time interval it is ~1e-20, far below float64 round-off; more steps only cost time (about
#: 2.5 ms per step even for 10 samples: 1e8 steps would run for days).
MAX_STEPS = 100_000


def _count(text: str) -> int:
    """An integer, also written as a float with an integral value (``2e4``)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not (np.isfinite(value) and value.is_integer()):
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    return int(value)


def register(sub: Any) -> None:
    """Add ``sample`` to the subcommands."""
    p = sub.add_parser("sample", help="transport samples of the source along v_t")
    p.add_argument("dir", help="run folder (`beckmann solve --out DIR`) or sweep store")
    p.add_argument("--n", type=_count, help="number of samples, e.g. 20000 or 2e4 (not --init)")
    p.add_argument(
        "--init", metavar="POINTS", help="move these points (.npy/.csv, N x d) instead of samples"
    )
    p.add_argument("--path", default="linear", choices=("linear", "fisher-rao"))
    p.add_argument(
        "--steps", type=_count, default=50,
        help="RK4 steps, and the grid of saved times (default 50; at most 1e5)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed >= 0 (rank-count independent)")
    p.add_argument(
        "--method",
        default="auto",
        choices=("auto", "rk4", "rk45"),
        help="auto (default): RK45 when max|v| / steps exceeds the smallest cell, else RK4",
    )
    p.add_argument("--rtol", type=float, default=1e-5, help="RK45 tolerance (x diameter)")
    p.add_argument("--grid", type=int, default=None,
                   help="time grid of the Fisher-Rao path (default 21)")
    p.add_argument("--reverse", action="store_true", help="target -> source (t from 1 to 0)")
    p.add_argument("--out", required=True, help="final samples (.npy)")
    p.add_argument("--overwrite", action="store_true", help="replace existing samples files")
    p.add_argument("--json-out", help="write the JSON report here")
    p.add_argument(
        "--save-every",
        type=int,
        metavar="K",
        help="also write OUT-stem.traj.npy with the samples every K of the --steps intervals",
    )
    p.add_argument(
        "--log-density",
        action="store_true",
        help="write OUT-stem.logp.npy: log p_t at each sample at the saved times (T x N)",
    )
    p.add_argument("--bins", type=int, help="histogram bins per axis for the TV distance")
    p.add_argument("--energy-points", type=int, default=3000, help="energy distance subsample")
    p.add_argument(
        "--reference", metavar="DATA", help="also compare the end points with these data points"
    )
    p.add_argument(
        "--reference-points",
        type=int,
        default=2000,
        help="points per compared set for --reference (default 2000)",
    )
    p.add_argument(
        "--reference-repeats",
        type=int,
        default=5,
        help="random draws of the compared sets, values averaged (default 5)",
    )
    p.add_argument("--mmd-bandwidth", type=float, help="MMD kernel s (default: median heuristic)")
    p.add_argument(
        "--coverage-radius", type=float, help="radius r (default: data's 0.95 NN quantile)"
    )
    p.add_argument(
        "--model", help="velocity network v(x, t[, θ]) (from `beckmann fit`) instead of the FE v_t"
    )
    p.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="θ of a sweep store's member or of --model (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--interpolate",
        action="store_true",
        help="sweep store, θ between grid values: interpolate the stored potentials (as probe)",
    )
    p.add_argument(
        "--extrapolate",
        action="store_true",
        help="allow a --model θ outside the model's training box or the sweep's grid box",
    )
    p.set_defaults(func=_run)


def _positive(value: Any, name: str) -> None:
    if value is not None and (not np.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be positive, got {value!r}")


def _check(args: argparse.Namespace, comm: Any) -> Path:
    from beckmann._resources import require_memory

    if args.init is not None and args.n is not None:
        raise ValueError("give --n or --init, not both")
    if args.init is None and args.n is None:
        raise ValueError("--n is required (or --init POINTS)")
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be a positive integer, got {args.n!r}")
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed!r}")
    if args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps!r}")
    if args.steps > MAX_STEPS:
        raise ValueError(
            f"--steps {args.steps} is more than the {MAX_STEPS} sample takes: RK4's error at "
            f"{MAX_STEPS} steps is already below float64 round-off, and at a few ms per step "
            "the run would take hours; lower --steps (or use --method rk45 --rtol)"
        )
    if args.save_every is not None and args.save_every < 1:
        raise ValueError(
            f"--save-every must be a positive integer, got {args.save_every!r} "
            "(leave it out to save only the end points)"
        )
    if args.grid is not None and args.path != "fisher-rao":
        raise ValueError(f"--grid is the time grid of --path fisher-rao; the {args.path} path "
                         "has none (leave --grid out)")
    if args.bins is not None and args.bins < 1:
        raise ValueError(f"--bins must be a positive integer, got {args.bins!r}")
    if args.energy_points < 2:
        raise ValueError(f"--energy-points must be an integer >= 2, got {args.energy_points!r}")
    if args.reference_points < 2:
        raise ValueError(f"--reference-points must be >= 2, got {args.reference_points!r}")
    if args.reference_repeats < 1:
        raise ValueError(f"--reference-repeats must be >= 1, got {args.reference_repeats!r}")
    _positive(args.mmd_bandwidth, "--mmd-bandwidth")
    _positive(args.coverage_radius, "--coverage-radius")
    _positive(args.rtol, "--rtol")
    out = Path(args.out)
    if out.suffix != ".npy":
        raise ValueError(f"--out must end in .npy, got {str(out)!r}")
    if args.n is not None:
        # samples are gathered on every rank (ranks share the machine): per rank x rank count
        need = float(args.n) * _BYTES_PER_SAMPLE_PER_DIM * 3 * comm.size
        require_memory(need, f"sample --n {args.n}", "lower --n")
        if args.save_every:
            frames = args.steps // args.save_every + 2
            require_memory(
                float(args.n) * 24 * frames, f"--save-every {args.save_every} trajectories",
                "raise --save-every or lower --n",
            )  # fmt: skip
    return out


def _theta_box_check(
    theta: dict[str, float], box: dict[str, tuple[float, float]], what: str
) -> str | None:
    """A message when θ lies outside ``box`` (name -> (low, high)), else ``None``."""
    for name, (lo, hi) in box.items():
        v = theta.get(name)
        tol = 1e-12 * max(abs(lo), abs(hi), 1.0)
        if v is not None and (v < lo - tol or v > hi + tol):
            return (
                f"--param {name}={v:g} lies outside {what} [{lo:g}, {hi:g}]; "
                "pass --extrapolate to run anyway"
            )
    return None


def _source(args: argparse.Namespace, comm: Any) -> tuple[Any, Any, dict[str, float] | None]:
    """The solution, the velocity (``None``: the FE one) and θ of the run; collective."""
    from beckmann._mpi import agree
    from beckmann.requ import is_sweep_store
    from beckmann.store.run import load_run

    store = bool(comm.bcast(is_sweep_store(args.dir) if comm.rank == 0 else None, root=0))
    if args.model:
        from beckmann.requ.surrogate import model_velocity

        # θ outside the model's training box: refused there (one line) unless --extrapolate
        sol, velocity, theta = model_velocity(
            args.dir, args.model, args.param, comm, extrapolate=args.extrapolate
        )
        if theta and not args.extrapolate:
            if store:
                from beckmann.sweep import SweepStore

                grid = SweepStore(args.dir, comm).grid
                lo, hi = grid.box()
                box = {n: (float(lo[i]), float(hi[i])) for i, n in enumerate(grid.names)}
                agree(comm, _theta_box_check(theta, box, "the sweep's grid"))
        return sol, velocity, theta or None
    if not store:
        if args.param:
            raise ValueError(
                "--param needs a sweep store as DIR (or --model); "
                f"{str(args.dir)!r} is not a sweep store"
            )
        return load_run(args.dir, comm), None, None
    from beckmann.fields import Solution
    from beckmann.sweep import SweepStore, parse_params, theta_solution
    from beckmann.sweep.probe import interpolation_weights, reduced_solution
    from beckmann.sweep.reduced import is_reduced

    st = SweepStore(args.dir, comm)
    if not args.param:
        raise ValueError(
            f"{str(args.dir)!r} is a sweep store: pick a member with --param "
            + " ".join(f"{n}=VALUE" for n in st.grid.names)
        )
    theta = parse_params(args.param, list(st.grid.names))
    if is_reduced(st.folder, comm):  # any θ in the box, with its certificate (docs/reduced.md)
        return reduced_solution(st, theta, extrapolate=args.extrapolate)[0], None, theta
    i = comm.bcast(st.index_of(theta) if comm.rank == 0 else None, root=0)
    label = ", ".join(f"{k}={v:g}" for k, v in theta.items())
    err = None
    weights: dict[int, float] = {}
    if i is None and not args.interpolate:
        err = (
            f"θ ({label}) is not a grid point of the sweep in {str(args.dir)!r}; pass "
            "--interpolate to use the potential interpolated between grid values"
        )
    elif i is None:
        try:
            weights = interpolation_weights(st, theta, order=2)
        except ValueError as e:
            err = f"cannot interpolate the sweep at θ ({label}): {e}"
    done = set(st.completed())
    missing = sorted(({i} if i is not None else set(weights)) - done)
    if err is None and missing:
        err = f"{st.grid.label(missing[0])} is needed but not stored yet; resume the sweep"
    agree(comm, err)
    if i is not None:
        return theta_solution(st, i, theta), None, theta
    sol = theta_solution(st, None, theta)
    # φ(θ) = Σ_j w_j φ(θ_j): the tensor-product Lagrange interpolant of `beckmann probe`
    for j, w in weights.items():
        sol.phi.x.array[:] += w * st.potential(j).x.array
    return Solution(sol.msh, sol.phi, sol.p0, sol.p1), None, theta


def _reference(path: str | None, gdim: int, comm: Any) -> Any:
    if path is None:
        return None
    from beckmann._mpi import on_root
    from beckmann.store.points import read_points

    def read() -> Any:
        pts = read_points(path)
        if pts.shape[1] != gdim or pts.shape[0] < 4:
            raise ValueError(
                f"reference data {path!r} must be an N x {gdim} array with N >= 4, "
                f"got shape {pts.shape}"
            )
        return pts

    return on_root(comm, read)


def _run(args: argparse.Namespace, comm: Any) -> int:
    from beckmann._mpi import on_root
    from beckmann.store.jsonio import dumps_json, write_json
    from beckmann.store.points import read_points
    from beckmann.transport import sample_transport

    out = _check(args, comm)
    from beckmann.store.files import check_outputs, check_report, publish_arrays

    stems = [".npy"] + [".traj.npy"] * bool(args.save_every) + [".logp.npy"] * args.log_density
    outs = [out.with_name(out.stem + s) for s in stems]
    check_outputs(comm, "samples", outs, overwrite=args.overwrite, what="--out")
    check_report(comm, args.json_out)
    init = on_root(comm, lambda: read_points(args.init)) if args.init else None
    sol, velocity, theta = _source(args, comm)
    reference = _reference(args.reference, sol.gdim, comm)
    ref_opts = {
        "points": args.reference_points,
        "repeats": args.reference_repeats,
        "bins": args.bins,
        "bandwidth": args.mmd_bandwidth,
        "radius": args.coverage_radius,
    }
    res = sample_transport(
        sol,
        args.n,
        path=args.path,
        steps=args.steps,
        seed=args.seed,
        method=args.method,
        rtol=args.rtol,
        n_times=21 if args.grid is None else args.grid,
        reverse=args.reverse,
        save_every=args.save_every or 0,
        bins=args.bins,
        energy_points=args.energy_points,
        velocity=velocity,
        init=init,
        log_density=args.log_density,
        reference=reference,
        reference_options=ref_opts,
    )
    report = res["report"]
    if velocity is not None:
        report["model"] = str(args.model)
    if theta:
        report["theta"] = theta
    if args.init:
        report["init"] = str(args.init)
    if args.reference:
        report["reference"]["data"] = str(args.reference)
    report["out"] = str(out)

    def arrays() -> dict[Path, Any]:
        a = {out: res["samples"]}
        if args.save_every:
            a[out.with_name(out.stem + ".traj.npy")] = np.stack(res["trajectory"])
        if args.log_density:
            a[out.with_name(out.stem + ".logp.npy")] = res["log_density"]
        return a

    publish_arrays(comm, "samples", arrays)  # atomic, its outcome on every rank
    if args.save_every:
        tpath = out.with_name(out.stem + ".traj.npy")
        report["trajectory"] = {"path": str(tpath), "times": res["trajectory_times"]}
    if args.log_density:
        lp = res["log_density"]
        report["log_density"] = {
            "path": str(out.with_name(out.stem + ".logp.npy")),
            "times": res["trajectory_times"],
            "what": _LOGP_MODEL if velocity is not None else _LOGP_FE,
            "mean": comm.bcast(
                [float(np.nanmean(r)) for r in lp] if comm.rank == 0 else None, root=0
            ),
        }
    if args.json_out:
        write_json(Path(args.json_out), report, comm)
    if comm.rank == 0:
        brief = {
            "n": report["n"],
            "path": report["path"],
            "method": report["method"],
            "distances": report["distances"],
            "projected_samples": report["projected_samples"],
            "seconds": round(sum(report["timings"].values()), 3),
        }
        if "reference" in report:
            brief["reference_mmd2"] = {
                k: report["reference"]["mmd2"][k]
                for k in ("samples_vs_data", "data_vs_data", "ratio_to_floor")
            }
        print(dumps_json(brief if args.json_out else report, indent=None))
    return 0
