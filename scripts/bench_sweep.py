"""Benchmark: a sweep of K targets against a naive loop that rebuilds everything per θ.

Both run in the same process, interleaved (naive θ, sweep repeat, naive θ, ...) so that load from
other users of the machine hits both alike; medians are quoted.

* naive: ``pipeline.solve`` per θ (mesh, spaces, densities, assembly, preconditioner or
  factorisation, solve, cost): seconds per θ, median over ``--naive-k`` values of θ.
* sweep: ``sweep.run_sweep`` of all K targets into a fresh store (factorisation once, MUMPS
  block solves, each θ's potential and flux written to the store). The marginal cost per θ is
  the solve phase (everything per θ, store writes included) divided by K; the one-off setup
  (mesh, assembly, factorisation) is reported separately and amortised in ``total per θ``.

Usage::

    python scripts/bench_sweep.py                 # K = 64, n = 512 (263k P1 dofs)
    python scripts/bench_sweep.py --k 16 --n 256  # quick
    mpirun -n 2 python scripts/bench_sweep.py --group-size 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from beckmann import config, pipeline, sweep
from beckmann._dolfinx import MPI

EXPR = "0.2 + exp(-((x - theta)**2 + (y - 0.5)**2) / 0.02)"


def make_cfg(n: int, k: int, method: str, block: int, group_size: int) -> dict:
    layer = {
        "mesh": {"kind": "unit_square", "n": n},
        "solver": {"degree": 1, "method": method, "rtol": 1e-10},
        "target": {"kind": "expression", "expr": EXPR},
        "sweep": {
            "parameters": {"theta": {"linspace": [0.25, 0.75, k]}},
            "block": block,
            "group_size": group_size,
            "continuity": False,
        },
    }
    return config.merge(config.default_config(), layer, extra_sections=("sweep",))


def naive_one(cfg: dict, theta: float, method: str, comm: MPI.Comm) -> float:
    c = {s: dict(v) for s, v in cfg.items() if s != "sweep"}
    c["solver"] = {**c["solver"], "method": method}
    c["target"] = {**c["target"], "params": {"theta": theta}}
    comm.barrier()
    t0 = time.perf_counter()
    pipeline.solve(c, comm)
    comm.barrier()
    return time.perf_counter() - t0


def sweep_once(cfg: dict, comm: MPI.Comm) -> dict:
    out = tempfile.mkdtemp(prefix="bench-sweep-") if comm.rank == 0 else None
    out = comm.bcast(out, root=0)
    comm.barrier()
    t0 = time.perf_counter()
    summary = sweep.run_sweep(cfg, comm, out=Path(out) / "s")
    wall = time.perf_counter() - t0
    if comm.rank == 0:
        shutil.rmtree(out, ignore_errors=True)
    t = summary["timings"]
    k = summary["solved"]
    return {"setup": t["setup"], "per_theta": t["solve"] / k, "total_per_theta": wall / k}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="cells per side (512: 263k P1 dofs)")
    ap.add_argument("--k", type=int, default=64, help="number of targets θ in the sweep")
    ap.add_argument("--naive-k", type=int, default=6, help="θ values timed in the naive loop")
    ap.add_argument("--naive-method", default="gamg", choices=("gamg", "mumps"))
    ap.add_argument("--method", default="mumps", choices=("gamg", "mumps"))
    ap.add_argument("--block", type=int, default=32, help="right-hand sides per block solve")
    ap.add_argument("--group-size", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="sweep repeats (median)")
    ap.add_argument("--json-out", help="write the results here")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    cfg = make_cfg(args.n, args.k, args.method, args.block, args.group_size)
    thetas = np.linspace(0.25, 0.75, args.naive_k)
    naive: list[float] = []
    runs: list[dict] = []
    # interleave: naive θ's and sweep repeats alternate
    chunks = np.array_split(thetas, args.repeats)
    for r in range(args.repeats):
        for th in chunks[r]:
            naive.append(naive_one(cfg, float(th), args.naive_method, comm))
        runs.append(sweep_once(cfg, comm))
    per = float(np.median([r["per_theta"] for r in runs]))
    tot = float(np.median([r["total_per_theta"] for r in runs]))
    nv = float(np.median(naive))
    res = {
        "ndofs": (args.n + 1) ** 2,
        "K": args.k,
        "ranks": comm.size,
        "naive_method": args.naive_method,
        "sweep_method": args.method,
        "block": args.block,
        "naive_s_per_theta_median": nv,
        "naive_samples": naive,
        "sweep_setup_s_median": float(np.median([r["setup"] for r in runs])),
        "sweep_marginal_s_per_theta_median": per,
        "sweep_total_s_per_theta_median": tot,
        "marginal_ratio": nv / per,
        "total_ratio": nv / tot,
        "sweep_runs": runs,
    }
    if comm.rank == 0:
        print(json.dumps(res, indent=2))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
