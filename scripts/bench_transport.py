"""Benchmark: batched RK4 transport against a naive loop with a fresh point search per stage.

Both integrate the same samples with the same RK4 on the same field (linear path of the built-in
two-bump example, P2 on an ``n x n`` square; n = 158 gives about 100k dofs). The naive loop
searches the bounding-box tree and calls ``Function.eval`` for F, p0 and p1 at every stage of
every step; it is timed on ``--naive-steps`` steps and its rate per step extrapolated (the cost
per step does not depend on the step). Rates are samples·steps per second; medians of
``--repeat`` runs. Serial, or under ``mpirun -n 2`` (the naive loop is then per rank on the
rank's own samples, without migration: a lower bound on its cost).

    python scripts/bench_transport.py --n-cells 158 --samples 100000 --steps 100

With ``--floors F1 F2 ...`` it measures the floor/steps trade-off instead (docs/transport.md):
target ``F + two narrow bumps`` from a uniform source, for each floor the path's max speed and,
for RK4 with each of ``--steps-list`` and for ``method = auto``, the steps taken, the samples
projected back into the domain, the histogram TV to the target beside an exact sample set's,
and the transport time (one JSON line per run).

    python scripts/bench_transport.py --floors 0.1 0.02 0.005 0.001 --n-cells 32 --samples 20000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from beckmann import config, pipeline, transport
from beckmann._dolfinx import MPI, geometry
from beckmann.paths import solve_path


def naive_rk4(sol, pf, x: np.ndarray, steps: int, total_steps: int) -> np.ndarray:
    """RK4 with ``Function.eval`` after a fresh collision search at every stage."""
    msh = sol.msh
    tree = geometry.bb_tree(msh, msh.topology.dim)
    F = pf.fluxes[0]
    d = x.shape[1]
    h = 1.0 / total_steps

    def vel(t: float, y: np.ndarray) -> np.ndarray:
        y3 = np.zeros((y.shape[0], 3))
        y3[:, :d] = y
        cand = geometry.compute_collisions_points(tree, y3)
        coll = geometry.compute_colliding_cells(msh, cand, y3)
        cells = np.array([coll.links(i)[0] if len(coll.links(i)) else 0 for i in range(len(y))])
        f = F.eval(y3, cells).reshape(-1, d)
        q0 = sol.p0.eval(y3, cells).ravel()
        q1 = sol.p1.eval(y3, cells).ravel()
        return f / ((1 - t) * q0 + t * q1)[:, None]

    for i in range(steps):
        t = i * h
        k1 = vel(t, x)
        k2 = vel(t + h / 2, x + h / 2 * k1)
        k3 = vel(t + h / 2, x + h / 2 * k2)
        k4 = vel(t + h, x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        x = np.clip(x, 1e-12, 1 - 1e-12)  # unit square: keep the naive loop inside
    return x


BUMPS = "exp(-((x-0.3)**2 + (y-0.3)**2)/0.005) + exp(-((x-0.7)**2 + (y-0.6)**2)/0.005)"


def floor_steps(args: argparse.Namespace, comm: MPI.Comm) -> None:
    """The floor/steps table: one JSON line per (floor, integrator) on rank 0."""
    for floor in args.floors:
        expr = f"{floor} + {BUMPS}"
        cfg = config.resolve(sets=[f"mesh.n={args.n_cells}", "target.kind=expression",
                                   f'target.expr="{expr}"'])  # fmt: skip
        sol = pipeline.solve(cfg, comm)
        runs = [("rk4", k) for k in args.steps_list] + [("auto", 50)]
        for method, steps in runs:
            tic = time.perf_counter()
            rep = transport.sample_transport(
                sol, args.samples, steps=steps, method=method, seed=1, energy_points=2000
            )["report"]
            d = rep["distances"]
            row = {
                "floor": floor,
                "max_speed": rep["path_energy"]["max_speed"],
                "method": rep["method"],
                "steps": rep["steps"],
                "projected_samples": rep["projected_samples"],
                "projected_fraction": rep["projected_samples"] / args.samples,
                "tv_transported": d["transported"]["tv_histogram"],
                "tv_exact": d["exact"]["tv_histogram"],
                "energy_ratio": d["transported"]["energy"] / d["exact"]["energy"],
                "transport_seconds": rep["timings"]["transport"],
                "total_seconds": time.perf_counter() - tic,
            }
            if comm.rank == 0:
                print(json.dumps(row, allow_nan=False), flush=True)


def main() -> None:
    """Run the benchmark and print one JSON line (rank 0)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cells", type=int, default=158)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--naive-steps", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--floors", type=float, nargs="+", help="measure the floor/steps trade-off")
    ap.add_argument("--steps-list", type=int, nargs="+", default=[50, 200])
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    if args.floors:
        floor_steps(args, comm)
        return
    cfg = config.resolve(sets=[f"mesh.n={args.n_cells}"], base=pipeline.BUILTIN_EXAMPLE)
    sol = pipeline.solve(cfg, comm)
    pf = solve_path(sol, "linear")
    mc = transport.MeshCells(sol.msh)
    ev = transport.FieldEvaluator(pf, mc)
    s0 = transport.sample_density(sol.p0, args.samples, 0, mc)
    fast, naive = [], []
    final = None
    for _ in range(args.repeat):
        s = transport.Samples(s0.ids.copy(), s0.x.copy(), s0.cells.copy(), s0.n)
        tr = transport.Transporter(ev)
        comm.barrier()
        tic = time.perf_counter()
        s = tr.rk4(s, 0.0, 1.0, args.steps)
        comm.barrier()
        fast.append(time.perf_counter() - tic)
        final = s
        comm.barrier()
        tic = time.perf_counter()
        naive_rk4(sol, pf, s0.x.copy(), args.naive_steps, args.steps)
        comm.barrier()
        naive.append((time.perf_counter() - tic) / args.naive_steps)
    # agreement of the two integrators on the first naive steps (same field, same RK4)
    s = transport.Samples(s0.ids.copy(), s0.x.copy(), s0.cells.copy(), s0.n)
    tr = transport.Transporter(ev)
    steps_chk = args.naive_steps
    s_chk = s
    h = 1.0 / args.steps
    for i in range(steps_chk):
        t = i * h
        x, c = s_chk.x, s_chk.cells
        k1, c = tr.velocity(t, x, c)
        k2, _ = tr.velocity(t + h / 2, x + h / 2 * k1, c)
        k3, _ = tr.velocity(t + h / 2, x + h / 2 * k2, c)
        k4, _ = tr.velocity(t + h, x + h * k3, c)
        s_chk.x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        s_chk.cells = c
    diff: float | None
    if comm.size == 1:
        xn = naive_rk4(sol, pf, s0.x.copy(), steps_chk, args.steps)
        order = np.argsort(s_chk.ids)
        diff = float(np.abs(xn[np.argsort(s0.ids)] - s_chk.x[order]).max())
    else:
        diff = None  # the naive loop does not migrate: no comparison under MPI
    n = args.samples
    fast_rate = n * args.steps / float(np.median(fast))
    naive_rate = n / float(np.median(naive))
    out = {
        "ranks": comm.size,
        "ndofs": sol.info["ndofs"],
        "samples": n,
        "steps": args.steps,
        "fast_seconds": [round(v, 3) for v in fast],
        "naive_seconds_per_step": [round(v, 3) for v in naive],
        "naive_steps_timed": args.naive_steps,
        "fast_rate": fast_rate,
        "naive_rate": naive_rate,
        "speedup": fast_rate / naive_rate,
        "max_abs_diff_first_steps": diff,
        "projected_samples": tr.projected_samples(),
        "final_local_samples": int(final.ids.size) if final is not None else 0,
    }
    if comm.rank == 0:
        print(json.dumps(out, allow_nan=False))


if __name__ == "__main__":
    main()
