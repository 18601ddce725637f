"""The flux form of a fitted velocity: v = F_net / p_t with tabulated densities."""

import json
import runpy

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

from beckmann import requ  # noqa: E402
from beckmann.requ.flux_velocity import (  # noqa: E402
    FluxVelocity,
    grid_nodes,
    multilinear,
    multilinear_gradient,
)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_multilinear_is_exact_on_multilinear_functions(d):
    """f = Π_k (a_k + b_k x_k) is reproduced exactly, with its gradient, off the nodes too."""
    rng = np.random.default_rng(d)
    a, b = rng.uniform(0.5, 1.5, d), rng.uniform(-1, 1, d)
    lo, hi = rng.uniform(-1, 0, d), rng.uniform(1, 2, d)
    shape = tuple(int(n) for n in rng.integers(2, 7, d))

    def f(x):
        return np.prod(a + b * x, axis=1)

    def grad(x):
        terms = a + b * x
        return np.stack(
            [b[k] * np.prod(np.delete(terms, k, axis=1), axis=1) for k in range(d)], axis=1
        )

    table = f(grid_nodes(lo, hi, shape)).reshape(shape)
    x = rng.uniform(lo, hi, (300, d))
    np.testing.assert_allclose(multilinear(np, table, lo, hi, x), f(x), rtol=1e-12)
    np.testing.assert_allclose(multilinear_gradient(table, lo, hi, x), grad(x), rtol=1e-10,
                               atol=1e-12)  # fmt: skip
    # outside the box: the value at the nearest point of the box
    out = hi + 0.5
    np.testing.assert_allclose(multilinear(np, table, lo, hi, out[None, :]), f(hi[None, :]))
    # a non-multilinear function is not reproduced: the test can fail
    bumpy = np.sin(5 * grid_nodes(lo, hi, shape)).sum(axis=1).reshape(shape)
    assert not np.allclose(multilinear(np, bumpy, lo, hi, x), np.sin(5 * x).sum(axis=1))


def _flux_model(seed=0):
    """A random 2-D flux network over positive random density tables."""
    rng = np.random.default_rng(seed)
    x = rng.random((200, 2))
    F = np.stack([np.sin(3 * x[:, 0]) * x[:, 1], x[:, 0] * x[:, 1]], axis=1)
    net = requ.fit(x, F, None, width=8, steps=40, check_every=20, progress=False,
                   input_names=["x", "y"], field="flux")  # fmt: skip
    shape = (9, 7)
    p0 = rng.uniform(0.5, 1.5, shape)
    p1 = rng.uniform(0.1, 2.0, shape)
    return FluxVelocity(net, [0.0, 0.0], [1.0, 1.0], p0, p1, {"note": "test"})


def test_flux_velocity_values_jacobian_files_and_export(tmp_path):
    """v = F/p_t by its definition; the Jacobian by finite differences; save/load and the
    exported loader (NumPy, JAX) reproduce it to round-off."""
    m = _flux_model()
    rng = np.random.default_rng(5)
    z = np.c_[rng.uniform(0.05, 0.95, (100, 2)), rng.random(100)]
    x, t = z[:, :2], z[:, 2]
    lo, hi = np.zeros(2), np.ones(2)
    pt = (1 - t) * multilinear(np, m.p0, lo, hi, x) + t * multilinear(np, m.p1, lo, hi, x)
    np.testing.assert_allclose(m(z), m.flux(x) / pt[:, None], rtol=1e-14)
    assert m.input_names == ["x", "y", "t"] and m.field == "velocity" and m.output_dim == 2
    J = m.jacobian(z)
    eps = 1e-6
    for k in range(3):
        dz = np.zeros(3)
        dz[k] = eps
        fd = (m(z + dz) - m(z - dz)) / (2 * eps)
        np.testing.assert_allclose(J[:, :, k], fd, rtol=1e-5, atol=1e-6)
    # files
    requ.save(m, tmp_path / "m")
    back = requ.load(tmp_path / "m", field="velocity")
    assert isinstance(back, FluxVelocity) and back.info["note"] == "test"
    np.testing.assert_array_equal(back(z), m(z))
    # version 2 (an older reader refuses it); the version must match the form
    js = json.loads((tmp_path / "m.json").read_text())
    assert js["version"] == 2 and js["velocity_form"] == "flux/p_t"
    (tmp_path / "v1.npz").write_bytes((tmp_path / "m.npz").read_bytes())
    (tmp_path / "v1.json").write_text(json.dumps({**js, "version": 1}))
    with pytest.raises(ValueError, match="v1.json.*version 1 has a velocity_form"):
        requ.load(tmp_path / "v1")
    # a damaged table shape is refused, naming the file
    js["density_grid"]["shape"] = [9, 8]
    (tmp_path / "bad.json").write_text(json.dumps(js))
    (tmp_path / "bad.npz").write_bytes((tmp_path / "m.npz").read_bytes())
    with pytest.raises(ValueError, match="bad"):
        requ.load(tmp_path / "bad")
    # export
    npz, loader = requ.export(m, tmp_path / "e", "numpy")
    assert loader.read_text().count("beckmann.") == 0
    v = runpy.run_path(str(loader))["load_export"](npz)
    np.testing.assert_allclose(v(x, t), m(z), rtol=1e-14, atol=0)
    np.testing.assert_allclose(v(z), m(z), rtol=1e-14, atol=0)
    assert v.input_names == ["x", "y", "t"] and v.field == "velocity"
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        vj = runpy.run_path(str(loader))["load_export"](npz, xp=jax.numpy)
        np.testing.assert_allclose(np.asarray(vj(x, t)), m(z), rtol=1e-12, atol=1e-14)


@pytest.mark.serial
def test_density_table_matches_the_run(run8):
    """The table holds the run's p0, p1 at the grid nodes (dolfinx's evaluation) and
    interpolates them between the nodes to within the grid's resolution."""
    from beckmann._dolfinx import MPI
    from beckmann.store import load_run

    sol = load_run(run8, MPI.COMM_SELF)
    tab = requ.data.density_table(sol)
    shape = tab["p1"].shape
    assert shape == (47, 47)  # mean cell width sqrt(1/128), over 4: 45.3 -> 46 intervals
    nodes = grid_nodes(tab["lower"], tab["upper"], shape)
    ref = sol.evaluate(nodes, 0.0, what=("source", "target"))
    np.testing.assert_allclose(tab["p1"].reshape(-1), ref["target"], rtol=1e-12)
    np.testing.assert_allclose(tab["p0"].reshape(-1), ref["source"], rtol=1e-12)
    x = requ.sample_domain(sol.msh, 400, seed=2)
    exact = sol.evaluate(x, 0.0, what=("target",))["target"]
    err = multilinear(np, tab["p1"], tab["lower"], tab["upper"], x) - exact
    assert np.sqrt(np.mean(err**2) / np.mean(exact**2)) < 0.01


@pytest.mark.serial
def test_cli_fit_velocity_of_a_run_uses_the_flux_form(run8, tmp_path):
    """The default fit of a run's v(x, t): the flux form; its reported held-out error is the
    relative L² error of v against the FE velocity, recomputed here at fresh points and times
    with Solution.evaluate; `--velocity-form direct` fits v(x, t) itself."""
    from conftest import run_cli

    from beckmann._dolfinx import MPI
    from beckmann.store import load_run

    args = ["fit", str(run8), "--field", "velocity", "--time-input", "--width", "16"]
    args += ["--steps", "400", "--test-points", "300"]
    rep = json.loads(run_cli(*args, "--out", str(tmp_path / "f")).stdout)
    assert rep["velocity_form"] == "flux/p_t" and rep["inputs"] == ["x", "y", "t"]
    model = requ.load(tmp_path / "f", input_dim=3, field="velocity")
    assert isinstance(model, FluxVelocity)
    sol = load_run(run8, MPI.COMM_SELF)
    x = requ.sample_domain(sol.msh, 300, seed=9)
    errs = []
    for t in (0.0, 0.5, 1.0):
        v = sol.evaluate(x, t, what=("velocity",))["velocity"]
        e = model(np.c_[x, np.full(len(x), t)]) - v
        errs.append(np.sqrt(np.mean(np.sum(e**2, 1)) / np.mean(np.sum(v**2, 1))))
    assert max(errs) < 0.2, errs  # uniform points on the coarse n = 8 mesh
    assert rep["l2_error"] < 0.2, rep["l2_error"]
    direct = json.loads(run_cli(*args, "--velocity-form", "direct", "--steps", "20",
                                "--out", str(tmp_path / "d")).stdout)  # fmt: skip
    assert direct["velocity_form"] == "direct"
    assert not isinstance(requ.load(tmp_path / "d"), FluxVelocity)
    for extra, msg in (([], "add --time-input"), (["--field", "flux"], "is for --field velocity")):
        cmd = ["fit", str(run8), "--field", "velocity", *extra, "--velocity-form", "flux"]
        bad = run_cli(*cmd, "--out", str(tmp_path / "x"), check=False)
        assert bad.returncode == 2 and msg in bad.stderr, bad.stderr


@pytest.mark.serial
@pytest.mark.slow
def test_flux_model_fit_and_sample_are_rank_independent(run8, tmp_path):
    """`fit` on 2 ranks gives the serial model (the same density tables); the flux model drives
    `sample --model` with the same samples on 1 and 2 ranks."""
    from conftest import run_cli

    args = ["fit", str(run8), "--field", "velocity", "--time-input", "--width", "8"]
    args += ["--steps", "50", "--test-points", "50"]
    run_cli(*args, "--out", str(tmp_path / "f"))
    run_cli(*args, "--out", str(tmp_path / "f2"), ranks=2, timeout=120)
    a, b = requ.load(tmp_path / "f"), requ.load(tmp_path / "f2")
    assert isinstance(a, FluxVelocity) and isinstance(b, FluxVelocity)
    np.testing.assert_array_equal(a.p1, b.p1)
    np.testing.assert_array_equal(a.p0, b.p0)
    z = np.random.default_rng(0).random((50, 3))
    np.testing.assert_allclose(a(z), b(z), rtol=1e-3, atol=1e-6)
    outs = []
    for ranks in (1, 2):
        out = tmp_path / f"s{ranks}.npy"
        run_cli("sample", str(run8), "--model", str(tmp_path / "f"), "--n", "300", "--seed", "3",
                "--out", str(out), ranks=ranks, timeout=120)  # fmt: skip
        outs.append(np.load(out))
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-12)
