"""Whole-command benchmark: ``beckmann solve CONFIG --out DIR`` against scikit-fem + pyamg.

What a user waits for is the command, so both contenders are timed as whole processes, from
``exec`` to exit (Python start-up, imports, mesh, densities, assembly, AMG setup, solve and, for
beckmann, writing the run folder), and their peak memory is the child's ``ru_maxrss``:

* beckmann: ``beckmann solve CONFIG --out DIR`` with default settings except
  ``solver.degree = 1`` (unit square, p0 = 1, p1 = 1 + ½ cos(πx) cos(πy)); optionally also
  under ``mpirun -n 2`` (peak memory is then the largest rank's);
* the peer: scikit-fem + pyamg (smoothed aggregation, CG, rtol 1e-10, one value fixed:
  ``skfem_peer.py``) on the same P1 problem,
  writing nothing.

Printed: each run's wall time and peak memory, the medians, the ratio beckmann / peer, the
per-phase timings from ``summary.json``, the run folder's size against the raw float64 size of
mesh + fields, the CG iterations, and one mat-vec of the operator (timed in a separate process)
so the solve can be read in mat-vec units.

    python scripts/bench_solve.py                 # n = 1024: 1.05M P1 dofs, median of 3
    python scripts/bench_solve.py --n 256 --repeat 1
    python scripts/bench_solve.py --worker tolerances --n 1024   # solver.rtol vs exact error
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
EXPR = "1 + 0.5*cos(pi*x)*cos(pi*y)"


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str, float]:
    """Run ``cmd``; return (wall s, peak RSS in GB of the child tree, stdout, CPU s)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    # ru_maxrss of the children waited for so far: each contender runs alone, and the running
    # maximum is reset by running every contender in its own short-lived wrapper process.
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    data = json.loads(out.strip().splitlines()[-1])
    return wall, float(data.get("rss_gb", 0.0)), out, float(data.get("cpu_s", 0.0))


def wrapper(cmd: list[str]) -> None:
    """Run ``cmd`` as our only child and print its peak RSS (JSON) after its own output."""
    import resource

    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        sys.exit(proc.returncode)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(proc.stdout.strip())
    # CPU seconds (user + system) of the child tree: on a shared, loaded machine the wall time
    # of each contender depends on the others' load, its CPU time much less
    print(json.dumps({"rss_gb": usage.ru_maxrss / 1e6, "cpu_s": usage.ru_utime + usage.ru_stime}))


def worker_peer(n: int, rtol: float) -> None:
    """The peer, as a user would write it: everything from import to the mean-zero potential."""
    from skfem_peer import solve_neumann, unit_square

    sol = solve_neumann(unit_square(n), rtol)
    print(json.dumps({"ndofs": int(sol.u.size), "iterations": sol.iterations,
                      "residual": sol.residual}))


def worker_matvec(n: int) -> None:
    """One mat-vec of beckmann's assembled P1 operator (median of 20), for mat-vec units."""
    from beckmann import config
    from beckmann._dolfinx import MPI, fem
    from beckmann.mesh import create_mesh
    from beckmann.poisson import NeumannPoisson

    cfg = config.resolve(sets=[f"mesh.n={n}", "solver.degree=1"])
    msh = create_mesh(cfg["mesh"], MPI.COMM_WORLD)
    P = NeumannPoisson(fem.functionspace(msh, ("Lagrange", 1)), rtol=1e-10)
    x, y = P.b.duplicate(), P.b.duplicate()
    x.set(1.0)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        P.A.mult(x, y)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"matvec": statistics.median(times)}))


def worker_tolerances(n: int) -> None:
    """φ at several solver.rtol against the exact φ = cos πx cos πy / (4π²) (docs/performance.md).

    p1 − p0 = ½ cos πx cos πy, so -Δφ = p1 − p0 with ∂φ/∂n = 0 and mean 0 is that φ.
    """
    import numpy as np
    import ufl

    from beckmann import config, pipeline
    from beckmann._dolfinx import MPI, fem

    ref = cost_ref = None
    dx = ufl.dx(metadata={"quadrature_degree": 4})

    def norm(u: object, grad: bool = False) -> float:
        g = ufl.grad(u) if grad else u
        return float(np.sqrt(fem.assemble_scalar(fem.form(ufl.inner(g, g) * dx))))

    print(f"{'rtol':>7s} {'its':>4s} {'rel L2 err':>11s} {'rel H1 err':>11s} "
          f"{'max|φ-φ(1e-10)|/max|φ|':>24s} {'cost rel diff':>14s}")
    for rtol in (1e-10, 1e-8, 1e-7, 1e-6, 1e-5):
        cfg = config.resolve(sets=[f"mesh.n={n}", "solver.degree=1", f"solver.rtol={rtol}",
                                   "target.kind='expression'", f"target.expr='{EXPR}'"])
        sol = pipeline.solve(cfg, MPI.COMM_WORLD)
        x = ufl.SpatialCoordinate(sol.msh)
        exact = ufl.cos(ufl.pi * x[0]) * ufl.cos(ufl.pi * x[1]) / (4 * ufl.pi**2)
        e = sol.phi - exact
        if ref is None:
            ref, cost_ref = sol.phi.x.array.copy(), sol.info["beckmann_cost"]
        diff = np.abs(sol.phi.x.array - ref).max() / np.abs(ref).max()
        print(f"{rtol:7.0e} {sol.info['iterations']:4d} {norm(e) / norm(exact):11.3e} "
              f"{norm(e, True) / norm(exact, True):11.3e} {diff:24.1e} "
              f"{abs(sol.info['beckmann_cost'] - cost_ref) / cost_ref:14.1e}", flush=True)


def raw_bytes(summary: dict) -> int:
    """Raw float64 size of mesh + vertex fields of a 2D P1 run (8 bytes per number)."""
    cells, vertices = summary["cells"], int(summary["ndofs"])
    times = len(summary["times"])
    mesh = vertices * 2 + cells * 3
    fields = vertices * (3 + 2 + 2 * times)  # potential, source, target; flux; velocities
    return 8 * (mesh + fields)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--worker", choices=["peer", "matvec", "wrap", "tolerances"],
                    help="internal, except tolerances: the solver.rtol table of "
                    "docs/performance.md")
    ap.add_argument("--n", type=int, default=1024, help="cells per side (1024: 1.05M P1 dofs)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1])
    ap.add_argument("--peer-rtol", type=float, default=1e-10)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to beckmann solve (e.g. solver.rtol=1e-6; default: none)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.worker == "peer":
        return worker_peer(args.n, args.peer_rtol)
    if args.worker == "matvec":
        return worker_matvec(args.n)
    if args.worker == "tolerances":
        return worker_tolerances(args.n)
    if args.worker == "wrap":
        return wrapper(args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "BECKMANN_NO_PROGRESS": "1"}
    me = [sys.executable, __file__]
    work = Path(tempfile.mkdtemp(prefix="bench-solve-"))
    cfg = work / "bench.toml"
    cfg.write_text(f'[mesh]\nkind = "unit_square"\nn = {args.n}\n[solver]\ndegree = 1\n'
                   f'[target]\nkind = "expression"\nexpr = "{EXPR}"\n')
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows: dict[str, list[dict]] = {}
    summaries: dict[str, list[dict]] = {}
    try:
        for rep in range(args.repeat):
            contenders = [("skfem+pyamg", [*me, "--worker", "peer", "--n", str(args.n),
                                           "--peer-rtol", str(args.peer_rtol)])]
            for r in args.ranks:
                out = work / f"run{r}"
                solve = [str(BIN / "beckmann"), "solve", str(cfg), "--out", str(out),
                         "--overwrite", "-q", *sum((["--set", s] for s in args.set), [])]
                if r > 1:
                    solve = [str(BIN / "mpirun"), "-n", str(r), *solve]
                contenders.append((f"beckmann-{r}", solve))
            for who, cmd in contenders:  # interleaved, so that load hits all alike
                wall, rss, _, cpu = timed([*me, "--worker", "wrap", "--", *cmd], env)
                row = {"wall": wall, "rss_gb": rss, "cpu": cpu}
                if who.startswith("beckmann"):
                    run = work / f"run{who.split('-')[1]}"
                    summary = json.loads((run / "summary.json").read_text())
                    summaries.setdefault(who, []).append(summary)
                    row["bytes"] = folder_bytes(run)
                rows.setdefault(who, []).append(row)
                print(f"rep {rep} {who:12s} wall {wall:7.2f} s  cpu {cpu:7.2f} s  "
                      f"peak {rss:5.2f} GB  load {os.getloadavg()[0]:.2f}", flush=True)
        _, _, text, _ = timed([*me, "--worker", "wrap", "--", *me, "--worker", "matvec", "--n",
                            str(args.n)], env)
        matvec = json.loads(text.strip().splitlines()[0])["matvec"]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {who: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for who, rs in rows.items()}
    peer = med["skfem+pyamg"]
    print(f"\nunit square n = {args.n}, P1, median of {args.repeat} (whole processes)"
          + (f"; beckmann with --set {' --set '.join(args.set)}" if args.set else ""))
    print(f"{'':12s} {'wall s':>8s} {'cpu s':>8s} {'peak GB':>8s} {'time ratio':>10s} "
          f"{'cpu ratio':>9s} {'mem ratio':>9s}")
    for who, m in med.items():
        print(f"{who:12s} {m['wall']:8.2f} {m['cpu']:8.2f} {m['rss_gb']:8.2f} "
              f"{m['wall'] / peer['wall']:10.2f} {m['cpu'] / peer['cpu']:9.2f} "
              f"{m['rss_gb'] / peer['rss_gb']:9.2f}")
    for who, runs in summaries.items():
        # the phases of the median run (by wall time), so that they add up to its wall time
        walls = [r["wall"] for r in rows[who]]
        pick = sorted(range(len(walls)), key=walls.__getitem__)[(len(walls) - 1) // 2]
        s = runs[pick]
        t = s["timings"]
        wall = walls[pick]
        phases = ", ".join(f"{k} {v:.2f}" for k, v in t.items())
        print(f"\n{who}: {s['ndofs']} dofs, the median run (rep {pick}), phases (s, max over "
              f"ranks): {phases}")
        print(f"  in phases {sum(t.values()):.2f} s of {wall:.2f} s wall "
              f"(start-up, imports, JIT cache lookups: {wall - sum(t.values()):.2f} s); "
              f"output {100 * t.get('output', 0.0) / wall:.1f} % of the run")
        parts = s.get("output_timings", {})
        if parts:
            print("  output parts: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
                  + (f"; checkpoint {100 * parts['checkpoint'] / t['solve']:.1f} % of the solve "
                     "phase" if "checkpoint" in parts else ""))
        print(f"  CG iterations {s['iterations']}, solve {t['solve']:.2f} s = "
              f"{t['solve'] / matvec:.0f} mat-vecs (one mat-vec {1e3 * matvec:.1f} ms, 1 rank)")
        size = med[who]["bytes"]
        print(f"  run folder {size / 1e6:.0f} MB = {size / raw_bytes(s):.2f} x the raw float64 "
              f"size of mesh + fields ({raw_bytes(s) / 1e6:.0f} MB)")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
