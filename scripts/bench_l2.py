"""φ's L² error: ``beckmann solve`` against scikit-fem on the same mesh (issue 14, item 1).

The exact case: unit square, p0 = 1, p1 = 1 + ½ cos(πx) cos(πy), so Δφ = p0 − p1 gives
φ = cos(πx) cos(πy) / (4π²) (mean zero, ∂φ/∂n = 0). Both solvers see the *same* mesh (DOLFINx's
``create_unit_square``, handed to scikit-fem as points and triangles) and P1:

* beckmann: :func:`beckmann.pipeline.solve` with its defaults except ``solver.degree = 1``:
  quadrature right-hand side of ``solver.quadrature_degree`` (``-1``: 2k + 2), GAMG-CG at
  ``solver.rtol``; with ``--nodal`` also the old right-hand side from the nodal interpolants;
* scikit-fem: its default quadrature for P1 (degree 2, f at the quadrature points), pyamg
  smoothed aggregation + CG with one value fixed (u[0] = 0, an SPD system; on the singular matrix
  pyamg's CG stops early), to relative residual 1e-12, then shifted to mean zero.

Errors are integrated with a degree-8 rule on both sides. Printed per n: the errors, their ratio
beckmann / scikit-fem (the target is ≤ 1.0 at n = 1024, 1.05M dofs) and the observed rates.

    python scripts/bench_l2.py                       # n = 1024
    python scripts/bench_l2.py --n 64 128 256 --nodal
    python scripts/bench_l2.py --n 256 --quadrature-degree 2 4

Serial only (scikit-fem needs the whole mesh).
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np

EXPR = "1 + 0.5*cos(pi*x)*cos(pi*y)"


def beckmann_error(n: int, qdeg: int, nodal: bool) -> tuple[dict, np.ndarray, np.ndarray]:
    """beckmann's L² error (and the nodal variant's); the mesh as (points, triangles)."""
    from beckmann import config
    from beckmann._dolfinx import MPI, fem, ufl
    from beckmann.pipeline import solve
    from beckmann.poisson import NeumannPoisson

    cfg = config.resolve(sets=[f"mesh.n={n}", "solver.degree=1", 'target.kind="expression"',
                               f'target.expr="{EXPR}"', f"solver.quadrature_degree={qdeg}"])
    t0 = time.perf_counter()
    sol = solve(cfg, MPI.COMM_WORLD)
    seconds = time.perf_counter() - t0
    x = ufl.SpatialCoordinate(sol.msh)
    exact = ufl.cos(ufl.pi * x[0]) * ufl.cos(ufl.pi * x[1]) / (4 * ufl.pi**2)
    dx = ufl.dx(metadata={"quadrature_degree": 8})

    def l2(u: fem.Function) -> float:
        return float(np.sqrt(fem.assemble_scalar(fem.form((u - exact) ** 2 * dx))))

    out = {"quadrature": l2(sol.phi), "iterations": sol.info["iterations"], "seconds": seconds,
           "qdeg": sol.info["quadrature_degree"]}
    if nodal:
        P = NeumannPoisson(sol.V, rtol=cfg["solver"]["rtol"])
        f = fem.Function(sol.V)
        f.x.array[:] = sol.p1.x.array - sol.p0.x.array
        out["nodal"] = l2(P.solve(f))
        P.destroy()
    msh = sol.msh
    points = msh.geometry.x[:, :2].copy()
    cells = msh.geometry.dofmaps[0].copy()
    return out, points, cells


def skfem_error(points: np.ndarray, cells: np.ndarray) -> dict:
    """scikit-fem + pyamg on the same triangles (default P1 quadrature, f at its points)."""
    from skfem_peer import from_triangles, l2_error, solve_neumann

    t0 = time.perf_counter()
    # to 1e-12, so that the comparison does not measure the peer's algebraic error
    sol = solve_neumann(from_triangles(points, cells), 1e-12)
    seconds = time.perf_counter() - t0
    return {"error": l2_error(sol), "iterations": sol.iterations, "seconds": seconds,
            "residual": sol.residual}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1024], help="cells per side")
    ap.add_argument("--quadrature-degree", type=int, nargs="+", default=[-1])
    ap.add_argument("--nodal", action="store_true", help="also the nodal-interpolant RHS")
    args = ap.parse_args()
    rows = []
    for n in args.n:
        for q in args.quadrature_degree:
            ours, points, cells = beckmann_error(n, q, args.nodal)
            gc.collect()
            peer = skfem_error(points, cells)
            rows.append((n, ours, peer))
            nodal = f", nodal {ours['nodal']:.4e} ({ours['nodal'] / peer['error']:.3f}x)" \
                if "nodal" in ours else ""
            print(f"n = {n:5d} ({(n + 1) ** 2} dofs), quadrature degree {ours['qdeg']}: "
                  f"beckmann {ours['quadrature']:.4e} ({ours['iterations']} CG its, "
                  f"{ours['seconds']:.1f} s), scikit-fem {peer['error']:.4e} "
                  f"({peer['iterations']} its, residual {peer['residual']:.1e}, "
                  f"{peer['seconds']:.1f} s), ratio {ours['quadrature'] / peer['error']:.6f}"
                  f"{nodal}", flush=True)
    if len({r[0] for r in rows}) > 1 and len(args.quadrature_degree) == 1:
        h = 1.0 / np.array([r[0] for r in rows])
        for name, errs in (("beckmann", [r[1]["quadrature"] for r in rows]),
                           ("scikit-fem", [r[2]["error"] for r in rows])):
            print(f"{name} L² rate {np.polyfit(np.log(h), np.log(errs), 1)[0]:.3f}")


if __name__ == "__main__":
    main()
