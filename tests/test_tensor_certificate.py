"""The reduced certificate of a separated target on a tensor grid of nodes (docs/reduced.md).

References: the nodal certificate (``ν Σ D r² / Z²`` from the target at every node, the
diagonal bound the separated one must reproduce from above), the exact product ``rᵀMr``, full
solves at θ off the grid, the expression at every node, and SLEPc's ``λ₁,h``. Serially and
under ``mpirun -n 2``.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_reduced import BUMP, cfg_of, energy, full_solve, random_thetas

from beckmann import sweep
from beckmann._dolfinx import MPI, dolfinx, fem
from beckmann.sweep.eigen import exact_neumann_eigenvalue, first_neumann_eigenvalue
from beckmann.sweep.engine import Engine
from beckmann.sweep.offline import build_reduced
from beckmann.sweep.tensor import TensorGrid, separated_target

GRID = {"a": {"linspace": [0.3, 0.7, 6]}, "b": {"linspace": [0.3, 0.7, 6]}}


def _model(comm, expr: str, *, n: int = 12, degree: int = 1, tol: float = 5e-2, **target):
    cfg = cfg_of(expr, GRID, n=n, degree=degree)
    cfg["target"].update(target)
    spec = sweep.parse_sweep(cfg)
    eng = Engine(cfg, spec.grid, comm, block=1)
    model, _ = build_reduced(eng, spec.grid.values, spec.grid.names, tol=tol, max_size=30)
    return spec, eng, model


def _nodal_diagonal(model, vals, D) -> np.ndarray:
    """ν Σ D r² / Z² from the nodal targets (the certificate without the separated form)."""
    rr = np.zeros(vals.shape[0])
    norm = np.ones(vals.shape[0])
    model._certify_nodal(vals, D, norm, np.zeros(vals.shape[0]), rr, 4, np.inf, None)
    return rr


@pytest.mark.parametrize(
    ("expr", "degree", "target"),
    [(BUMP, 1, {}), (BUMP, 2, {}), ("(1 + a)*cos(pi*x)*cos(pi*y) + b*sin(pi*x + y) + 3", 1, {}),
     ("c + exp(-((x - a)**2 + (y - b)**2) / 0.05)", 1, {"params": {"c": 0.1}, "floor": 0.3})],
)
def test_separated_bound_is_the_nodal_diagonal_bound_from_above(comm, expr, degree, target):
    """At random θ and coefficients the separated residual bound is ≥ the nodal diagonal bound
    and above it by its rounding charge only (≤ 1e-3 relative, or round-off where the affine
    family is exact), and ≥ the exact rᵀMr."""
    spec, eng, model = _model(comm, expr, degree=degree, **target)
    try:
        tc = model._tensor_certificate()
        assert tc is not None
        vals = np.array([[t["a"], t["b"]] for t in random_thetas(spec.grid, 9, seed=5)])
        D = model.certify_many(vals, exact_above=np.inf)["coefficients"]
        rng = np.random.default_rng(1)
        for coeffs in (D, D * (1 + 0.1 * rng.standard_normal(D.shape))):
            ref = _nodal_diagonal(model, vals, coeffs)
            got = tc.residual_bounds(vals, coeffs)
            assert np.all(got >= ref) and np.all(got <= ref * (1 + 1e-3) + 1e-10), got - ref
        exact = model.certify_many(vals, D)["residual"] ** 2  # rᵀMr (exact product)
        assert np.all(tc.residual_bounds(vals, D) >= exact)
    finally:
        model.destroy()
        eng.destroy()


def test_separated_certificate_bounds_true_errors_off_the_grid(comm):
    """As the sweep certifies (``exact_above = reduced_tol``): bound ≥ true error at θ off the
    grid, against full solves of the interpolant truth."""
    spec, eng, model = _model(comm, BUMP, n=10)
    try:
        assert model._tensor_certificate() is not None
        thetas = random_thetas(spec.grid, 5, seed=9)
        vals = np.array([[t["a"], t["b"]] for t in thetas])
        out = model.certify_many(vals, exact_above=5e-2)
        for i, th in enumerate(thetas):
            phi = full_solve(eng, th)
            err = energy(eng, phi - model.potential(out["coefficients"][i]))
            assert 0 < err <= out["error_bound"][i]
            assert err / energy(eng, phi) <= out["relative_bound"][i]
    finally:
        model.destroy()
        eng.destroy()


def test_non_separated_target_falls_back_to_the_nodal_certificate(comm):
    """exp(x y) does not separate: no separated certificate, and the bounds are the nodal ones."""
    spec, eng, model = _model(comm, "1 + a*exp(x*y) + b*x", tol=1e-1)
    try:
        assert model._tensor_certificate() is None
        vals = np.array([[t["a"], t["b"]] for t in random_thetas(spec.grid, 4, seed=2)])
        D = model.certify_many(vals, exact_above=np.inf)["coefficients"]
        cheap = model.certify_many(vals, D, exact_above=np.inf)["residual"] ** 2
        assert np.allclose(cheap, _nodal_diagonal(model, vals, D), rtol=1e-12)
    finally:
        model.destroy()
        eng.destroy()


@pytest.mark.parametrize("degree", [1, 2])
def test_grid_detection_and_nodal_values(comm, degree):
    """The dofs of a unit square lie on a (k n + 1)² grid, found on every rank; the separated
    snapshots equal the expression at the nodes; scattered points and a disk are no grid."""
    n = 8
    msh = dolfinx.mesh.create_unit_square(comm, n, n)
    V = fem.functionspace(msh, ("Lagrange", degree))
    nloc = V.dofmap.index_map.size_local
    x = V.tabulate_dof_coordinates()[:nloc]
    grid = TensorGrid.detect(x, comm)
    assert grid is not None
    assert grid.X.size == grid.Y.size == degree * n + 1
    assert np.allclose(grid.X[grid.i0 + grid.ix], x[:, 0], atol=1e-14)
    assert np.allclose(grid.Y[grid.j0 + grid.iy], x[:, 1], atol=1e-14)
    sec = {"kind": "expression", "expr": BUMP, "params": {}}
    sep, grid2 = separated_target(sec, ["a", "b"], x, comm)
    T = np.array([[0.35, 0.6], [0.5, 0.45]])
    F = grid2.nodal(sep, T, floor=0.25)
    for k, (a, b) in enumerate(T):
        ref = 0.25 + 0.2 + np.exp(-((x[:, 0] - a) ** 2 + (x[:, 1] - b) ** 2) / 0.02)
        assert np.allclose(F[k], ref, rtol=1e-14, atol=1e-14)
    moved = x.copy()
    moved[:, 0] += 1e-3 * np.sin(7 * x[:, 1])  # a smooth distortion: not a grid any more
    assert TensorGrid.detect(moved, comm) is None
    rng = np.random.default_rng(comm.rank)
    assert TensorGrid.detect(np.column_stack([rng.random((40, 2)), np.zeros(40)]), comm) is None
    assert TensorGrid.detect(np.column_stack([x[:, :2], 0.5 + x[:, :1]]), comm) is None  # 3D


def test_exact_first_eigenvalue_bounds_the_discrete_one(comm):
    """π² on the unit square (and cube) lies below SLEPc's λ₁,h; other domains get none, and
    the reduced model of a unit-square sweep uses π²."""
    assert exact_neumann_eigenvalue({"kind": "unit_square", "n": 4}) == np.pi**2
    assert exact_neumann_eigenvalue({"kind": "unit_cube", "n": 4}) == np.pi**2
    for kind in ("disk", "lshape", "file"):
        assert exact_neumann_eigenvalue({"kind": kind}) is None
    spec, eng, model = _model(comm, BUMP, n=6, tol=2e-1)
    try:
        lam_h = first_neumann_eigenvalue(eng.poisson.A, model.mass.M, comm)
        assert model.lam1 == np.pi**2 < lam_h
    finally:
        model.destroy()
        eng.destroy()


@pytest.mark.serial
def test_sweep_rows_are_bounded_by_the_nodal_certificates(tmp_path):
    """The bounds ``beckmann sweep`` stores per grid θ (the separated certificate) lie between
    the exact-product bound and the nodal diagonal bound (plus its rounding charge) of the
    stored basis, reloaded; every grid θ is certified."""
    import json

    from conftest import run_cli

    from beckmann.sweep.reduced import ReducedModel

    cfg = tmp_path / "bump.toml"
    cfg.write_text(f"""
[mesh]
n = 12
[solver]
degree = 1
[target]
kind = "expression"
expr = "{BUMP}"
[sweep.parameters]
a = {{ linspace = [0.3, 0.7, 7] }}
b = {{ linspace = [0.3, 0.7, 7] }}
[sweep]
method = "reduced"
reduced_tol = 5e-2
""")
    run_cli("sweep", str(cfg), "--out", str(tmp_path / "out"), "-q")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["reduced"]["certified"] == 49
    rows = summary["rows"]
    vals = np.array([[r["theta"]["a"], r["theta"]["b"]] for r in rows])
    stored = np.array([r["error_bound"] for r in rows])
    model, _ = ReducedModel.load(sweep.SweepStore(tmp_path / "out", MPI.COMM_WORLD))
    try:
        exact = model.certify_many(vals)  # the exact product rᵀMr for every θ
        diag = model.certify_many(vals, exact["coefficients"], exact_above=np.inf)
        assert model._tensor_certificate() is not None
        nodal = _nodal_diagonal(model, vals, exact["coefficients"])
        eta_nodal = np.sqrt(nodal / model.lam1) + np.abs(exact["coefficients"]) @ model.eta_alg
        assert np.all(stored >= exact["error_bound"] * (1 - 1e-12))
        assert np.all(stored <= eta_nodal * (1 + 1e-3) + 1e-6)
        assert np.array_equal(diag["error_bound"] >= eta_nodal * (1 - 1e-12), np.ones(49, bool))
    finally:
        model.destroy()


def test_separated_snapshots_are_the_engines_raw_target(comm):
    """The greedy's snapshots from the factors equal the target the full path evaluates at the
    nodes (fixed parameters and the floor included), to round-off."""
    cfg = cfg_of("c + exp(-((x - a)**2 + (y - b)**2) / 0.05)", GRID, n=9)
    cfg["target"].update({"params": {"c": 0.1}, "floor": 0.3})
    spec = sweep.parse_sweep(cfg)
    eng = Engine(cfg, spec.grid, comm, block=1)
    try:
        sep, grid = separated_target(eng.cfg["target"], spec.grid.names, eng.x, comm)
        vals = np.asarray(spec.grid.values, dtype=np.float64)
        F = grid.nodal(sep, vals, float(eng.cfg["target"]["floor"]))
        for k, t in enumerate(vals):
            ref = eng.raw("target", dict(zip(spec.grid.names, map(float, t), strict=True)))
            assert np.allclose(F[k], ref, rtol=1e-14, atol=1e-14)
    finally:
        eng.destroy()
