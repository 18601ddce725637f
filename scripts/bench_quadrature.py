"""The density quadrature degree against the discretisation error (docs/performance.md).

p0 = 1, p1 = 1 + ½ cos πx cos πy on the unit square: -Δφ = p1 − p0 with ∂φ/∂n = 0 and mean 0
has the exact solution φ = cos πx cos πy / (4π²). For each Lagrange degree k, mesh size n and
``solver.quadrature_degree`` q it prints the relative L² and H¹ errors of φ (measured with a
rule of degree 2k + 6, independent of q), the relative error of the Beckmann cost against
1/(64π²) and the wall time of the density phase, so that a cheaper rule can be read off as
"same errors to the printed digits" or not.

    python scripts/bench_quadrature.py                     # k = 1, n = 128 ... 1024
    python scripts/bench_quadrature.py --k 2 --n 32 64 128
"""

from __future__ import annotations

import argparse

EXPR = "1 + 0.5*cos(pi*x)*cos(pi*y)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+", default=[1])
    ap.add_argument("--n", type=int, nargs="+", default=[128, 256, 512, 1024])
    ap.add_argument("--q", type=int, nargs="+", default=None,
                    help="quadrature degrees (default: 2k and 2k + 2)")
    args = ap.parse_args()

    import numpy as np
    import ufl

    from beckmann import config, pipeline
    from beckmann._dolfinx import MPI, fem

    comm = MPI.COMM_WORLD
    print(f"{'k':>2s} {'n':>5s} {'q':>3s} {'rel L2 err':>11s} {'rel H1 err':>11s} "
          f"{'cost rel err':>13s} {'densities s':>12s}")
    for k in args.k:
        dx = ufl.dx(metadata={"quadrature_degree": 2 * k + 6})

        def norm(u: object, grad: bool = False, dx: object = dx) -> float:
            g = ufl.grad(u) if grad else u
            local = fem.assemble_scalar(fem.form(ufl.inner(g, g) * dx))
            return float(np.sqrt(comm.allreduce(local, op=MPI.SUM)))

        for n in args.n:
            for q in args.q or (2 * k, 2 * k + 2):
                cfg = config.resolve(sets=[f"mesh.n={n}", f"solver.degree={k}",
                                           f"solver.quadrature_degree={q}",
                                           "target.kind='expression'", f"target.expr='{EXPR}'"])
                timer = pipeline.Timer()
                sol = pipeline.solve(cfg, comm, timer=timer)
                x = ufl.SpatialCoordinate(sol.msh)
                exact = ufl.cos(ufl.pi * x[0]) * ufl.cos(ufl.pi * x[1]) / (4 * ufl.pi**2)
                e = sol.phi - exact
                cost = sol.info["beckmann_cost"] * 64 * np.pi**2 - 1.0
                if comm.rank == 0:
                    print(f"{k:2d} {n:5d} {q:3d} {norm(e) / norm(exact):11.4e} "
                          f"{norm(e, True) / norm(exact, True):11.4e} {cost:13.4e} "
                          f"{timer.timings['densities']:12.2f}", flush=True)
                else:
                    norm(e), norm(e, True)


if __name__ == "__main__":
    main()
