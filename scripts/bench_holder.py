"""Benchmark the exact against the fast Hölder estimator on n points in 2D (issue 3).

Both methods compute the same quantities in the same run: the modulus of continuity at the default
scales, the fitted exponent and the seminorm for a fixed alpha. Prints medians over repeats, the
time ratio exact/fast and the relative differences. Run it serially for the 1-rank figures and
under ``mpirun -n 2`` for the 2-rank figures (points are split over the ranks):

    .venv/bin/python scripts/bench_holder.py
    .venv/bin/mpirun -n 2 .venv/bin/python scripts/bench_holder.py

Target (issue 3): fast >= 20x faster than exact at n = 5e4, within 1% on smooth fields.

With ``--run DIR`` it times instead whole processes ``beckmann holder DIR --field F`` for every
field and for ``--field all`` (median of ``--repeats-fast``), serially; issue 15's target is
every field of a 150k-dof P3 run in under 10 s:

    .venv/bin/beckmann solve CONFIG --out /tmp/sq128   # unit square, P3, mesh.n = 128
    .venv/bin/python scripts/bench_holder.py --run /tmp/sq128 --repeats-fast 3 [--fields all]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from beckmann import holder
from beckmann._dolfinx import MPI


def field(X: np.ndarray, kind: str) -> np.ndarray:
    if kind == "smooth":
        return np.sin(2 * np.pi * X[:, 0]) * np.cos(np.pi * X[:, 1]) + 0.3 * X[:, 1] ** 2
    if kind == "holder":  # C^{0,1/2} at the centre
        return np.sqrt(np.linalg.norm(X - 0.5, axis=1)) + np.cos(X[:, 0])
    if kind == "vector":
        return np.c_[np.sin(2 * np.pi * X[:, 0]), np.cos(np.pi * X[:, 0] * X[:, 1])]
    raise ValueError(f"unknown field {kind!r}")


def bench_run(run: str, repeats: int, json_out: str, fields: str = "") -> None:
    """Median wall time of ``beckmann holder RUN --field F`` as a whole process, per field.

    ``fields``: comma-separated subset of the fields and ``all`` (default: every one).
    """
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).with_name("beckmann"))
    out = {"run": run, "repeats": repeats, "seconds": {}}
    for f in fields.split(",") if fields else (*holder.FIELDS, "all"):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([exe, "holder", run, "--field", f], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        out["seconds"][f] = statistics.median(times)
        print(f"{f:>20}: {out['seconds'][f]:.2f} s (median of {repeats})", flush=True)
    if json_out:
        with open(json_out, "w") as fh:
            json.dump(out, fh, indent=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="", help="time `beckmann holder RUN --field F` instead")
    ap.add_argument("--fields", default="", help="with --run: only these (comma-separated)")
    ap.add_argument("--n", type=int, default=50_000, help="global number of points")
    ap.add_argument("--field", default="smooth", choices=["smooth", "holder", "vector"])
    ap.add_argument("--alpha", type=float, default=0.5, help="seminorm exponent")
    ap.add_argument("--repeats-fast", type=int, default=5)
    ap.add_argument("--repeats-exact", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default="", help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.run:
        bench_run(args.run, args.repeats_fast, args.json_out, args.fields)
        return

    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(args.seed)
    X = rng.random((args.n, 2))  # the same global cloud on every rank count
    lo, hi = comm.rank * args.n // comm.size, (comm.rank + 1) * args.n // comm.size
    Xl = X[lo:hi]
    Vl = field(Xl, args.field)

    def timed(method: str, repeats: int) -> tuple[float, holder.HolderResult]:
        times, res = [], None
        for _ in range(repeats):
            comm.barrier()
            t0 = time.perf_counter()
            res = holder.estimate(Xl, Vl, comm, alpha=args.alpha, method=method)
            t = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
            times.append(t)
        assert res is not None
        return statistics.median(times), res

    t_fast, r_fast = timed("fast", args.repeats_fast)
    t_exact, r_exact = timed("exact", args.repeats_exact)

    def rel(a: float, b: float) -> float:
        return abs(a - b) / max(abs(b), 1e-300)

    mod_rel = float(
        np.max(np.abs(r_fast.modulus - r_exact.modulus) / np.maximum(r_exact.modulus, 1e-300))
    )
    out = {
        "n": args.n,
        "ranks": comm.size,
        "field": args.field,
        "alpha": args.alpha,
        "scales": len(r_exact.scales),
        "time_fast_median_s": t_fast,
        "time_exact_median_s": t_exact,
        "speedup_exact_over_fast": t_exact / t_fast,
        "rel_diff_seminorm": rel(r_fast.seminorm, r_exact.seminorm),
        "rel_diff_modulus_max": mod_rel,
        "exponent_fast": r_fast.exponent.estimate,
        "exponent_exact": r_exact.exponent.estimate,
        "seminorm_exact": r_exact.seminorm,
        "repeats": {"fast": args.repeats_fast, "exact": args.repeats_exact},
    }
    if comm.rank == 0:
        print(json.dumps(out, indent=2))
        print(
            f"n={args.n} ranks={comm.size}: exact {t_exact:.2f} s, fast {t_fast:.3f} s "
            f"(median), ratio {t_exact / t_fast:.1f}x, rel. diff seminorm "
            f"{out['rel_diff_seminorm']:.1e}, modulus {mod_rel:.1e}"
        )
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
