"""The certified reduced basis of a sweep (docs/reduced.md): λ₁,h, exactness, the bound.

The references are independent: the exact Neumann eigenvalue π² of the unit square, affine
families (exactly spanned by their terms), and full solves at θ off the grid by the sweep
engine's own full path (densities, quadrature right-hand side, MUMPS). Runs serially and under
``mpirun -n 2``.
"""

from __future__ import annotations

import numpy as np
import pytest

from beckmann import config, sweep
from beckmann._dolfinx import MPI, dolfinx, fem, ufl
from beckmann.sweep.eigen import first_neumann_eigenvalue
from beckmann.sweep.engine import Engine
from beckmann.sweep.offline import build_reduced
from beckmann.sweep.reduced import ReducedModel, mass_diagonal_constant

AFFINE = "3 + a*cos(pi*x) + b*cos(pi*y)*cos(2*pi*x)"
BUMP = "0.2 + exp(-((x - a)**2 + (y - b)**2) / 0.02)"


def cfg_of(expr: str, params: dict, *, n: int = 12, degree: int = 1, **opts) -> dict:
    layer = {
        "mesh": {"kind": "unit_square", "n": n},
        "solver": {"degree": degree, "method": "mumps", "rtol": 1e-12},
        "target": {"kind": "expression", "expr": expr},
        "sweep": {"parameters": params, **opts},
    }
    return config.merge(config.default_config(), layer, extra_sections=("sweep",))


def energy(eng: Engine, e: np.ndarray) -> float:
    """‖∇e‖_{L²} = sqrt(eᵀ A e) of owned values."""
    eng.phi.x.array[: eng.nloc] = e
    eng.phi.x.scatter_forward()
    eng.poisson.A.mult(eng.phi.x.petsc_vec, eng.Aphi)
    return float(np.sqrt(eng.comm.allreduce(float(e @ eng.Aphi.array[: eng.nloc]), MPI.SUM)))


def full_solve(eng: Engine, theta: dict, rhs: str | None = None) -> np.ndarray:
    """The full discrete solution at θ of the truth ``rhs`` (no reduced quantity).

    ``"quadrature"``: the sweep's full path (densities, quadrature right-hand side).
    ``"interpolant"`` (the default of ``[sweep] reduced_rhs``): ``A φ = M I_h f / ∫ I_h f − M 1``
    with the mass matrix assembled here by UFL and the uniform source ``p0 = 1`` of the unit
    square (``∫ p0 w = (M 1)_i`` exactly).
    """
    rhs = rhs or eng.cfg["sweep"]["reduced_rhs"]
    if rhs == "quadrature":
        d1 = eng.density("target", theta, "θ")
        d0 = eng.density("source", theta, "θ")
        (phi,), _ = eng.solve_rhs([eng.rhs(d0, d1)])
        return phi
    assert eng.cfg["source"]["kind"] == "uniform" and eng.cfg["mesh"]["kind"] == "unit_square"
    u, w = ufl.TrialFunction(eng.V), ufl.TestFunction(eng.V)
    M = dolfinx.fem.petsc.assemble_matrix(fem.form(u * w * ufl.dx))
    M.assemble()

    def mult(v: np.ndarray) -> np.ndarray:
        eng.phi.x.array[: eng.nloc] = v
        eng.phi.x.scatter_forward()
        M.mult(eng.phi.x.petsc_vec, eng.Aphi)
        return eng.Aphi.array[: eng.nloc].copy()

    Mf, m = mult(eng.raw("target", theta)), mult(np.ones(eng.nloc))
    M.destroy()
    b = Mf / eng.comm.allreduce(float(Mf.sum()), MPI.SUM) - m
    (phi,), _ = eng.solve_rhs([b])
    return phi


def random_thetas(grid, k: int, seed: int) -> list[dict]:
    lo, hi = (np.asarray(a) for a in grid.box())
    u = np.random.default_rng(seed).random((k, lo.size))
    return [dict(zip(grid.names, map(float, lo + r * (hi - lo)), strict=True)) for r in u]


# ------------------------------------------------------------------------------ λ₁,h
@pytest.mark.parametrize("degree, rate", [(1, 2.0), (2, 4.0)])
def test_first_eigenvalue_converges_to_pi_squared_from_above(comm, degree, rate):
    """Conforming P_k: λ₁,h ≥ λ₁ = π² (min-max), with error O(h^{2k})."""
    errs = []
    for n in (4, 8, 16):
        msh = dolfinx.mesh.create_unit_square(comm, n, n)
        V = fem.functionspace(msh, ("Lagrange", degree))
        u, w = ufl.TrialFunction(V), ufl.TestFunction(V)
        a = fem.form(ufl.inner(ufl.grad(u), ufl.grad(w)) * ufl.dx)
        A = dolfinx.fem.petsc.assemble_matrix(a)
        A.assemble()
        M = dolfinx.fem.petsc.assemble_matrix(fem.form(u * w * ufl.dx))
        M.assemble()
        lam = first_neumann_eigenvalue(A, M, comm)
        A.destroy()
        M.destroy()
        assert lam > np.pi**2
        errs.append(lam - np.pi**2)
    slopes = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert errs[0] > errs[1] > errs[2]
    assert slopes[-1] == pytest.approx(rate, abs=0.25)


def test_mass_diagonal_constant(comm):
    """μ = 1/2 for P1 triangles (D_K⁻¹M_K = (I + 11ᵀ)/2); for P2, M − μ diag(M) is PSD and
    singular on a one-cell mesh (μ is the sharp constant)."""
    msh = dolfinx.mesh.create_unit_square(MPI.COMM_SELF, 1, 1)
    V1 = fem.functionspace(msh, ("Lagrange", 1))
    assert mass_diagonal_constant(V1) == pytest.approx(0.5)
    assert mass_diagonal_constant(V1, upper=True) == pytest.approx(2.0)
    V2 = fem.functionspace(msh, ("Lagrange", 2))
    mu = mass_diagonal_constant(V2)
    nu = mass_diagonal_constant(V2, upper=True)
    u, w = ufl.TrialFunction(V2), ufl.TestFunction(V2)
    M = dolfinx.fem.petsc.assemble_matrix(fem.form(u * w * ufl.dx))
    M.assemble()
    Md = M.convert("dense").getDenseArray().copy()
    M.destroy()
    ev = np.linalg.eigvalsh(Md - mu * np.diag(np.diag(Md)))
    assert 0 < mu < 1 and ev.min() > -1e-14 and abs(ev.min()) < 1e-12
    ev = np.linalg.eigvalsh(nu * np.diag(np.diag(Md)) - Md)
    assert nu > 1 and ev.min() > -1e-14 and abs(ev.min()) < 1e-12


# ------------------------------------------------------------------------- affine family
def test_affine_family_is_exact_at_its_number_of_terms(comm):
    """p1 = 3 + a g1 + b g2 spans three functions: the bound falls with M and reaches
    round-off at M = 3, where φ_M equals the full solve."""
    cfg = cfg_of(AFFINE, {"a": {"linspace": [0, 1, 4]}, "b": {"linspace": [0, 1, 4]}})
    spec = sweep.parse_sweep(cfg)
    eng = Engine(cfg, spec.grid, comm, block=1)
    thetas = random_thetas(spec.grid, 4, seed=3)
    worst = []
    try:
        for size in (1, 2, 3):
            model, res = build_reduced(eng, spec.grid.values, spec.grid.names, tol=1e-12,
                                       max_size=size)
            assert model.size == size
            bounds = []
            for th in thetas:
                d = model.coefficients(th)
                cert = model.certify(th, d)
                err = energy(eng, full_solve(eng, th) - model.potential(d))
                assert cert["error_bound"] >= err
                bounds.append(cert["error_bound"] / cert["phi_norm"])
            worst.append(max(bounds))
            model.destroy()
        assert worst[0] > worst[1] > 1e-3 and worst[2] < 1e-11
        model, res = build_reduced(eng, spec.grid.values, spec.grid.names, tol=1e-8, max_size=10)
        assert model.size == 3 and res.stop in ("tol", "exact")
        model.destroy()
    finally:
        eng.destroy()


# --------------------------------------------------------------------- moving bump family
@pytest.mark.parametrize("degree, rhs", [(1, "interpolant"), (2, "interpolant"),
                                         (1, "quadrature"), (2, "quadrature")])
def test_bound_bounds_true_error_of_moving_bump(comm, degree, rhs):
    """Non-affine: a bump moving in x and y. At random θ off the grid the certified bound is
    above the true error against a full solve of the same truth (``reduced_rhs``), and so is
    the cost bound; the bound falls below the tolerance on the training grid; the blocked
    certificate equals the one-θ one."""
    cfg = cfg_of(BUMP, {"a": {"linspace": [0.3, 0.7, 7]}, "b": {"linspace": [0.3, 0.7, 7]}},
                 n=10, degree=degree, reduced_rhs=rhs)
    spec = sweep.parse_sweep(cfg)
    eng = Engine(cfg, spec.grid, comm, block=1)
    try:
        model, res = build_reduced(eng, spec.grid.values, spec.grid.names, tol=5e-2,
                                   max_size=45)
        assert res.stop == "tol" and res.history[-1] <= 5e-2
        assert res.history[-1] < res.history[len(res.history) // 2]
        thetas = random_thetas(spec.grid, 6, seed=7)
        vals = np.array([[t["a"], t["b"]] for t in thetas])
        many = model.certify_many(vals, block=4)
        cheap = model.certify_many(vals, block=4, exact_above=np.inf)  # diagonal bound only
        if comm.size == 1 and rhs == "interpolant":  # threads (serial only): the same bounds
            for above in (0.0, np.inf):
                bounds = []
                for threads in ("1", "2"):
                    with pytest.MonkeyPatch.context() as mp:
                        mp.setenv("BECKMANN_THREADS", threads)
                        bounds.append(model.certify_many(vals, block=4, exact_above=above))
                default = many if above == 0.0 else cheap
                assert np.array_equal(bounds[0]["error_bound"], bounds[1]["error_bound"])
                assert np.array_equal(bounds[0]["error_bound"], default["error_bound"])
        for i, th in enumerate(thetas):
            d = model.coefficients(th)
            cert = model.certify(th, d)
            assert many["error_bound"][i] == pytest.approx(cert["error_bound"], rel=1e-10)
            assert cheap["error_bound"][i] >= cert["error_bound"] * (1 - 1e-12)
            phi = full_solve(eng, th)
            err = energy(eng, phi - model.potential(d))
            assert 0 < err <= cert["error_bound"], th
            assert cert["error_bound"] <= 20 * err  # effectivity: bound, not a blanket
            J = 0.5 * energy(eng, phi) ** 2
            assert abs(J - cert["cost"]) <= cert["cost_bound"]
            assert err / energy(eng, phi) <= cert["relative_bound"]
        model.destroy()
    finally:
        eng.destroy()


# ----------------------------------------------------------------------- store and probe
def test_reduced_store_probe_reload_and_box(mpi_tmp_path, comm):
    """`method = "reduced"` writes the basis, not a field per θ; probe at θ off the grid gives
    the same field from the store on every rank count (here also on one rank alone) and
    refuses θ outside the box unless asked to extrapolate."""
    cfg = cfg_of(BUMP, {"a": {"linspace": [0.3, 0.7, 5]}, "b": {"linspace": [0.3, 0.7, 5]}},
                 n=8, method="reduced", reduced_tol=5e-2, reduced_max=30)
    summary = sweep.run_sweep(cfg, comm, out=mpi_tmp_path / "s")
    red = summary["reduced"]
    assert summary["method"] == "reduced" and red["size"] <= 30
    assert red["certified"] == len([r for r in summary["rows"]
                                    if r["relative_bound"] is not None
                                    and r["relative_bound"] <= 5e-2])
    assert not (mpi_tmp_path / "s" / "theta").exists() or not any(
        (mpi_tmp_path / "s" / "theta").iterdir())
    store = sweep.SweepStore(mpi_tmp_path / "s", comm)
    pts = np.array([[0.21, 0.37], [0.5, 0.5], [0.93, 0.11]])
    theta = {"a": 0.437, "b": 0.61}
    res = sweep.probe(store, theta, pts)
    assert res["method"] == "reduced" and res["error_bound"] > 0 and res["cost_bound"] > 0
    assert res["truth"] == "interpolant"
    # the same store on one rank alone
    alone = sweep.probe(sweep.SweepStore(mpi_tmp_path / "s", MPI.COMM_SELF), theta, pts)
    np.testing.assert_allclose(alone["potential"], res["potential"], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(alone["flux"], res["flux"], rtol=1e-10, atol=1e-14)
    assert alone["error_bound"] == pytest.approx(res["error_bound"], rel=1e-8)
    # a full solve at θ (on one rank: the stored mesh and the engine's number their dofs
    # differently, matched by coordinates): the bound holds for the stored model too
    from scipy.spatial import cKDTree
    eng = Engine(cfg, store.grid, MPI.COMM_SELF, block=1)
    model, _ = ReducedModel.load(sweep.SweepStore(mpi_tmp_path / "s", MPI.COMM_SELF))
    _, perm = cKDTree(model.V.tabulate_dof_coordinates()).query(eng.x)
    phi_m = model.potential(model.coefficients(theta))[perm]
    err = energy(eng, full_solve(eng, theta) - phi_m)
    assert 0 < err <= res["error_bound"]
    model.destroy()
    eng.destroy()
    # the continuity report of a reduced store comes from its coefficients
    rep = sweep.continuity_report(store, comm)
    assert rep["energy"]["lipschitz"] == pytest.approx(
        summary["continuity"]["energy"]["lipschitz"], rel=1e-12)
    assert rep["pairs"] == 25 * 24 // 2
    with pytest.raises(ValueError, match="outside the parameter box"):
        sweep.probe(store, {"a": 0.8, "b": 0.5}, pts)
    ext = sweep.probe(store, {"a": 0.75, "b": 0.5}, pts, extrapolate=True)
    assert ext["extrapolated"] and ext["error_bound"] > res["error_bound"]


# ------------------------------------------------------------ downstream: sample and fit
def test_reduced_store_downstream_sample_and_fit(mpi_tmp_path, comm):
    """`sample` and `fit` accept a reduced store: every grid θ is a member whose potential is
    the reduced one at θ (as probe gives it), and `sample --param` takes any θ in the box
    (outside: one error line unless --extrapolate), serially and under mpirun -n 2."""
    from conftest import run_cli

    from beckmann.requ.data import members

    cfg = cfg_of(BUMP, {"a": {"linspace": [0.3, 0.7, 3]}, "b": {"linspace": [0.3, 0.7, 3]}},
                 n=8, method="reduced", reduced_tol=5e-2, reduced_max=20)
    folder = mpi_tmp_path / "s"
    sweep.run_sweep(cfg, comm, out=folder)
    store = sweep.SweepStore(folder, comm)
    assert store.completed() == list(range(9))
    names, mem = members(folder, comm)
    assert names == ["a", "b"] and len(mem) == 9
    pts = np.array([[0.21, 0.37], [0.5, 0.5], [0.93, 0.11]])
    i = 5
    theta = store.grid.theta(i)
    sol = mem[i][1]()
    ref = sweep.probe(store, theta, pts)
    got = sol.evaluate(pts)
    np.testing.assert_allclose(got["potential"], ref["potential"], rtol=1e-12, atol=1e-15)
    assert float(np.abs(got["potential"]).max()) > 1e-3  # not a zero field
    if comm.size == 1:  # the command line, launched on 1 and 2 ranks, off the grid
        outs = []
        for ranks in (1, 2):
            out = mpi_tmp_path / f"x{ranks}.npy"
            run_cli("sample", str(folder), "--param", "a=0.437", "--param", "b=0.61",
                    "--n", "40", "--steps", "8", "--out", str(out), ranks=ranks, timeout=120)
            outs.append(np.load(out))
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-8, atol=1e-10)
        bad = run_cli("sample", str(folder), "--param", "a=0.8", "--param", "b=0.5", "--n",
                      "10", "--out", str(mpi_tmp_path / "y.npy"), ranks=2, check=False,
                      timeout=120)
        assert bad.returncode == 2
        lines = [ln for ln in bad.stderr.splitlines() if ln.startswith("beckmann: error:")]
        assert len(lines) == 1 and "outside the parameter box" in lines[0]


def test_grid_theta_missed_by_the_training_set_joins_it(mpi_tmp_path, comm):
    """With a training set far smaller than the grid, grid θ it missed are added and the
    greedy runs again: every grid θ ends certified (the bound recomputed, not assumed)."""
    cfg = cfg_of(BUMP, {"a": {"linspace": [0.3, 0.7, 6]}, "b": {"linspace": [0.3, 0.7, 6]}},
                 n=12, method="reduced", reduced_tol=5e-2, reduced_max=36, reduced_train=4)
    red = sweep.run_sweep(cfg, comm, out=mpi_tmp_path / "s")["reduced"]
    assert red["stop"] == "tol" and red["rounds"] >= 2 and red["training"] > 8
    assert red["certified"] == 36 and red["max_relative_bound"] <= 5e-2


@pytest.mark.parametrize("tol", [2e-1, 5e-3])
def test_coarse_training_set_is_validated_on_the_reduced_train_set(mpi_tmp_path, comm, tol):
    """A grid larger than reduced_train: the greedy trains on the coarse sub-grid (0.36 of it)
    and is checked on the reduced_train one; a loose tolerance passes there, a tight one that
    the coarse set misses retrains on the whole set. Either way every grid θ ends certified."""
    from beckmann.sweep.reduced_run import COARSE_FRACTION
    from beckmann.sweep.training import training_set

    params = {"a": {"linspace": [0.3, 0.7, 12]}, "b": {"linspace": [0.3, 0.7, 12]}}
    cfg = cfg_of(BUMP, params, n=12, method="reduced", reduced_tol=tol, reduced_max=80,
                 reduced_train=36)
    grid = sweep.parse_sweep(cfg).grid
    coarse = training_set(grid, round(36 * COARSE_FRACTION)).shape[0]
    red = sweep.run_sweep(cfg, comm, out=mpi_tmp_path / "s")["reduced"]
    assert red["validation"] == 36 and coarse < 36
    first = 36 if red["retrained"] else coarse  # then grid θ missed on it join (rounds)
    assert red["training"] == first if red["rounds"] == 1 else red["training"] > first
    assert red["stop"] == "tol" and red["certified"] == 144
    assert red["max_relative_bound"] <= tol
    if tol == 5e-3:
        assert red["retrained"]  # 13 coarse θ do not carry a basis this fine here


def test_training_set_of_a_large_product_grid_is_a_subgrid_with_its_edges():
    """A 100 x 100 grid trains on a 20 x 20 sub-grid of grid θ, both ends of each axis in it;
    a 300 x 3 grid keeps both ends of
    each axis."""
    from beckmann.sweep.training import training_set

    def grid(*axes):
        params = {n: {"linspace": [0.3, 0.7, k]} for n, k in zip("ab", axes, strict=False)}
        return sweep.parse_sweep(cfg_of(BUMP, params)).grid

    g = grid(100, 100)
    t = training_set(g, 400)
    assert t.shape == (400, 2)
    assert {tuple(r) for r in t} <= {tuple(r) for r in g.values}
    for j in range(2):
        vals = np.unique(t[:, j])
        assert vals.size == 20 and vals[0] == 0.3 and vals[-1] == 0.7
        assert np.ptp(np.diff(vals)) < 0.25 * np.diff(vals).mean()
    t = training_set(grid(300, 3), 400)
    assert 300 <= t.shape[0] <= 400
    assert {0.3, 0.7} <= set(t[:, 1]) and {0.3, 0.7} <= set(t[:, 0])


@pytest.mark.parametrize(
    ("expr", "params", "floor"),
    [(BUMP, {}, 0.0), ("c*sin(a*x) + b**2*exp(-y) + 2", {"c": 0.5}, 0.25), ("a", {}, 0.0),
     ("-(+(x*y - a)) / (1 + exp(-x)) + max(b, x, 0.5) - atan2(y, b)", {}, 0.0)],
)
def test_block_evaluation_is_bitwise_the_per_theta_one(expr, params, floor):
    """Many θ at once (``parametric.bind_block``, ``ReducedModel._block_evaluator``) give, row
    by row, exactly the evaluator's per-θ values: the certificate's truth does not move."""
    from beckmann import density
    from beckmann.density.parametric import bind, bind_block

    rng = np.random.default_rng(3)
    x = np.vstack([rng.random((2, 257)), np.zeros((1, 257))])
    T = rng.random((7, 2)) * 0.6 + 0.2
    e = density.Expression(expr)
    one, many = bind(e, x, ["a", "b"], params), bind_block(e, x, ["a", "b"], params)
    ev = density.make_evaluator({"kind": "expression", "expr": expr, "params": params,
                                 "floor": floor}, gdim=2, bbox=(np.zeros(2), np.ones(2)))
    block = many(T)
    assert block.shape == (7, 257)
    assert np.array_equal(many(T[::-1]), block[::-1])  # in place: no cached array overwritten
    for k, (a, b) in enumerate(T):
        assert np.array_equal(block[k], one({"a": a, "b": b}))
        assert np.array_equal(block[k] + floor, ev(x, {"a": a, "b": b}))


@pytest.mark.serial
def test_online_threads_follow_the_environment_then_the_cores(monkeypatch):
    """``BECKMANN_THREADS``, else ``OMP_NUM_THREADS``, else the usable cores; never above them."""
    import os

    from beckmann.sweep.reduced import online_threads

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("BECKMANN_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert online_threads() == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert online_threads() == 1
    monkeypatch.setenv("BECKMANN_THREADS", str(cores + 5))
    assert online_threads() == cores
    monkeypatch.setenv("BECKMANN_THREADS", "0")
    assert online_threads() == 1
    monkeypatch.setenv("BECKMANN_THREADS", "many")
    assert online_threads() == 1
