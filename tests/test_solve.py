"""Exact solutions: convergence rates, flux and velocity at points, 3D, solver variants.

p0 = 1, p1 = 1 + ½ cos(πx) cos(πy) on the unit square gives φ = cos(πx) cos(πy) / (4π²)
(docs/math.md §1: Δφ = p0 − p1, ∂φ/∂n = 0, ∫φ = 0). In 3D, p1 = 1 + ½ cos cos cos gives
φ = cos(πx) cos(πy) cos(πz) / (6π²).
"""

from __future__ import annotations

import numpy as np
import pytest

from beckmann import config, pipeline
from beckmann._dolfinx import MPI, PETSc, fem, ufl

EXPR2 = "1 + 0.5*cos(pi*x)*cos(pi*y)"
EXPR3 = "1 + 0.5*cos(pi*x)*cos(pi*y)*cos(pi*z)"


def exact_cfg(n: int, degree: int, dim: int = 2, **extra: str) -> dict:
    sets = [
        f"mesh.kind={'unit_square' if dim == 2 else 'unit_cube'}",
        f"mesh.n={n}",
        f"solver.degree={degree}",
        "target.kind=expression",
        f"target.expr={EXPR2 if dim == 2 else EXPR3}",
        *[f"{k}={v}" for k, v in extra.items()],
    ]
    return config.resolve(sets=sets)


def phi_exact(x, dim: int = 2):
    if dim == 2:
        return ufl.cos(ufl.pi * x[0]) * ufl.cos(ufl.pi * x[1]) / (4 * ufl.pi**2)
    return (
        ufl.cos(ufl.pi * x[0]) * ufl.cos(ufl.pi * x[1]) * ufl.cos(ufl.pi * x[2]) / (6 * ufl.pi**2)
    )


def errors(sol, dim: int = 2) -> tuple[float, float]:
    x = ufl.SpatialCoordinate(sol.msh)
    e = sol.phi - phi_exact(x, dim)
    comm = sol.comm
    l2 = comm.allreduce(fem.assemble_scalar(fem.form(e * e * ufl.dx)), op=MPI.SUM)
    h1 = comm.allreduce(
        fem.assemble_scalar(fem.form(ufl.inner(ufl.grad(e), ufl.grad(e)) * ufl.dx)), op=MPI.SUM
    )
    return float(np.sqrt(l2)), float(np.sqrt(h1))


def rate(hs, es) -> float:
    return float(np.polyfit(np.log(hs), np.log(es), 1)[0])


@pytest.mark.parametrize(
    ("degree", "ns"), [(1, (8, 16, 32)), (2, (4, 8, 16)), (3, (4, 8, 16))]
)
def test_convergence_rates(degree, ns):
    l2s, h1s, hs = [], [], []
    for n in ns:
        sol = pipeline.solve(exact_cfg(n, degree))
        l2, h1 = errors(sol)
        l2s.append(l2)
        h1s.append(h1)
        hs.append(1.0 / n)
        # solver.rtol = "auto", matched to the discretisation error: the rates are unchanged
        # (a direct solve, on the smallest meshes, has no tolerance: round-off)
        rtol = sol.info["rtol"]
        assert rtol is None or rtol <= 1e-6
        assert sol.info["residual"] < (1e-10 if rtol is None else rtol)
    # L2 ~ h^(k+1), H1 ~ h^k (log-log fit; tolerance 0.25)
    assert rate(hs, l2s) == pytest.approx(degree + 1, abs=0.25)
    assert rate(hs, h1s) == pytest.approx(degree, abs=0.25)


def test_flux_velocity_at_points_and_cost():
    sol = pipeline.solve(exact_cfg(16, 3))
    rng = np.random.default_rng(0)
    pts = rng.uniform(0.02, 0.98, size=(40, 2))
    res = sol.evaluate(pts, t=0.25, what=("potential", "flux", "velocity", "target"))
    x, y = pts.T
    c, s = np.cos, np.sin
    phi = c(np.pi * x) * c(np.pi * y) / (4 * np.pi**2)
    F = np.c_[-s(np.pi * x) * c(np.pi * y), -c(np.pi * x) * s(np.pi * y)] / (4 * np.pi)
    p1 = 1 + 0.5 * c(np.pi * x) * c(np.pi * y)
    v = F / (0.75 * 1.0 + 0.25 * p1)[:, None]
    assert np.abs(res["potential"] - phi).max() < 1e-5
    assert np.abs(res["flux"] - F).max() < 1e-4
    assert np.abs(res["velocity"] - v).max() < 1e-4
    assert np.abs(res["target"] - p1).max() < 1e-4
    # ½∫|∇φ|² = ½ · (π²/2)·(1/4)·(1/(4π²))² ... computed exactly: ∫|∇ cos cos|² = π²/2
    exact_cost = 0.5 * (np.pi**2 / 2) / (4 * np.pi**2) ** 2
    assert sol.cost() == pytest.approx(exact_cost, rel=1e-5)


def test_velocity_function_matches_pointwise():
    sol = pipeline.solve(exact_cfg(8, 2))
    v = sol.velocity(0.5)
    pts = np.array([[0.31, 0.47], [0.8, 0.15]])
    loc = sol.locator()
    x, cells, mine = loc.locate(pts)
    local = np.zeros((2, 2))
    idx = np.flatnonzero(mine)
    if idx.size:
        local[idx] = v.eval(x[idx], cells[idx]).reshape(-1, 2)
    got = sol.comm.allreduce(local, op=MPI.SUM)
    ref = sol.evaluate(pts, t=0.5)["velocity"]
    # DG_k interpolation of a smooth quotient: close to the pointwise quotient
    assert np.abs(got - ref).max() < 1e-4


def test_exact_3d():
    l2s, hs = [], []
    for n in (4, 8):
        sol = pipeline.solve(exact_cfg(n, 2, dim=3))
        l2s.append(errors(sol, dim=3)[0])
        hs.append(1.0 / n)
    assert l2s[-1] < 2e-5
    assert rate(hs, l2s) == pytest.approx(3.0, abs=0.4)


def l2_norm(e) -> float:
    """The L² norm of a UFL expression on its mesh, summed over ranks."""
    comm = ufl.domain.extract_unique_domain(e).ufl_cargo().comm
    return float(np.sqrt(comm.allreduce(fem.assemble_scalar(fem.form(e * e * ufl.dx)), MPI.SUM)))


def test_solve_uses_the_quadrature_right_hand_side():
    """``solve``'s φ is the quadrature right-hand side's, which beats the nodal interpolant's.

    Two independent references on the same mesh: the Galerkin solution for the exact f written
    in UFL (FFCx integrates it at degree 10), which solve's φ must match far below the
    discretisation error (and closer as h falls), and the old right-hand side
    ∫ (I p1 − I p0) w, whose L² error against the exact φ is 1.6x larger (measured 1.62 at
    n = 32 ... 1024, scripts/bench_l2.py --nodal).
    """
    from beckmann.poisson import NeumannPoisson

    for n in (8, 16, 32):
        sol = pipeline.solve(exact_cfg(n, 1, **{"solver.method": "mumps"}))
        assert sol.info["quadrature_degree"] == 2
        P = NeumannPoisson(sol.V, method="mumps")
        w = ufl.TestFunction(sol.V)
        x = ufl.SpatialCoordinate(sol.msh)
        f = 0.5 * ufl.cos(ufl.pi * x[0]) * ufl.cos(ufl.pi * x[1])
        b = fem.petsc.assemble_vector(fem.form(f * w * ufl.dx(degree=10)))
        b.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        galerkin = P.solve_vector(b)
        nodal = fem.Function(sol.V)
        nodal.x.array[:] = sol.p1.x.array - sol.p0.x.array
        phi_nodal = P.solve(nodal)
        err, err_nodal = l2_norm(sol.phi - phi_exact(x)), l2_norm(phi_nodal - phi_exact(x))
        diff = l2_norm(sol.phi - galerkin)
        # the default rule (degree 2 for P1) errs by O(h⁴) against the O(h²) error: 1.5e-3
        # of it at n = 8, 2.3e-5 at n = 64 (degree 4: 2.4e-6 at n = 8)
        assert diff < 2e-3 * (8 / n) ** 2 * err, (diff, err)
        assert err < 0.7 * err_nodal, (err, err_nodal)
        P.destroy()
        b.destroy()


def test_mumps_matches_gamg():
    a = pipeline.solve(exact_cfg(12, 2))
    b = pipeline.solve(exact_cfg(12, 2, **{"solver.method": "mumps"}))
    assert np.abs(a.phi.x.array - b.phi.x.array).max() < 1e-9
    assert b.info["iterations"] <= 1


def test_mean_zero_and_masses():
    cfg = config.resolve(
        sets=["mesh.n=8", "source.kind=expression", "source.expr=2 + x", "target.expr=3"]
    )
    cfg["target"]["kind"] = "expression"
    sol = pipeline.solve(cfg)
    comm = sol.comm
    mean = comm.allreduce(fem.assemble_scalar(fem.form(sol.phi * ufl.dx)), op=MPI.SUM)
    assert abs(mean) < 1e-12
    assert sol.info["mass_source"] == pytest.approx(2.5, rel=1e-12)
    assert sol.info["mass_target"] == pytest.approx(3.0, rel=1e-12)
    m0 = comm.allreduce(fem.assemble_scalar(fem.form(sol.p0 * ufl.dx)), op=MPI.SUM)
    assert m0 == pytest.approx(1.0, rel=1e-12)


def test_petsc_option_passthrough_and_failure():
    from beckmann.poisson import SolverError

    cfg = exact_cfg(8, 1, **{"solver.petsc_options": '{ksp_max_it = 1, pc_type = "none"}'})
    with pytest.raises(SolverError, match="failed after"):
        pipeline.solve(cfg)


def test_disk_radial_exact():
    """Unit disk, p0 uniform, p1 ∝ 5 − 4r²: φ = (r⁴/4 − r²/2 + 1/6) / (3π) (∂φ/∂r = 0 at r = 1)."""
    errs = []
    for h in (0.2, 0.1):
        cfg = config.resolve(
            sets=[
                "mesh.kind=disk",
                f"mesh.h={h}",
                "target.kind=expression",
                "target.expr=5 - 4*(x**2 + y**2)",
            ]
        )
        sol = pipeline.solve(cfg)
        assert sol.info["mass_target"] == pytest.approx(3 * np.pi, rel=0.05)
        x = ufl.SpatialCoordinate(sol.msh)
        r2 = x[0] ** 2 + x[1] ** 2
        ex = (r2**2 / 4 - r2 / 2 + 1 / 6) / (3 * np.pi)
        e2 = fem.assemble_scalar(fem.form((sol.phi - ex) ** 2 * ufl.dx))
        errs.append(np.sqrt(sol.comm.allreduce(e2, op=MPI.SUM)))
    assert errs[1] < 4e-4
    assert errs[1] < errs[0] / 2.5  # polygonal boundary: O(h^2) at best


def test_lshape_and_density_kinds(mpi_tmp_path):
    """L-shape with a Gaussian-mixture target; then a stored field as the next run's source."""
    cfg = config.resolve(
        sets=[
            "mesh.kind=lshape",
            "mesh.h=0.1",
            "solver.degree=1",
            "target.kind=gaussian_mixture",
            "target.weights=[1.0]",
            "target.means=[[-0.5, 0.5]]",
            "target.covariances=[0.05]",
            "target.floor=0.1",
            "output.times=[0.5]",
        ]
    )
    sol = pipeline.run(cfg, out=mpi_tmp_path / "l")
    assert sol.info["residual"] < 1e-8
    assert sol.info["volume"] == pytest.approx(3.0, rel=1e-12)
    # the stored target becomes the source of a new problem on a finer mesh of the same domain
    cfg2 = config.resolve(
        sets=[
            "mesh.kind=lshape",
            "mesh.h=0.07",
            "solver.degree=1",
            "source.kind=function",
            f"source.path={mpi_tmp_path / 'l'}",
            "source.field=target",
        ]
    )
    sol2 = pipeline.solve(cfg2)
    pts = np.array([[-0.5, 0.5], [0.5, 0.5], [-0.6, -0.6]])
    a = sol.evaluate(pts, what=("target",))["target"]
    b = sol2.evaluate(pts, what=("source",))["source"]
    assert np.allclose(a, b, rtol=0.05)
    # reversed problem: uniform source and target swapped gives -φ
    cfg3 = config.resolve(
        sets=["mesh.kind=lshape", "mesh.h=0.1", "solver.degree=1", "source.kind=gaussian_mixture",
              "source.weights=[1.0]", "source.means=[[-0.5, 0.5]]", "source.covariances=[0.05]",
              "source.floor=0.1"]
    )
    sol3 = pipeline.solve(cfg3)
    assert np.allclose(sol3.phi.x.array, -sol.phi.x.array, atol=1e-8)


def test_image_and_samples_densities(mpi_tmp_path):
    """A .npy image that samples 1 + x exactly, and a KDE of samples, through the pipeline."""
    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        g = np.linspace(0.0, 1.0, 11)
        np.save(mpi_tmp_path / "img.npy", 1.0 + g[:, None] + 0.0 * g[None, :])  # [i_x, i_y]
        rng = np.random.default_rng(3)
        np.save(mpi_tmp_path / "pts.npy", rng.uniform(0.2, 0.8, size=(4000, 2)))
    comm.barrier()
    cfg = config.resolve(
        sets=[
            "mesh.n=10",
            "solver.degree=1",
            "source.kind=image",
            f"source.path={mpi_tmp_path / 'img.npy'}",
            "target.kind=samples",
            f"target.path={mpi_tmp_path / 'pts.npy'}",
            "target.bandwidth=0.1",
            "target.floor=0.05",
        ]
    )
    sol = pipeline.solve(cfg, comm)
    assert sol.info["mass_source"] == pytest.approx(1.5, rel=1e-12)  # ∫(1 + x) = 3/2
    pts = np.array([[0.25, 0.5], [0.75, 0.1]])
    got = sol.evaluate(pts, what=("source", "target"))
    assert np.allclose(got["source"], (1 + pts[:, 0]) / 1.5, rtol=1e-12)
    # the KDE target is largest in the middle of the sample box and > floor everywhere
    mid = sol.evaluate(np.array([[0.5, 0.5], [0.02, 0.02]]), what=("target",))["target"]
    assert mid[0] > 3 * mid[1] > 0


@pytest.mark.serial
def test_one_blas_thread_per_rank_under_mpirun(tmp_path):
    """Under `mpirun -n 2` importing beckmann sets one BLAS thread per rank unless the user set
    one; a serial process is left alone."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    # each process writes its own file: two ranks' stdout may interleave ("11")
    code = ("import beckmann, os, sys; open(os.path.join(sys.argv[1], str(os.getpid())), 'w')"
            ".write(str(os.environ.get('OPENBLAS_NUM_THREADS')))")
    env = {k: v for k, v in os.environ.items() if not k.endswith("NUM_THREADS")}

    def threads(ranks: int, **extra: str) -> list[str]:
        out = tmp_path / f"{ranks}-{len(extra)}"
        out.mkdir()
        cmd = [sys.executable, "-c", code, str(out)]
        if ranks > 1:
            cmd = [str(Path(sys.executable).parent / "mpirun"), "-n", str(ranks), *cmd]
        subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True,
                       env={**env, **extra})  # fmt: skip
        return sorted(f.read_text() for f in out.iterdir())

    assert threads(2) == ["1", "1"]
    assert threads(2, OPENBLAS_NUM_THREADS="2") == ["2", "2"]
    assert threads(1) == ["None"]
