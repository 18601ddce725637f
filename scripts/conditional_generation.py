"""Conditional generation: fit v(x, t, θ) on a sweep, transport samples for θ off the grid.

A sweep over the centre ``theta`` of a Gaussian target on the unit square (P2, MUMPS) is solved
into a store; a ReQu network is fitted to the velocity ``v_t = F/p_t`` on inputs ``(x, t, θ)``
(Sobolev loss with ``D_x v`` and ``∂_t v``; :mod:`beckmann.requ`). For every θ in ``--theta``
(not on the grid) an independent FE solve at θ gives the reference transport, and the same start
samples of ``p0`` are moved by RK4 with

- ``network``: the fitted ``v(x, t, θ)``,
- ``network@grid``: the network at the nearest grid θ (what ignoring θ would give),
- ``FE``: the finite-element velocity of the solve at θ,

then compared with the target ``p1(θ)``: energy distance against exact samples of ``p1(θ)``,
histogram total variation against its bin masses, and the mean distance of the network's end
points from the FE end points relative to the mean FE displacement. ``exact`` (fresh exact
samples of the target) is the noise floor of both distances; ``start`` the untransported
samples. Collective: runs under ``mpirun -n 2`` with the same numbers.

    python scripts/conditional_generation.py                       # about a minute on one core
    python scripts/conditional_generation.py --steps 300 --n 8      # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import beckmann._dolfinx  # noqa: E402, F401 - loads MPI the wheel's way

# isort: split
from beckmann import config, pipeline, requ, sweep, transport  # noqa: E402
from beckmann._dolfinx import MPI  # noqa: E402

TARGET = "0.2 + exp(-((x - theta)**2 + (y - 0.5)**2) / 0.05)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16, help="mesh cells per side")
    ap.add_argument("--grid", default="0.3,0.7,5", help="theta linspace: start,stop,count")
    ap.add_argument("--theta", default="0.35,0.45,0.58", help="θ values off the grid")
    ap.add_argument("--steps", type=int, default=3000, help="Adam steps")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--points", type=int, default=6000, help="training points (all θ)")
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--rk-steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="keep the sweep store and model in this folder")
    ap.add_argument("--json-out", help="write the results here")
    args = ap.parse_args(argv)
    comm = MPI.COMM_WORLD
    a, b, k = (float(v) for v in args.grid.split(","))
    grid = np.linspace(a, b, int(k))
    thetas = [float(v) for v in args.theta.split(",")]
    if comm.rank == 0:
        on = [t for t in thetas if np.isclose(grid, t).any()]
        if on:
            print(f"note: θ {on} lie on the grid {grid.tolist()}", file=sys.stderr)
    layer = {
        "mesh": {"kind": "unit_square", "n": args.n},
        "solver": {"degree": 2, "method": "mumps", "rtol": 1e-12},
        "target": {"kind": "expression", "expr": TARGET, "params": {}},
        "sweep": {"parameters": {"theta": {"linspace": [a, b, int(k)]}}, "continuity": False},
    }
    cfg = config.merge(config.default_config(), layer, extra_sections=("sweep",))
    folder = args.keep or (tempfile.mkdtemp(prefix="beckmann-cond-") if comm.rank == 0 else None)
    folder = Path(comm.bcast(folder, root=0))
    store = folder / "store"
    tic = time.perf_counter()
    if comm.bcast((store / "sweep.json").is_file() if comm.rank == 0 else None, root=0):
        sweep.run_sweep(cfg, comm, out=store, resume=True, progress=False)
    else:
        sweep.run_sweep(cfg, comm, out=store, progress=False)
    t_sweep = time.perf_counter() - tic

    tic = time.perf_counter()
    tr = requ.training_set(store, "velocity", args.points, args.seed, comm)
    model = requ.fit(
        tr["x"], tr["y"], tr["jac"], width=args.width, depth=args.depth, steps=args.steps,
        seed=args.seed, derivative_inputs=tr["derivative_inputs"], bounds=tr["bounds"],
        input_names=tr["input_names"], field="velocity", comm=comm,
    )  # fmt: skip
    t_fit = time.perf_counter() - tic
    if comm.rank == 0:
        requ.save(model, folder / "velocity")

    rows = []
    kw = {"steps": args.rk_steps, "seed": args.seed + 1, "path_report": False}
    for theta in thetas:
        c = copy.deepcopy(cfg)
        c.pop("sweep")
        c["target"]["params"] = {"theta": theta}
        sol = pipeline.solve(c, comm)
        near = float(grid[np.argmin(np.abs(grid - theta))])
        x = requ.sample_domain(sol.msh, 2000, 12345)
        t = np.random.default_rng(7).uniform(0.0, 1.0, len(x))
        y, J = requ.field_values(requ.member_data(sol, x), "velocity", t)
        z = np.hstack([x, t[:, None], np.full((len(x), 1), theta)])
        err = requ.errors(model, z, y, J, derivative_inputs=[0, 1, 2], holder_points=0)
        runs = {
            "FE": transport.sample_transport(sol, args.samples, **kw),
            "network": transport.sample_transport(
                sol, args.samples, velocity=_net(model, theta), **kw
            ),
            "network@grid": transport.sample_transport(
                sol, args.samples, velocity=_net(model, near), **kw
            ),
        }
        row = {"theta": theta, "nearest_grid_theta": near, "velocity_l2_error": err["l2_error"],
               "velocity_c0_rel": err["c0_rel"]}  # fmt: skip
        fe = runs["FE"]["report"]["distances"]
        row["exact"] = fe["exact"]
        row["start"] = fe["untransported"]
        for name, r in runs.items():
            row[name] = r["report"]["distances"]["transported"]
        if comm.rank == 0:
            x0, xf = runs["FE"]["start"], runs["FE"]["samples"]
            move = float(np.linalg.norm(xf - x0, axis=1).mean())
            for name in ("network", "network@grid"):
                gap = float(np.linalg.norm(runs[name]["samples"] - xf, axis=1).mean())
                row[name]["gap_to_FE"] = gap / move
        rows.append(comm.bcast(row, root=0))

    if comm.rank == 0:
        print(
            f"sweep: θ in {grid.round(4).tolist()}, mesh {args.n}x{args.n} P2, {t_sweep:.1f} s; "
            f"fit: ReQu {model.widths}, {model.parameters} parameters, {args.steps} steps, "
            f"{len(tr['x'])} points, {t_fit:.1f} s; {args.samples} samples, "
            f"RK4 {args.rk_steps} steps, {comm.size} rank(s)"
        )
        print()
        head = ["θ", "v L2 err", "samples", "energy dist", "TV hist", "gap to FE"]
        print(f"{head[0]:>6} {head[1]:>9} {head[2]:>14} {head[3]:>12} {head[4]:>8} {head[5]:>9}")
        for r in rows:
            first = True
            for name in ("network", "FE", "network@grid", "exact", "start"):
                gap = r[name].get("gap_to_FE")
                print(
                    f"{r['theta']:>6.3f} {r['velocity_l2_error']:>9.3g} " if first else " " * 17,
                    end="",
                )
                label = f"net@θ={r['nearest_grid_theta']:g}" if name == "network@grid" else name
                print(
                    f"{label:>14} {r[name]['energy']:>12.3e} {r[name]['tv_histogram']:>8.4f} "
                    f"{'' if gap is None else f'{gap:.3f}':>9}"
                )
                first = False
        result = {
            "rows": rows,
            "sweep_seconds": t_sweep,
            "fit_seconds": t_fit,
            "parameters": model.parameters,
            "ranks": comm.size,
            "args": vars(args),
        }
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result) + "\n")
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    comm.barrier()
    return 0


def _net(model: requ.Network, theta: float):  # noqa: ANN202 - a factory for sample_transport
    return lambda mc: requ.NetworkVelocity(model, mc, [theta])


if __name__ == "__main__":
    sys.exit(main())
