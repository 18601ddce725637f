"""Tests of the network fitter (beckmann/requ/): fits, derivatives, save/load, errors, rates."""

import json

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

from beckmann import requ  # noqa: E402


def reference(n, seed):
    """φ = cos(πx)cos(πy)/(4π²) on [0,1]² and its gradient at n uniform random points."""
    x = np.random.default_rng(seed).random((n, 2))
    c, s = np.cos(np.pi * x), np.sin(np.pi * x)
    phi = c[:, 0] * c[:, 1] / (4 * np.pi**2)
    grad = np.stack([-s[:, 0] * c[:, 1], -c[:, 0] * s[:, 1]], axis=1) / (4 * np.pi)
    return x, phi, grad


def vector_field(n, seed):
    """F(x, y, θ) = (sin(x + θ y), x y θ) and its Jacobian, a 3-input vector field."""
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, (n, 3))
    a, b, t = x.T
    F = np.stack([np.sin(a + t * b), a * b * t], axis=1)
    ca = np.cos(a + t * b)
    J = np.stack(
        [np.stack([ca, t * ca, b * ca], axis=1), np.stack([b * t, a * t, a * b], axis=1)], axis=1
    )
    return x, F, J


@pytest.fixture(scope="module")
def small_model():
    return small_fit()


def small_fit(**kw):
    x, F, J = vector_field(256, 0)
    opts = dict(width=8, depth=2, steps=40, check_every=20, progress=False)
    opts.update(kw)
    return requ.fit(x, F, J, input_names=["x", "y", "theta"], field="flux", **opts)


def test_fit_reference_c1_error():
    """ReQu, width 32, depth 2 (1185 parameters), 2000 full-batch steps: relative C¹ < 5e-2.

    Measured: c1_rel ≈ 2.9e-2, relative L² ≈ 9e-4 (held-out points, float32 training).
    """
    x, phi, grad = reference(1024, 0)
    xv, phiv, gradv = reference(2000, 1)
    model = requ.fit(
        x, phi, grad, width=32, depth=2, steps=2000, learning_rate=1e-2, seed=0,
        bounds=([0, 0], [1, 1]), input_names=["x", "y"], field="potential", progress=False,
    )  # fmt: skip
    assert model.parameters == 2 * 32 + 32 + 32 * 32 + 32 + 32 + 1
    err = requ.errors(model, xv, phiv, gradv)
    assert err["c1_rel"] < 5e-2
    assert err["l2_error"] < 5e-3
    assert err["c1_error"] == pytest.approx(err["c0_error"] + err["grad_error"])
    # The C¹ error is a sup over held-out points: it bounds the error of the gradient anywhere.
    assert np.max(np.abs(model.jacobian(xv) - gradv)) <= err["grad_error"] + 1e-15
    # The gradient fit is what the Sobolev loss buys: sup |∇f − ∇φ| well below sup |∇φ| ≈ 0.08.
    assert err["grad_error"] < 0.05 * np.abs(gradv).max()


def test_requ_represents_square_exactly():
    """x² = σ(x) + σ(−x) for σ = ReQu: a hand-built network reproduces x² and 2x exactly."""
    model = requ.Network(
        activation="requ",
        weights=[(np.array([[1.0, -1.0]]), np.zeros(2)), (np.ones((2, 1)), np.zeros(1))],
        lower=np.array([-1.0]),
        upper=np.array([1.0]),
        shift=np.zeros(1),
        scale=1.0,
        scalar=True,
    )
    x = np.linspace(-1, 1, 11)[:, None]
    np.testing.assert_allclose(model(x), x[:, 0] ** 2, atol=1e-15)
    np.testing.assert_allclose(model.jacobian(x), 2 * x, atol=1e-15)
    err = requ.errors(model, x, x[:, 0] ** 2 + 1e-3, 2 * x)
    assert err["c0_error"] == pytest.approx(1e-3)
    assert err["grad_error"] == pytest.approx(0.0, abs=1e-14)
    assert err["holder_error"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("activation", requ.ACTIVATIONS)
def test_input_derivatives_match_finite_differences(activation, small_model):
    model = small_model if activation == "requ" else small_fit(activation=activation, steps=5)
    x = np.random.default_rng(5).uniform(-0.9, 0.9, (20, 3))
    h = 1e-6
    fd = np.stack([(model(x + h * e) - model(x - h * e)) / (2 * h) for e in np.eye(3)], axis=-1)
    J = model.jacobian(x)
    assert J.shape == (20, 2, 3)
    # ReLU's derivative jumps at kinks; no sample point is within h of one in practice.
    np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-7)


def test_scalar_shapes_and_vector_shapes():
    x, phi, grad = reference(64, 0)
    m = requ.fit(x, phi, grad, width=4, depth=1, steps=5, progress=False)
    assert m(x).shape == (64,) and m.jacobian(x).shape == (64, 2)
    v = small_fit(steps=5, activation="tanh")
    assert v(np.zeros((3, 3))).shape == (3, 2) and v.jacobian(np.zeros((3, 3))).shape == (3, 2, 3)


def test_save_load_round_trip(tmp_path, small_model):
    model = small_model
    js, npz = requ.save(model, tmp_path / "net")
    assert js.name == "net.json" and npz.name == "net.npz"
    arch = json.loads(js.read_text())
    assert arch["activation"] == "requ" and arch["widths"] == [3, 8, 8, 2]
    assert arch["input_names"] == ["x", "y", "theta"] and arch["field"] == "flux"
    for path in (tmp_path / "net", js, npz):
        loaded = requ.load(path, input_dim=3, field="flux")
        x = np.random.default_rng(1).uniform(-1, 1, (50, 3))
        assert np.array_equal(loaded(x), model(x))
        assert np.array_equal(loaded.jacobian(x), model.jacobian(x))
        assert loaded.input_names == model.input_names and loaded.info["seed"] == 0
    # NumPy's npz reader never needs pickle for these files.
    with np.load(npz, allow_pickle=False) as data:
        assert sorted(data.files) == ["W0", "W1", "W2", "b0", "b1", "b2"]


def test_load_errors(tmp_path, small_model):
    model = small_model
    requ.save(model, tmp_path / "net")
    with pytest.raises(ValueError, match="not found"):
        requ.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="takes 3 inputs"):
        requ.load(tmp_path / "net", input_dim=2)
    with pytest.raises(ValueError, match="approximates 'flux', not 'potential'"):
        requ.load(tmp_path / "net", field="potential")
    with pytest.raises(ValueError, match="expected"):
        requ.load(tmp_path / "net", input_names=["x", "y", "t"])
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bad.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="not valid JSON"):
        requ.load(tmp_path / "bad")
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a beckmann network"):
        requ.load(tmp_path / "bad")
    arch = json.loads((tmp_path / "net.json").read_text())
    arch["widths"] = [3, 16, 8, 2]
    (tmp_path / "bad.json").write_text(json.dumps(arch))
    (tmp_path / "bad.npz").write_bytes((tmp_path / "net.npz").read_bytes())
    with pytest.raises(ValueError, match="layer widths"):
        requ.load(tmp_path / "bad")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read weights"):
        requ.load(tmp_path / "bad")


def test_load_refuses_nan_weights_and_huge_headers(tmp_path, small_model):
    import tracemalloc
    import zipfile

    requ.save(small_model, tmp_path / "net")
    arch = json.loads((tmp_path / "net.json").read_text())
    with np.load(tmp_path / "net.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["W1"] = arrays["W1"].copy()
    arrays["W1"][2, 3] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    (tmp_path / "nan.json").write_text(json.dumps(arch))
    with pytest.raises(ValueError, match=r"nan\.npz.*'W1' contains NaN"):
        requ.load(tmp_path / "nan")
    # A header that declares a 10^6 x 10^6 float64 array (8 TB) and holds no data.
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        with zf.open("W0.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
    (tmp_path / "huge.json").write_text(json.dumps(arch))
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"huge\.npz.*'W0' has shape \(1000000, 1000000\)"):
        requ.load(tmp_path / "huge")
    with pytest.raises(ValueError, match="too large"):
        requ.model_io.read_npz(tmp_path / "huge.npz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2**24  # refused from the header, nothing near 8 TB (or 8 MB) allocated
    # An object array (which would need pickle) is refused as well.
    np.savez(tmp_path / "obj.npz", W0=np.array([None, 1], dtype=object))
    with pytest.raises(ValueError, match="not a number type"):
        requ.model_io.read_npz(tmp_path / "obj.npz")


def test_requ_spline_network_rates():
    """Approximation rates of the ReQu network class against theory, on exact weights.

    One hidden ReQu layer represents every C¹ quadratic spline: the uniform quadratic B-spline
    is ``(σ(u) − 3σ(u−1) + 3σ(u−2) − σ(u−3)) / 2`` with ``σ(u) = max(0, u)²``. The weights of
    the quasi-interpolant ``c_j = (−f(τ_j−h) + 10 f(τ_j) − f(τ_j+h)) / 8`` (exact for
    quadratics) are written down, not trained. For ``f = |x − ½|^β``, ``β = 2.5``, theory gives
    ``C^ℓ`` errors ``∝ P^{−(β−ℓ)/d}``: slopes −2.5 (C⁰) and −1.5 (C¹) in ``d = 1``; the fitted
    log–log slopes must match within 0.15, and halving h must divide the errors by 2^β, 2^(β−1).
    """
    beta = 2.5

    def f(x):
        return np.abs(x - 0.5) ** beta

    def spline_network(n):
        h = 1.0 / n
        knots = -2 * h + h * np.arange(n + 5)
        tau = -0.5 * h + h * np.arange(n + 2)
        c = (-f(tau - h) + 10 * f(tau) - f(tau + h)) / 8
        a = np.zeros(len(knots))
        for j, cj in enumerate(c):
            a[j : j + 4] += cj * np.array([1.0, -3.0, 3.0, -1.0]) / (2 * h * h)
        return requ.Network(
            activation="requ", weights=[(np.ones((1, len(knots))), -knots), (a[:, None], [0.0])],
            lower=np.array([-1.0]), upper=np.array([1.0]), shift=np.zeros(1), scale=1.0,
            scalar=True,
        )  # fmt: skip

    x = np.linspace(0, 1, 4001)[:, None]
    grad = beta * np.abs(x - 0.5) ** (beta - 1) * np.sign(x - 0.5)
    P, e0, e1 = [], [], []
    for n in (32, 64, 128, 256, 512):
        m = spline_network(n)
        err = requ.errors(m, x, f(x[:, 0]), grad, holder_points=0)
        P.append(m.parameters)
        e0.append(err["c0_error"])
        e1.append(err["grad_error"])
    assert P == [3 * (n + 5) + 1 for n in (32, 64, 128, 256, 512)]
    assert np.polyfit(np.log(P), np.log(e0), 1)[0] == pytest.approx(-beta, abs=0.15)
    assert np.polyfit(np.log(P), np.log(e1), 1)[0] == pytest.approx(-(beta - 1), abs=0.15)
    np.testing.assert_allclose(np.array(e0[:-1]) / e0[1:], 2**beta, rtol=0.02)
    np.testing.assert_allclose(np.array(e1[:-1]) / e1[1:], 2 ** (beta - 1), rtol=0.02)


def test_bad_inputs():
    x, phi, grad = reference(32, 0)
    with pytest.raises(ValueError, match="unknown activation 'sigmoid'"):
        requ.fit(x, phi, grad, activation="sigmoid")
    with pytest.raises(ValueError, match="width must be a positive integer"):
        requ.fit(x, phi, grad, width=0)
    with pytest.raises(ValueError, match="values must have shape"):
        requ.fit(x, phi[:-1], grad)
    with pytest.raises(ValueError, match="derivatives must have shape"):
        requ.fit(x, phi, grad[:5])
    with pytest.raises(ValueError, match="derivative_inputs"):
        requ.fit(x, phi, grad, derivative_inputs=[0])
    with pytest.raises(ValueError, match="NaN or inf"):
        requ.fit(x, np.where(np.arange(32) == 3, np.nan, phi), grad)
    with pytest.raises(ValueError, match="do not vary"):
        requ.fit(np.c_[x, np.ones(32)], phi, None)
    model = small_fit(steps=5, activation="relu")
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        model(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"x\[None, :\]"):
        model.jacobian(np.zeros(3))
    with pytest.raises(ValueError, match="field is vector"):
        requ.errors(model, np.zeros((4, 3)), np.zeros(4))


def test_seeded_reproducibility():
    a = small_fit(seed=3, batch_size=64, steps=20)
    b = small_fit(seed=3, batch_size=64, steps=20)
    c = small_fit(seed=4, batch_size=64, steps=20)
    for (Wa, ba), (Wb, bb) in zip(a.weights, b.weights, strict=True):
        assert np.array_equal(Wa, Wb) and np.array_equal(ba, bb)
    assert not np.array_equal(a.weights[0][0], c.weights[0][0])


def test_derivatives_of_a_subset_of_inputs():
    """θ without derivative data: the loss and the errors use ∂/∂(x, y) only.

    The reported derivative error is checked against central differences of the model in x and
    y (not the model's own Jacobian), and training on those columns must cut that error.
    """
    x, F, J = vector_field(256, 0)
    Jxy = J[:, :, :2]

    def fd_grad_error(m):
        h = 1e-6
        fd = np.stack([(m(x + h * e) - m(x - h * e)) / (2 * h) for e in np.eye(3)[:2]], axis=-1)
        return np.linalg.norm((fd - Jxy).reshape(len(x), -1), axis=1).max()

    first = requ.fit(x, F, Jxy, derivative_inputs=[0, 1], width=8, steps=1, progress=False)
    m = requ.fit(x, F, Jxy, derivative_inputs=[0, 1], width=8, steps=300, progress=False)
    err = requ.errors(m, x, F, Jxy, derivative_inputs=[0, 1])
    assert m.info["derivative_inputs"] == [0, 1]
    assert err["grad_error"] == pytest.approx(fd_grad_error(m), rel=1e-5)
    assert err["c1_error"] == pytest.approx(
        np.linalg.norm(m(x) - F, axis=1).max() + fd_grad_error(m), rel=1e-5
    )
    assert err["grad_error"] < 0.5 * fd_grad_error(first)


def test_callback_progress_and_early_stop(capsys):
    x, phi, grad = reference(256, 0)
    seen = []
    m = requ.fit(
        x, phi, grad, width=8, steps=60, check_every=20, callback=lambda s, loss: seen.append(s),
        progress=False, validation=(x, phi, grad), target_c1_rel=10.0,
    )  # fmt: skip
    # A target of 10 (1000 %) is met at the first check: training stops after one chunk.
    assert seen == [20] and m.info["steps"] == 20
    assert capsys.readouterr().err == ""


def test_holder_seminorm_brute_force():
    """g(x) = x^α on [0, 1] has [g]_α = 1, attained by any pair (0, y)."""
    x = np.linspace(0, 1, 101)[:, None]
    assert requ.holder_seminorm(x, x[:, 0] ** 0.5, 0.5) == pytest.approx(1.0)
    assert requ.holder_seminorm(x, x[:, 0] ** 0.5, 0.25) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="alpha"):
        requ.holder_seminorm(x, x, 1.5)


def test_holder_seminorm_matches_all_pairs():
    """The project estimator (beckmann.holder) and a brute-force double loop agree."""
    rng = np.random.default_rng(2)
    x, g = rng.random((300, 3)), rng.standard_normal((300, 2))
    brute = max(
        np.linalg.norm(g[i] - g[j]) / np.linalg.norm(x[i] - x[j]) ** 0.7
        for i in range(300)
        for j in range(i)
    )
    assert requ.holder_seminorm(x, g, 0.7) == pytest.approx(brute, rel=1e-12)


def test_fit_under_mpi_gives_one_model():
    MPI = pytest.importorskip("mpi4py.MPI")
    comm = MPI.COMM_WORLD
    m = small_fit(steps=5, comm=comm)
    w = comm.allgather(m.weights[0][0])
    assert all(np.array_equal(w[0], wi) for wi in w)
    with pytest.raises(ValueError, match="unknown activation"):
        small_fit(activation="nope", comm=comm)


# ---- the `beckmann fit` command (subprocesses, from the serial session)


@pytest.mark.serial
def test_cli_fit_potential(run8, tmp_path):
    """The report's errors are recomputed by hand from the saved model and the FE solution.

    The held-out points are regenerated from the seed (seed + 1, uniform), the reference values
    come from ``Solution.evaluate`` (not from the fitter), and the norms are written out here.
    """
    from conftest import run_cli

    from beckmann._dolfinx import MPI
    from beckmann.store import load_run

    args = ["fit", str(run8), "--field", "potential", "--width", "16", "--steps", "400"]
    args += ["--sampling", "uniform", "--test-points", "600"]
    proc = run_cli(*args, "--out", str(tmp_path / "m"), "--json-out", str(tmp_path / "r.json"))
    report = json.loads(proc.stdout)
    assert report == json.loads((tmp_path / "r.json").read_text())
    assert report["parameters"] == 16 * 16 + 5 * 16 + 1 and report["steps"] == 400
    assert report["test_measure"] == "uniform" and report["dtype"] == "float32"
    model = requ.load(tmp_path / "m", input_dim=2, field="potential")
    sol = load_run(run8, MPI.COMM_SELF)
    held = requ.training_set(run8, "potential", 600, 1, MPI.COMM_SELF, sampling="uniform")
    x = held["x"]
    ref = sol.evaluate(x)
    e = model(x) - ref["potential"]
    de = np.linalg.norm(model.jacobian(x) - ref["flux"], axis=1)
    assert report["c0_error"] == pytest.approx(np.abs(e).max(), rel=1e-9)
    assert report["grad_error"] == pytest.approx(de.max(), rel=1e-9)
    assert report["l2_error"] == pytest.approx(
        np.sqrt(np.mean(e**2) / np.mean(ref["potential"] ** 2)), rel=1e-9
    )
    # An independent check at fresh points: the fit is good, not only reported consistently.
    xf = requ.sample_domain(sol.msh, 500, seed=7)
    fresh = sol.evaluate(xf)["potential"]
    assert np.sqrt(np.mean((model(xf) - fresh) ** 2) / np.mean(fresh**2)) < 0.05
    # Uniform sampling: about a quarter of the points in each quarter of the unit square.
    assert np.all(np.abs(np.histogram2d(*xf.T, bins=2, range=[[0, 1], [0, 1]])[0] - 125) < 40)


@pytest.mark.serial
def test_cli_fit_under_mpi_matches_serial(run8, tmp_path):
    from conftest import run_cli

    args = ["fit", str(run8), "--field", "velocity", "--time", "0.5", "--width", "8"]
    args += ["--steps", "100", "--test-points", "300"]
    serial = json.loads(run_cli(*args, "--out", str(tmp_path / "a")).stdout)
    par = json.loads(run_cli(*args, "--out", str(tmp_path / "b"), ranks=2).stdout)
    assert par["c1_error"] == pytest.approx(serial["c1_error"], rel=1e-3)
    a, b = requ.load(tmp_path / "a"), requ.load(tmp_path / "b", field="velocity")
    x = np.random.default_rng(0).random((50, 2))
    np.testing.assert_allclose(a(x), b(x), rtol=1e-3, atol=1e-6)


@pytest.mark.serial
def test_cli_fit_errors(run8, tmp_path):
    from conftest import run_cli

    cases = [
        (["fit", str(tmp_path / "nope")], "is not a beckmann run folder"),
        (["fit", str(run8), "--field", "pressure"], "unknown field 'pressure'"),
        (["fit", str(run8), "--activation", "gelu"], "unknown activation 'gelu'"),
        (["fit", str(run8), "--width", "0"], "--width must be >= 1"),
    ]
    for args, msg in cases:
        proc = run_cli(*args, "--out", str(tmp_path / "m"), check=False)
        assert proc.returncode == 2, proc.stderr
        assert msg in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.json").exists()


@pytest.mark.serial
def test_cli_fit_refuses_to_overwrite_its_model(run8, tmp_path):
    """`--out vnet --json-out vnet.json` fails with one line before any training or write."""
    from conftest import run_cli

    out = tmp_path / "vnet"
    for report in ("vnet.json", "vnet.npz"):
        proc = run_cli("fit", str(run8), "--out", str(out), "--json-out", str(tmp_path / report),
                       "--steps", "100000", check=False, timeout=120)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "would overwrite the model file" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.serial
def test_cli_fit_help_shows_defaults():
    from conftest import run_cli

    text = " ".join(run_cli("fit", "--help").stdout.split())
    defaults = (
        ("--width", "64"), ("--depth", "2"), ("--steps", "4000"), ("--points", "16384"),
        ("--batch-size", "512"), ("--sampling", "path"), ("--dtype", "float32"),
        ("--velocity-form", "auto"),
    )  # fmt: skip
    for flag, default in defaults:
        # the first "(default: ...)" after the flag in the option list is its own
        entry = text.split("options:", 1)[1].split(f" {flag} ", 1)[1]
        assert entry.split("(default: ", 1)[1].startswith(f"{default})"), (flag, entry[:200])


@pytest.mark.serial
@pytest.mark.slow
def test_rates_script_quick(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    cmd = [sys.executable, str(ROOT / "scripts" / "requ_rates.py"), "--quick", "--steps", "50"]
    cmd += ["--out", str(tmp_path / "r.png"), "--json-out", str(tmp_path / "r.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    data = json.loads((tmp_path / "r.json").read_text())
    assert len(data["rows"]) == 6 and set(data["summary"]) == {"requ", "relu", "tanh"}
    assert "slope C1 vs P" in proc.stdout and (tmp_path / "r.png").stat().st_size > 1000


def test_export_numpy_matches_the_model_to_round_off(tmp_path, small_model):
    """The exported .npz + standalone loader reproduce ``Network.__call__`` (NumPy and JAX)."""
    import runpy

    m = small_model  # inputs (x, y, theta), a vector field
    npz, loader = requ.export(m, tmp_path / "net", "numpy")
    assert loader.read_text().count("beckmann.") == 0  # no beckmann import: runs without it
    with np.load(npz, allow_pickle=False) as data:
        assert {"W0", "b2", "lower", "upper", "shift", "scale", "activation"} <= set(data.files)
    load = runpy.run_path(str(loader))["load_export"]
    v = load(npz)
    z = np.random.default_rng(3).uniform(-1, 1, (200, 3))
    ref = m(z)
    np.testing.assert_allclose(v(z), ref, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(v(z[:, :2], theta=z[:, 2:]), ref, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(v(z[:, :1], z[:, 1], 0.3), m(np.c_[z[:, :2], np.full(200, 0.3)]),
                               rtol=1e-13, atol=1e-15)  # fmt: skip
    assert v.input_names == ["x", "y", "theta"] and v.field == "flux"
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        vj = load(npz, xp=jax.numpy)
        np.testing.assert_allclose(np.asarray(vj(z)), ref, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="unknown export format"):
        requ.export(m, tmp_path / "x", "onnx")


@pytest.mark.serial
def test_cli_export(tmp_path, small_model):
    import runpy

    from conftest import run_cli

    requ.save(small_model, tmp_path / "m")
    rep = json.loads(run_cli("export", str(tmp_path / "m"), "--out", str(tmp_path / "e")).stdout)
    v = runpy.run_path(rep["loader"])["load_export"](rep["npz"])
    z = np.random.default_rng(4).uniform(-1, 1, (50, 3))
    np.testing.assert_allclose(v(z), small_model(z), rtol=1e-13, atol=1e-15)
    bad = run_cli("export", str(tmp_path / "m"), "--out", str(tmp_path / "m.npz"), check=False)
    assert bad.returncode == 2 and "would overwrite the model file" in bad.stderr
