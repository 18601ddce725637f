"""Sweeps of targets polynomial in θ: the decomposition ``f(x; θ) = Σ_k θ^{e_k} f_k(x)``.

The decomposition is checked against the expression itself at random points and θ; the sweep's
affine path (θ-independent fields once, one solve per term) against independent solves.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_sweep import rel, single, sweep_cfg

from beckmann import sweep
from beckmann.density import Expression


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("(1 + theta)*cos(pi*x)*cos(pi*y) + theta*cos(2*pi*x) + 3", 2),
        ("theta**2*x - (a*theta + 1)/(2 + x)", 3),
        ("-(theta - x)*(theta + y)/3 + +theta*b", 4),
        ("x + y", 1),
    ],
)
def test_polynomial_equals_expression(text, terms):
    rng = np.random.default_rng(0)
    x = rng.random((3, 500))
    expr = Expression(text)
    form = expr.polynomial(["theta", "b"] if "b" in text else ["theta"], {"a": 0.7})
    assert form is not None and len(form) == terms
    fields = form.fields(x)
    for theta in rng.normal(size=4) * 2:
        th = {"theta": theta, "b": 0.3 * theta}
        want = expr.evaluate(x, {**th, "a": 0.7})
        got = form.coefficients(th) @ fields
        assert np.abs(got - want).max() <= 1e-13 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize(
    "text", ["exp(theta*x)", "1/theta", "x**theta", "theta**5", "(theta + x)**4 * (1 + theta)**4"]
)
def test_not_polynomial(text):
    assert Expression(text).polynomial(["theta"]) is None


def test_free_parameter_without_value_is_not_polynomial():
    assert Expression("a*theta").polynomial(["theta"]) is None


# ------------------------------------------------------------- the sweep's affine path
AFFINE = "(1 + theta)*cos(pi*x)*cos(pi*y) + theta*cos(2*pi*x) + 3"


@pytest.mark.parametrize(
    ("method", "n", "degree", "source", "floor"),
    [("gamg", 32, 1, None, 0.0), ("mumps", 12, 2, "1 + 0.5*theta*x", 0.25),
     ("gamg", 24, 2, "2 + y", 0.0)],
)
def test_affine_sweep_matches_single_solves(mpi_tmp_path, comm, method, n, degree, source, floor):
    """Every θ of the affine path (no solve per θ) equals an independent ``solve``."""
    cfg = sweep_cfg({"theta": {"linspace": [0.0, 1.0, 4]}}, n=n, degree=degree, method=method,
                    expr=AFFINE, source=source, group_size=1, continuity=False)
    cfg["target"]["floor"] = floor
    summary = sweep.run_sweep(cfg, comm, out=mpi_tmp_path / "s")
    assert summary["affine"] and summary["method"] == method
    store = sweep.SweepStore(mpi_tmp_path / "s", comm)
    rows = {r["index"]: r for r in store.rows()}
    for i in range(4):
        assert rows[i]["iterations"] == 0  # no solve at this θ
        sol = single(cfg, store.grid.theta(i), comm)
        phi = store.potential(i, sol.phi.function_space)
        assert rel(phi.x.array, sol.phi.x.array, comm) < 1e-8, store.grid.label(i)
        assert rows[i]["beckmann_cost"] == pytest.approx(sol.info["beckmann_cost"], rel=1e-8)
        assert rows[i]["mass_target"] == pytest.approx(sol.info["mass_target"], rel=1e-12)
        assert rows[i]["residual"] < 1e-9


def test_affine_sweep_names_a_bad_theta(mpi_tmp_path, comm):
    """The affine path still checks every θ's density (here negative at θ = -1)."""
    cfg = sweep_cfg({"theta": [0.5, -1.0]}, n=6, degree=1, expr="theta + x", group_size=1)
    with pytest.raises(ValueError, match=r"θ #1 \(theta=-1\): target density has minimum -1"):
        sweep.run_sweep(cfg, comm, out=mpi_tmp_path / "s")
