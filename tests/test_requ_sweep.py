"""Networks on sweeps: fits on (x, [t,] θ), θ off the grid, transport driven by a network.

References are independent of the network: an FE solve at a θ that is not on the sweep grid
(``pipeline.solve``), the velocity Jacobian interpolated by dolfinx (:func:`_dolfinx_jacobians`),
finite differences in ``t`` of ``Solution.evaluate``, and FE-driven transport from the same start
samples. API tests run serially and under ``mpirun -n 2``; tests that spawn ``beckmann`` are
serial-only. Trainings are short (a few seconds on one core).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import run_cli, shared_folder

from beckmann import config, pipeline, requ, sweep, transport
from beckmann._dolfinx import MPI

pytest.importorskip("jax")
pytest.importorskip("optax")

TARGET = "0.2 + exp(-((x - theta)**2 + (y - 0.5)**2) / 0.1)"
GRID = [0.35, 0.65, 4]  # 0.35, 0.45, 0.55, 0.65
OFF = 0.5  # a θ not on the grid


def _cfg() -> dict:
    layer = {
        "mesh": {"kind": "unit_square", "n": 8},
        "solver": {"degree": 2, "method": "mumps", "rtol": 1e-12},
        "target": {"kind": "expression", "expr": TARGET, "params": {}},
        "sweep": {"parameters": {"theta": {"linspace": GRID}}, "continuity": False},
    }
    return config.merge(config.default_config(), layer, extra_sections=("sweep",))


def _single(theta: float, comm) -> pipeline.Solution:
    c = copy.deepcopy(_cfg())
    c.pop("sweep")
    c["target"]["params"] = {"theta": theta}
    return pipeline.solve(c, comm)


@pytest.fixture(scope="module")
def folder():
    with shared_folder("beckmann-requ-sweep-") as path:
        yield path


@pytest.fixture(scope="module")
def store(folder):
    sweep.run_sweep(_cfg(), MPI.COMM_WORLD, out=folder / "store", progress=False)
    return folder / "store"


@pytest.fixture(scope="module")
def run_dir(folder):
    c = copy.deepcopy(_cfg())
    c.pop("sweep")
    c["target"]["params"] = {"theta": OFF}
    pipeline.run(c, MPI.COMM_WORLD, out=folder / "run")
    return folder / "run"


def _inputs(x, theta, t=None):
    cols = [x] + ([t[:, None]] if t is not None else []) + [np.full((len(x), 1), theta)]
    return np.hstack(cols)


# ------------------------------------------------------------------------------------- data
def test_training_set_shapes_and_names(store, comm):
    tr = requ.training_set(store, "velocity", 101, 0, comm)
    # 101 points over 4 θ: 26 each
    assert tr["x"].shape == (104, 4) and tr["y"].shape == (104, 2)
    assert tr["jac"].shape == (104, 2, 3) and tr["derivative_inputs"] == [0, 1, 2]
    assert tr["input_names"] == ["x", "y", "t", "theta"]
    assert np.allclose(np.unique(tr["x"][:, 3]), np.linspace(*GRID))
    assert np.all((tr["x"][:, 2] >= 0) & (tr["x"][:, 2] <= 1))
    lo, hi = tr["bounds"]
    assert np.allclose(lo[2:], [0.0, 0.35]) and np.allclose(hi[2:], [1.0, 0.65])
    pot = requ.training_set(store, "potential", 40, 0, comm)
    assert pot["input_names"] == ["x", "y", "theta"] and pot["jac"].shape == (40, 2)


def _dolfinx_jacobians(sol, x, t):
    """D²φ in DG_{k-2} and D_x v_t interpolated by dolfinx into DG_k, at ``x`` (a second method)."""
    from beckmann._dolfinx import fem, ufl
    from beckmann.fields import velocity_expression

    d, k = sol.gdim, sol.degree
    out = []
    grad_phi = ufl.grad(sol.phi)
    for expr, deg in ((grad_phi, k - 2), (velocity_expression(grad_phi, sol.p0, sol.p1, t), k)):
        W = fem.functionspace(sol.msh, ("DG", deg, (d, d)))
        J = fem.Function(W)
        J.interpolate(fem.Expression(ufl.grad(expr), W.element.interpolation_points))
        out.append(requ.eval_function(sol, J, x))
    return out


def test_velocity_derivatives_match_fe(comm):
    """The pointwise D_x v_t and ∂_t v_t agree with dolfinx's interpolation and a t-difference."""
    sol = _single(OFF, comm)
    x = requ.sample_domain(sol.msh, 200, 3)
    data = requ.member_data(sol, x)
    t, h = 0.3, 1e-5
    v, J = requ.field_values(data, "velocity", np.full(len(x), t))
    H_ref, J_ref = _dolfinx_jacobians(sol, x, t)
    v_ref = sol.evaluate(x, t)["velocity"]
    assert np.abs(v - v_ref).max() < 1e-12 * np.abs(v_ref).max()
    # the reference interpolates D_x v_t cellwise into DG_2: equal up to that interpolation
    assert np.abs(J[:, :, :2] - J_ref).max() < 0.05 * np.abs(J_ref).max()
    fd = (sol.evaluate(x, t + h)["velocity"] - sol.evaluate(x, t - h)["velocity"]) / (2 * h)
    assert np.abs(J[:, :, 2] - fd).max() < 1e-6 * np.abs(fd).max()
    F, H = requ.field_values(data, "flux")
    assert np.allclose(F, sol.evaluate(x)["flux"])
    assert np.allclose(H, H_ref, atol=1e-10)


# --------------------------------------------------------------------------- θ off the grid
def test_potential_fit_off_grid_theta(store, comm):
    """φ(x, θ) fitted on 4 θ predicts θ = 0.5 (not on the grid) against an independent solve.

    Tolerance: relative L² error < 0.08 (measured 0.039) and at most a fifth of the error of the
    nearest grid θ's potential (measured 0.78): the network must interpolate in θ, not copy a
    neighbour.
    """
    tr = requ.training_set(store, "potential", 1600, 0, comm)
    model = requ.fit(
        tr["x"], tr["y"], tr["jac"], width=24, depth=2, steps=800, seed=0,
        derivative_inputs=tr["derivative_inputs"], bounds=tr["bounds"],
        input_names=tr["input_names"], field="potential", comm=comm, progress=False,
    )  # fmt: skip
    sol = _single(OFF, comm)
    x = requ.sample_domain(sol.msh, 1000, 99)
    y, J = requ.field_values(requ.member_data(sol, x), "potential")
    err = requ.errors(model, _inputs(x, OFF), y, J, derivative_inputs=[0, 1], holder_points=0)
    st = sweep.SweepStore(store, comm)
    near = st.index_of({"theta": 0.45})
    neighbour = sweep.probe(st, {"theta": 0.45}, x)["potential"]
    assert near is not None
    l2_near = np.sqrt(np.mean((np.asarray(neighbour) - y) ** 2) / np.mean(y**2))
    assert err["l2_error"] < 0.08, err
    assert err["l2_error"] < 0.2 * l2_near, (err["l2_error"], l2_near)
    assert err["c1_rel"] < 0.25, err


# ------------------------------------------------------------------- transport by a network
def test_network_drives_transport(run_dir, comm):
    """v(x, t) fitted on a run moves the same start samples close to where FE transport does.

    Tolerances (measured values in brackets): mean |X_net − X_fe| < 0.15 · mean |X_fe − X_0|
    [0.026], and the energy distance to the target within 3× of the FE-driven one plus the
    exact-sample noise floor [2.8e-4 vs 2.7e-4, floor 7.5e-4], far below the untransported one.
    """
    from beckmann import store as io

    tr = requ.training_set(run_dir, "velocity", 1500, 0, comm)
    assert tr["input_names"] == ["x", "y", "t"]
    model = requ.fit(
        tr["x"], tr["y"], tr["jac"], width=24, depth=2, steps=600, seed=0,
        derivative_inputs=tr["derivative_inputs"], bounds=tr["bounds"],
        input_names=tr["input_names"], field="velocity", comm=comm, progress=False,
    )  # fmt: skip
    sol = io.load_run(run_dir, comm)
    kw = {"steps": 20, "seed": 1, "energy_points": 1500, "path_report": False}
    fe = transport.sample_transport(sol, 3000, **kw)
    net = transport.sample_transport(
        sol, 3000, velocity=lambda mc: requ.NetworkVelocity(model, mc), **kw
    )
    dist = {k: r["report"]["distances"] for k, r in (("fe", fe), ("net", net))}
    if comm.rank == 0:
        x0 = fe["start"]
        assert np.array_equal(x0, net["start"])
        move = np.linalg.norm(fe["samples"] - x0, axis=1).mean()
        gap = np.linalg.norm(net["samples"] - fe["samples"], axis=1).mean()
        assert gap < 0.15 * move, (gap, move)
    e_fe, e_net = dist["fe"]["transported"]["energy"], dist["net"]["transported"]["energy"]
    floor = dist["fe"]["exact"]["energy"]
    assert e_net < 3.0 * (e_fe + floor), dist
    assert e_net < 0.2 * dist["net"]["untransported"]["energy"], dist


def test_network_velocity_rejects_wrong_models(run_dir, folder, comm):
    tr = requ.training_set(run_dir, "potential", 50, 0, comm)
    pot = requ.fit(tr["x"], tr["y"], tr["jac"], width=4, depth=1, steps=5, comm=comm,
                   input_names=tr["input_names"], field="potential", progress=False)  # fmt: skip
    mc = transport.MeshCells(_single(OFF, comm).msh)
    with pytest.raises(ValueError, match="needs a velocity network with inputs"):
        requ.NetworkVelocity(pot, mc)
    if comm.rank == 0:
        requ.save(pot, folder / "pot")
    comm.barrier()
    with pytest.raises(ValueError, match="needs a velocity network"):
        requ.model_velocity(run_dir, folder / "pot", [], comm)
    with pytest.raises(ValueError, match="not found"):
        requ.model_velocity(run_dir, folder / "missing", [], comm)


# ---------------------------------------------------------------------------- command line
@pytest.mark.serial
def test_cli_fit_sweep_and_sample_with_model(store, tmp_path):
    """`beckmann fit SWEEP --field velocity` then `beckmann sample SWEEP --model --param`."""
    out = tmp_path / "vel"
    fit = ("fit", str(store), "--field", "velocity", "--steps", "300", "--points", "800",
           "--test-points", "200", "--width", "16", "--out", str(out))  # fmt: skip
    rep = json.loads(run_cli(*fit).stdout)
    assert rep["inputs"] == ["x", "y", "t", "theta"] and rep["thetas"] == 4
    assert rep["parameters"] == 4 * 16 + 16 + 16 * 16 + 16 + 16 * 2 + 2
    # The reported held-out error against an independent FE solve at a grid θ, fresh (x, t).
    model = requ.load(out, field="velocity")
    sol = _single(0.45, MPI.COMM_SELF)
    x = requ.sample_domain(sol.msh, 600, 11)
    t = np.repeat(np.linspace(0.0, 1.0, 12), 50)
    ref = np.vstack(
        [
            sol.evaluate(xs, ts)["velocity"]
            for xs, ts in zip(x.reshape(12, 50, 2), t[::50], strict=True)
        ]
    )
    l2 = np.sqrt(np.mean(np.sum((model(_inputs(x, 0.45, t)) - ref) ** 2, axis=1))
                 / np.mean(np.sum(ref**2, axis=1)))  # fmt: skip
    # measured: reported 0.112, independent 0.136 (300 steps of a 16x2 network)
    assert rep["l2_error"] < 0.15 and l2 < 0.2 and abs(l2 - rep["l2_error"]) < 0.05, (rep, l2)
    arch = json.loads(out.with_suffix(".json").read_text())
    assert arch["field"] == "velocity" and arch["info"]["parameters"] == ["theta"]
    samples = tmp_path / "s.npy"
    args = ("sample", str(store), "--model", str(out), "--n", "500", "--steps", "10",
            "--out", str(samples), "--overwrite")  # fmt: skip
    rep = json.loads(run_cli(*args, "--param", f"theta={OFF}").stdout)
    assert rep["model"] == str(out) and rep["grid_times"] == 0
    d = rep["distances"]
    assert d["transported"]["energy"] < d["untransported"]["energy"]
    assert np.load(samples).shape == (500, 2)
    bad = run_cli(*args, check=False)
    assert bad.returncode != 0 and "--param needs a value for theta" in bad.stderr
    bad = run_cli(*args, "--param", "s=1", check=False)
    assert bad.returncode != 0 and "'s' is not a sweep parameter" in bad.stderr
    bad = run_cli(*args, "--param", f"theta={OFF}", "--path", "fisher-rao", check=False)
    assert bad.returncode != 0 and "linear path" in bad.stderr
    # A prompt outside the θ trained on (GRID) is refused in one line, unless --extrapolate.
    bad = run_cli(*args, "--param", "theta=0.9", check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1, bad.stderr
    assert "theta=0.9 (trained on [0.35, 0.65])" in bad.stderr and "--extrapolate" in bad.stderr
    rep = json.loads(run_cli(*args, "--param", "theta=0.9", "--extrapolate").stdout)
    assert np.load(samples).shape == (500, 2) and rep["model"] == str(out)


@pytest.mark.serial
def test_cli_fit_bad_inputs(store, tmp_path):
    bad = run_cli("fit", str(store), "--field", "pressure", "--out", str(tmp_path / "m"),
                  check=False)  # fmt: skip
    assert bad.returncode != 0 and "unknown field 'pressure'" in bad.stderr
    bad = run_cli("fit", str(store), "--field", "flux", "--time-input", "--steps", "5",
                  "--out", str(tmp_path / "m"), check=False)  # fmt: skip
    assert bad.returncode != 0 and "--time-input is for --field velocity" in bad.stderr
