"""Sweeps of targets polynomial in θ: the decomposition ``f(x; θ) = Σ_k θ^{e_k} f_k(x)``.

The decomposition is checked against the expression itself at random points and θ; the sweep's
affine path (θ-independent fields once, one solve per term) against independent solves.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import BUMP, run_cli
from test_sweep import rel, single, sweep_cfg

from beckmann import sweep
from beckmann.density import Expression
from beckmann.density.parametric import bind, polynomial
from beckmann.sweep.engine import choose_method


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
    form = polynomial(expr, ["theta", "b"] if "b" in text else ["theta"], {"a": 0.7})
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
    assert polynomial(Expression(text), ["theta"]) is None


@pytest.mark.parametrize(
    "text",
    ["0.2 + exp(-((x - theta)**2 + (y - 0.5)**2) / s)",
     "max(theta*x, sin(y), 0.1) + atan2(y, theta)",
     "-theta + x**theta - +cos(theta*pi*y)/(1 + x*y)"],
)
def test_bound_expression_equals_evaluate_bitwise(text):
    """θ-free sub-trees evaluated once: the same operations, so the same bits."""
    x = np.random.default_rng(1).random((3, 400))
    expr = Expression(text)
    values = bind(expr, x, ["theta"], {"s": 0.05})
    assert values is not None
    for theta in (0.0, 0.37, 1.5):
        want = expr.evaluate(x, {"theta": theta, "s": 0.05})
        assert np.array_equal(values({"theta": theta}), want)
    assert bind(expr, x, ["theta"], {"s": 0.05}, max_bytes=1000) is None  # over the budget
    assert bind(Expression("a*theta + x"), x, ["theta"]) is None  # 'a' has no value


def test_free_parameter_without_value_is_not_polynomial():
    assert polynomial(Expression("a*theta"), ["theta"]) is None


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


# ------------------------------------------------------------------ the solver method
def test_mumps_and_gamg_sweeps_agree(mpi_tmp_path, comm):
    """The same (non-affine) sweep by MUMPS block solves and by warm-started GAMG."""
    params = {"theta": {"linspace": [0.3, 0.7, 6]}}
    stores = {}
    for method in ("mumps", "gamg"):
        cfg = sweep_cfg(params, n=32, degree=1, method=method, group_size=1, block=4,
                        continuity=False)
        summary = sweep.run_sweep(cfg, comm, out=mpi_tmp_path / method)
        assert summary["method"] == method and not summary["affine"]
        stores[method] = sweep.SweepStore(mpi_tmp_path / method, comm)
    sol = single(cfg, stores["gamg"].grid.theta(0), comm)
    V = sol.phi.function_space
    for i in range(6):
        a = stores["mumps"].potential(i, V).x.array
        b = stores["gamg"].potential(i, V).x.array
        assert rel(a, b, comm) < 1e-8


def test_choose_method():
    assert choose_method(263_169, 2, 64) == "mumps"
    assert choose_method(263_169, 2, 3) == "auto"  # the affine path: three solves
    assert choose_method(3_000_000, 2, 64) == "auto"
    assert choose_method(300_000, 3, 64) == "auto"


@pytest.mark.serial  # it runs its own `beckmann` process (under mpirun, PMI would be inherited)
@pytest.mark.parametrize(
    ("target", "given", "method", "affine"),
    [(AFFINE, "", "gmg", True), (BUMP, "", "mumps", False), (BUMP, "gamg", "gamg", False)],
)
def test_cli_picks_the_method_when_not_given(tmp_path, target, given, method, affine):
    cfg = tmp_path / "s.toml"
    cfg.write_text(f"""[mesh]
n = 32
[solver]
degree = 1
{f'method = "{given}"' if given else ''}
[target]
kind = "expression"
expr = "{target}"
[sweep.parameters]
theta = {{ linspace = [0.3, 0.7, 16] }}
[sweep]
continuity = false
""")
    run_cli("sweep", str(cfg), "--out", str(tmp_path / "s"), "-q")
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["method"] == method and summary["affine"] is affine
    assert summary["method_chosen"] == ("config" if given else "auto")


def test_continuity_from_memory_equals_the_store_pass(mpi_tmp_path, comm):
    """A fresh sweep streams its report while solving; the store pass gives the same one."""
    cfg = sweep_cfg({"theta": {"linspace": [0.3, 0.7, 7]}}, n=8, degree=1, group_size=0,
                    joint_points=20000)
    summary = sweep.run_sweep(cfg, comm, out=mpi_tmp_path / "s")
    store = sweep.SweepStore(mpi_tmp_path / "s", comm)
    again = sweep.continuity_report(store, comm, joint_points=20000)
    for field in ("phi", "flux", "joint"):
        assert json.dumps(summary["continuity"][field], sort_keys=True) == json.dumps(
            again[field], sort_keys=True
        ), field
