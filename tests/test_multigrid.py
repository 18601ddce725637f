"""Geometric multigrid (beckmann.multigrid, solver.method = "gmg" / "auto").

The prolongations are checked against DOLFINx's own interpolation between the nested meshes,
the solve against the exact φ = cos(πx) cos(πy) / (4π²) and against GAMG's and MUMPS's φ, on
any number of ranks (the suite runs serially and under mpirun -n 2).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from beckmann import config, multigrid, pipeline
from beckmann._dolfinx import MPI, dmesh, fem, ufl
from beckmann.poisson import NeumannPoisson

EXPR2 = "1 + 0.5*cos(pi*x)*cos(pi*y)"


def square(n: int, diagonal=dmesh.DiagonalType.right):
    return dmesh.create_unit_square(MPI.COMM_WORLD, n, n, dmesh.CellType.triangle,
                                    ghost_mode=dmesh.GhostMode.shared_facet,
                                    diagonal=diagonal)  # fmt: skip


def test_the_grid_is_recognised_and_nothing_else():
    V = fem.functionspace(square(12), ("Lagrange", 1))
    assert multigrid.grid_cells_per_side(V) == 12
    assert multigrid.grid_cells_per_side(fem.functionspace(square(12), ("Lagrange", 2))) is None
    left = square(12, dmesh.DiagonalType.left)  # the coarse triangles are not unions of fine
    assert multigrid.grid_cells_per_side(fem.functionspace(left, ("Lagrange", 1))) is None
    moved = square(12)
    x = moved.geometry.x
    x[:, 0] += 1e-3 * np.sin(7 * x[:, 1]) * x[:, 0] * (1 - x[:, 0])  # same topology, off-grid
    assert multigrid.grid_cells_per_side(fem.functionspace(moved, ("Lagrange", 1))) is None
    cube = dmesh.create_unit_cube(MPI.COMM_WORLD, 4, 4, 4)
    assert multigrid.grid_cells_per_side(fem.functionspace(cube, ("Lagrange", 1))) is None


def test_levels():
    assert multigrid.levels(1024) == [1024, 512, 256, 128, 64, 32, 16]
    assert multigrid.levels(1000) == [1000, 500, 250, 125]
    assert multigrid.levels(96) == [96, 48, 24, 12]
    assert multigrid.levels(1022) == []  # coarsest 511: too large for the direct solve
    assert multigrid.levels(16) == [] and multigrid.levels(33) == []


def test_prolongation_is_dolfinx_interpolation_between_the_nested_meshes():
    # P c = the coarse P1 function with vertex values c, evaluated at the fine vertices
    n = 48
    V = fem.functionspace(square(n), ("Lagrange", 1))
    hierarchy = multigrid.grid_hierarchy(V)
    assert hierarchy is not None and hierarchy.sizes == [48, 24, 12]
    rng = np.random.default_rng(3)
    for level, P in enumerate(hierarchy.prolongations):
        mc, mf = hierarchy.sizes[::-1][level], hierarchy.sizes[::-1][level + 1]
        R = rng.standard_normal((mc + 1, mc + 1))
        Vc = fem.functionspace(square(mc), ("Lagrange", 1))
        uc = fem.Function(Vc)
        uc.interpolate(lambda X, R=R, mc=mc: R[np.rint(X[0] * mc).astype(int),
                                                np.rint(X[1] * mc).astype(int)])  # fmt: skip
        Vf = fem.functionspace(square(mf), ("Lagrange", 1))
        uf = fem.Function(Vf)
        cells = np.arange(Vf.mesh.topology.index_map(2).size_local, dtype=np.int32)
        data = fem.create_interpolation_data(Vf, Vc, cells, 1e-10)
        uf.interpolate_nonmatching(uc, cells, data)
        c, f = P.createVecs()
        ijc = hierarchy.vertices[level]
        c.array[:] = R[ijc[:, 0], ijc[:, 1]]
        P.mult(c, f)
        # both on the whole (mf + 1)^2 grid: each vertex is owned by one rank
        nf = Vf.dofmap.index_map.size_local
        X = np.rint(Vf.tabulate_dof_coordinates()[:nf, :2] * mf).astype(int)
        ours, ref = np.zeros((mf + 1, mf + 1)), np.zeros((mf + 1, mf + 1))
        ijf = hierarchy.vertices[level + 1]
        ours[ijf[:, 0], ijf[:, 1]] = f.array
        ref[X[:, 0], X[:, 1]] = uf.x.array[:nf]
        comm = MPI.COMM_WORLD
        ours, ref = comm.allreduce(ours, op=MPI.SUM), comm.allreduce(ref, op=MPI.SUM)
        assert np.abs(ours - ref).max() < 1e-13
        assert comm.allreduce(len(ijf), op=MPI.SUM) == (mf + 1) ** 2
        for v in (c, f):
            v.destroy()
    hierarchy.destroy()


def exact_cfg(n: int, **extra: str) -> dict:
    sets = [f"mesh.n={n}", "solver.degree=1", "target.kind=expression", f"target.expr={EXPR2}",
            *[f"{k}={v}" for k, v in extra.items()]]  # fmt: skip
    return config.resolve(sets=sets)


def l2_error(sol, grad: bool = False) -> float:
    """``‖φ_h − φ‖`` (or ``‖∇(φ_h − φ)‖``, the flux error) against the exact φ."""
    x = ufl.SpatialCoordinate(sol.msh)
    e = sol.phi - ufl.cos(ufl.pi * x[0]) * ufl.cos(ufl.pi * x[1]) / (4 * ufl.pi**2)
    g = ufl.grad(e) if grad else e
    dx = ufl.dx(metadata={"quadrature_degree": 8})
    return float(np.sqrt(sol.comm.allreduce(fem.assemble_scalar(fem.form(ufl.inner(g, g) * dx)),
                                            op=MPI.SUM)))  # fmt: skip


def test_gmg_is_the_default_and_matches_gamg_mumps_and_the_exact_solution():
    tight = {"solver.rtol": "1e-10"}  # the default rtol ("auto") is tested below
    sols = {m: pipeline.solve(exact_cfg(64, **tight, **({"solver.method": m} if m else {})))
            for m in ("", "gamg", "mumps")}  # fmt: skip
    assert sols[""].info["method"] == "gmg"
    assert sols["gamg"].info["method"] == "gamg"
    assert sols[""].info["iterations"] < sols["gamg"].info["iterations"]
    comm = MPI.COMM_WORLD
    phi = {m: s.phi.x.array for m, s in sols.items()}
    scale = comm.allreduce(np.abs(phi["mumps"]).max(), op=MPI.MAX)
    for m in ("", "gamg"):
        assert comm.allreduce(np.abs(phi[m] - phi["mumps"]).max(), op=MPI.MAX) < 1e-8 * scale
    # the discretisation error, O(h^2): ||e|| / ||phi|| = 4.2e-5 at n = 256 (docs/performance.md)
    err, ref = l2_error(sols[""]), l2_error(sols["mumps"])
    assert err == pytest.approx(ref, rel=1e-6)
    assert err < 0.04 / 64**2


@pytest.mark.parametrize(("n", "degree", "rtol"), [(64, 1, 1e-6), (32, 2, 1e-3 / 32**2),
                                                   (16, 3, 1e-3 / 16**3)])
def test_the_default_tolerance_is_matched_to_the_discretisation_error(n, degree, rtol):
    # solver.rtol = "auto": 1e-3 (h/d)^k, at most 1e-6 (h/d = 1/n on the unit square); the
    # errors to the exact φ, in L² and in the flux (energy) norm, are the tight solve's
    sets = {"solver.degree": str(degree)}
    auto = pipeline.solve(exact_cfg(n, **sets))
    tight = pipeline.solve(exact_cfg(n, **sets, **{"solver.rtol": "1e-10"}))
    assert auto.info["rtol"] == pytest.approx(rtol, rel=1e-12)
    assert tight.info["rtol"] == 1e-10
    assert auto.info["iterations"] < tight.info["iterations"]
    for grad in (False, True):
        assert l2_error(auto, grad) == pytest.approx(l2_error(tight, grad), rel=1e-3)
    # a sweep, whose fields are compared across θ and certified, keeps the tight default
    from beckmann.poisson import TIGHT_RTOL, resolve_rtol

    assert resolve_rtol("auto") == TIGHT_RTOL == 1e-10


def test_the_stencil_matrix_is_dolfinx_assembly():
    # P1 on the right-diagonal square: the 5-point stencil, without the diagonal edges' zeros
    from beckmann._dolfinx import PETSc, dolfinx

    for n in (1, 2, 6, 32):
        V = fem.functionspace(square(n), ("Lagrange", 1))
        u, w = ufl.TrialFunction(V), ufl.TestFunction(V)
        A = dolfinx.fem.petsc.assemble_matrix(fem.form(ufl.inner(ufl.grad(u), ufl.grad(w))
                                                       * ufl.dx))  # fmt: skip
        A.assemble()
        local = np.rint(V.tabulate_dof_coordinates()[:, :2] * n).astype(np.int64)
        S = multigrid.stencil_matrix(V, local, n)
        assert S.getOwnershipRange() == A.getOwnershipRange()
        scale = A.norm(PETSc.NormType.INFINITY)
        A.axpy(-1.0, S, structure=PETSc.Mat.Structure.DIFFERENT_NONZERO_PATTERN)
        assert A.norm(PETSc.NormType.INFINITY) < 1e-13 * scale
        nnz = S.getInfo()["nz_used"]  # summed over the ranks
        assert nnz == 5 * (n + 1) ** 2 - 4 * (n + 1)  # 4 neighbours inside, fewer on the edge
        A.destroy()
        S.destroy()


def test_gmg_asked_for_where_it_cannot_run():
    with pytest.raises(ValueError, match=r"solver\.method = 'gmg' needs the primal"):
        pipeline.solve(exact_cfg(12, **{"solver.method": "gmg"}))
    cube = dmesh.create_unit_cube(MPI.COMM_WORLD, 6, 6, 6)  # 2197 P2 dofs: above DIRECT_BELOW
    P = NeumannPoisson(fem.functionspace(cube, ("Lagrange", 2)))  # no grid: algebraic
    assert P.method == "gamg"
    P.destroy()
    V = fem.functionspace(square(32), ("Lagrange", 1))
    P = NeumannPoisson(V, petsc_options={"pc_gamg_threshold": 0.05})  # AMG's options: AMG
    assert P.method == "gamg"
    P.destroy()


@pytest.mark.serial
@pytest.mark.parametrize("ranks", [1, 2])
def test_the_command_solves_with_gmg_on_any_rank_count(tmp_path, ranks):
    sets = ["--set", "mesh.n=64", "--set", "solver.degree=1", "--set", "target.kind=expression",
            "--set", f"target.expr={EXPR2}"]  # fmt: skip
    run_cli("solve", *sets, "--out", str(tmp_path / "gmg"), ranks=ranks, timeout=120)
    run_cli("solve", *sets, "--set", "solver.method=mumps", "--out", str(tmp_path / "lu"),
            timeout=120)  # fmt: skip
    gmg, lu = (json.loads((tmp_path / k / "summary.json").read_text()) for k in ("gmg", "lu"))
    assert gmg["method"] == "gmg" and gmg["ranks"] == ranks and lu["method"] == "mumps"
    assert gmg["rtol"] == 1e-6  # "auto" at h/d = 1/64 (the test above)
    assert lu["rtol"] is None  # a direct solve has no tolerance
    assert gmg["residual"] < gmg["rtol"]
    assert gmg["beckmann_cost"] == pytest.approx(lu["beckmann_cost"], rel=1e-12)


@pytest.mark.parametrize("degree", [2, 3])
def test_pk_adds_one_level_above_the_p1_grids(degree):
    # P_k: the P1 hierarchy + DOLFINx's P1 -> P_k interpolation; φ as MUMPS's, errors as MUMPS's
    n = 32
    sols = {m: pipeline.solve(exact_cfg(n, **{"solver.degree": str(degree), "solver.method": m}))
            for m in ("auto", "mumps")}  # fmt: skip
    assert sols["auto"].info["method"] == "gmg"
    comm = MPI.COMM_WORLD
    a, b = sols["auto"].phi.x.array, sols["mumps"].phi.x.array
    scale = comm.allreduce(np.abs(b).max(), op=MPI.MAX)
    assert comm.allreduce(np.abs(a - b).max(), op=MPI.MAX) < 1e-8 * scale
    assert l2_error(sols["auto"]) == pytest.approx(l2_error(sols["mumps"]), rel=1e-5)
    V = sols["auto"].phi.function_space
    h = multigrid.grid_hierarchy(V)
    assert h is not None and h.degree == degree and len(h.prolongations) == len(h.sizes)
    h.destroy()
