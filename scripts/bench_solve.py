"""Time to solution and peak memory at ~1M dofs: beckmann against scikit-fem + pyamg.

Both solve the exact case of the test suite (p0 = 1, p1 = 1 + ½ cos(πx) cos(πy) [cos(πz)])
with P1 elements from nothing (mesh, densities, assembly, preconditioner, solve) to the
mean-zero potential, with CG and smoothed-aggregation AMG at the same relative residual
tolerance. Each run is its own process (clean peak memory); beckmann runs serially and under
``mpirun -n 2``. The tolerance is matched to the discretisation error: the script prints both
L2 errors against the exact φ, which agree to three digits with a fully converged solve.

    python scripts/bench_solve.py                      # 2D 1.05M dofs and 3D 1.03M dofs, 3 repeats
    python scripts/bench_solve.py --n2 512 --n3 0      # quick

Prints one line per run and a table of medians with the ratios beckmann / peer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def worker_beckmann(dim: int, n: int, rtol: float) -> dict:
    import numpy as np

    from beckmann import config, pipeline
    from beckmann._dolfinx import MPI, PETSc, fem, ufl

    expr = "1 + 0.5*cos(pi*x)*cos(pi*y)" + ("*cos(pi*z)" if dim == 3 else "")
    cfg = config.resolve(
        sets=[
            f"mesh.kind={'unit_square' if dim == 2 else 'unit_cube'}",
            f"mesh.n={n}",
            "solver.degree=1",
            f"solver.rtol={rtol}",
            "target.kind=expression",
            f"target.expr={expr}",
        ]
    )
    comm = MPI.COMM_WORLD
    # compile the forms once (JIT cache) so that timing measures the solve, not ffcx
    warm = [f"mesh.kind={cfg['mesh']['kind']}", "mesh.n=4", "solver.degree=1"]
    pipeline.solve(config.resolve(sets=warm), comm)
    comm.barrier()
    timer = pipeline.Timer()
    t0 = time.perf_counter()
    sol = pipeline.solve(cfg, comm, timer=timer)
    comm.barrier()
    total = time.perf_counter() - t0
    x = ufl.SpatialCoordinate(sol.msh)
    ex = ufl.cos(ufl.pi * x[0]) * ufl.cos(ufl.pi * x[1]) / (2 * dim * ufl.pi**2)
    if dim == 3:
        ex = ex * ufl.cos(ufl.pi * x[2])
    err = np.sqrt(comm.allreduce(fem.assemble_scalar(fem.form((sol.phi - ex) ** 2 * ufl.dx))))
    # one matrix-vector product of the same operator, for the solve in matvec units
    from beckmann.poisson import NeumannPoisson

    P = NeumannPoisson(sol.V, rtol=rtol)
    y = P.b.duplicate()
    comm.barrier()
    t1 = time.perf_counter()
    for _ in range(20):
        P.A.mult(sol.phi.x.petsc_vec, y)
    comm.barrier()
    matvec = (time.perf_counter() - t1) / 20
    rss = comm.allreduce(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
    timings = {k: float(comm.allreduce(v, op=MPI.MAX)) for k, v in timer.timings.items()}
    del PETSc
    return {
        "who": f"beckmann-{comm.size}",
        "ndofs": sol.info["ndofs"],
        "time": total,
        "solve": timings["solve"],
        "setup": timings["assemble"],
        "iterations": sol.info["iterations"],
        "matvec": matvec,
        "l2_error": float(err),
        "rss_gb": rss,
    }


def worker_peer(dim: int, n: int, rtol: float) -> dict:
    import numpy as np
    import pyamg
    from skfem import (
        Basis,
        ElementTetP1,
        ElementTriP1,
        Functional,
        LinearForm,
        MeshTet,
        MeshTri,
        asm,
    )
    from skfem.models.poisson import laplace

    t0 = time.perf_counter()
    grid = np.linspace(0.0, 1.0, n + 1)
    if dim == 2:
        m = MeshTri.init_tensor(grid, grid)
        basis = Basis(m, ElementTriP1())
    else:
        m = MeshTet.init_tensor(grid, grid, grid)
        basis = Basis(m, ElementTetP1())

    def bump(x):
        out = np.cos(np.pi * x[0]) * np.cos(np.pi * x[1])
        return out * np.cos(np.pi * x[2]) if dim == 3 else out

    @LinearForm
    def rhs(v, w):
        return 0.5 * bump(w.x) * v

    @LinearForm
    def one(v, w):
        return v

    A = asm(laplace, basis).tocsr()
    b = asm(rhs, basis)
    t_asm = time.perf_counter()
    ml = pyamg.smoothed_aggregation_solver(A, B=np.ones((A.shape[0], 1)), symmetry="symmetric")
    t_setup = time.perf_counter()
    res: list[float] = []
    u = ml.solve(b, tol=rtol, accel="cg", residuals=res)
    t_solve = time.perf_counter()
    mass = asm(one, basis)
    u -= mass @ u / mass.sum()
    total = time.perf_counter() - t0

    @Functional
    def err2(w):
        return (w["u"] - bump(w.x) / (2 * dim * np.pi**2)) ** 2

    err = np.sqrt(err2.assemble(basis, u=basis.interpolate(u)))
    t1 = time.perf_counter()
    for _ in range(20):
        A @ u
    matvec = (time.perf_counter() - t1) / 20
    return {
        "who": "skfem+pyamg",
        "ndofs": int(A.shape[0]),
        "time": total,
        "solve": t_solve - t_setup,
        "setup": t_setup - t_asm,
        "iterations": len(res) - 1,
        "matvec": matvec,
        "l2_error": float(err),
        "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def run(who: str, dim: int, n: int, rtol: float, ranks: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--worker", who, "--dim", str(dim), "--n", str(n),
           "--rtol", str(rtol)]
    if ranks > 1:
        cmd = [str(BIN / "mpirun"), "-n", str(ranks), *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--worker", choices=["beckmann", "peer"])
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--n2", type=int, default=1024, help="2D cells per side (0: skip)")
    ap.add_argument("--n3", type=int, default=100, help="3D cells per side (0: skip)")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    if args.worker:
        fn = worker_beckmann if args.worker == "beckmann" else worker_peer
        res = fn(args.dim, args.n, args.rtol)
        if args.worker == "peer" or _rank() == 0:
            print(json.dumps(res))
        return
    cases = [(2, args.n2), (3, args.n3)]
    for dim, n in cases:
        if n <= 0:
            continue
        rows: dict[str, list[dict]] = {}
        for rep in range(args.repeat):
            # interleave the contenders so that machine load hits them alike
            for who, ranks in [("peer", 1)] + [("beckmann", r) for r in args.ranks]:
                r = run(who, dim, n, args.rtol, ranks)
                rows.setdefault(r["who"], []).append(r)
                print(f"{dim}D rep {rep}: " + json.dumps(r), flush=True)
        med = {
            who: {k: statistics.median(x[k] for x in rs) for k in rs[0] if k != "who"}
            for who, rs in rows.items()
        }
        peer = med["skfem+pyamg"]
        print(f"\n{dim}D, {int(peer['ndofs'])} dofs, rtol {args.rtol}, median of {args.repeat}:")
        print(f"{'':14s} {'time s':>8s} {'setup':>7s} {'solve':>7s} {'its':>4s} "
              f"{'solve/matvec':>12s} {'L2 error':>10s} {'peak GB':>8s} {'time ratio':>10s} "
              f"{'mem ratio':>9s}")
        for who, m in med.items():
            print(f"{who:14s} {m['time']:8.2f} {m['setup']:7.2f} {m['solve']:7.2f} "
                  f"{m['iterations']:4.0f} {m['solve'] / m['matvec']:12.0f} {m['l2_error']:10.3e} "
                  f"{m['rss_gb']:8.2f} {m['time'] / peer['time']:10.2f} "
                  f"{m['rss_gb'] / peer['rss_gb']:9.2f}")
        print(flush=True)


def _rank() -> int:
    from beckmann._dolfinx import MPI

    return MPI.COMM_WORLD.rank


if __name__ == "__main__":
    main()
