"""Tests of beckmann.density against independent references (NumPy by hand, SciPy, pillow).

Runs serially and under ``mpirun -n 2``: files are written by rank 0 into a folder shared by all
ranks, and the check_values tests put the bad value on the last rank only.
"""

import shutil
import tempfile
from pathlib import Path

import beckmann._dolfinx  # noqa: F401  (before mpi4py: the order the wheel needs)

# isort: split
import numpy as np
import pytest
from mpi4py import MPI
from PIL import Image
from scipy.stats import gaussian_kde, multivariate_normal

from beckmann.density import (
    Expression,
    GaussianKDE,
    GaussianMixture,
    check_values,
    make_evaluator,
)

COMM = MPI.COMM_WORLD
UNIT2 = (np.zeros(2), np.ones(2))
UNIT3 = (np.zeros(3), np.ones(3))


@pytest.fixture
def shared_dir():
    """A folder made by rank 0 and seen by all ranks; removed after the test."""
    path = tempfile.mkdtemp(prefix="beckmann-density-") if COMM.rank == 0 else None
    path = Path(COMM.bcast(path, root=0))
    yield path
    COMM.barrier()
    if COMM.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def write_on_root(writer):
    """Run ``writer()`` on rank 0, then wait for it on every rank."""
    if COMM.rank == 0:
        writer()
    COMM.barrier()


def points(n, gdim, seed=0, lo=0.0, hi=1.0):
    """Random points in DOLFINx's (3, N) layout (z row zero in 2D)."""
    x = np.zeros((3, n))
    x[:gdim] = np.random.default_rng(seed).uniform(lo, hi, size=(gdim, n))
    return x


def expression(expr, gdim=2, **params):
    return make_evaluator(
        {"kind": "expression", "expr": expr, "params": params},
        gdim=gdim,
        bbox=UNIT2 if gdim == 2 else UNIT3,
    )


# ------------------------------------------------------------------------------- expressions


def test_expression_matches_numpy():
    text = (
        "exp(-((x - 0.3)**2 + (y - 0.6)**2) / (2*0.1**2)) + 0.5*sin(pi*x)*cos(2*pi*y)"
        " + sqrt(abs(x - y)) + log(1 + x) + tanh(y) - atan2(y, x + 1) + min(x, y, 0.4)"
        " - max(x, 0.5) + e**(-y) + tan(0.3*x) + sinh(y) / cosh(x) + asin(0.5*x) + acos(y/2)"
        " + atan(x*y)"
    )
    x = points(1000, 2)
    X, Y = x[0], x[1]
    reference = (
        np.exp(-((X - 0.3) ** 2 + (Y - 0.6) ** 2) / (2 * 0.1**2))
        + 0.5 * np.sin(np.pi * X) * np.cos(2 * np.pi * Y)
        + np.sqrt(np.abs(X - Y))
        + np.log(1 + X)
        + np.tanh(Y)
        - np.arctan2(Y, X + 1)
        + np.minimum(np.minimum(X, Y), 0.4)
        - np.maximum(X, 0.5)
        + np.exp(-Y)
        + np.tan(0.3 * X)
        + np.sinh(Y) / np.cosh(X)
        + np.arcsin(0.5 * X)
        + np.arccos(Y / 2)
        + np.arctan(X * Y)
    )
    values = expression(text)(x)
    assert values.shape == (1000,) and values.dtype == np.float64
    np.testing.assert_allclose(values, reference, rtol=1e-13, atol=1e-13)


def test_expression_3d_uses_z_and_2d_z_is_zero():
    x = points(200, 3, seed=1)
    np.testing.assert_allclose(expression("x*y + z**2", gdim=3)(x), x[0] * x[1] + x[2] ** 2)
    x2 = points(200, 2, seed=1)
    np.testing.assert_allclose(expression("x*y + z + 1", gdim=2)(x2), x2[0] * x2[1] + 1)
    # (gdim, N) input is accepted too
    np.testing.assert_allclose(expression("x - y")(x2[:2]), x2[0] - x2[1])


def test_expression_square_is_x_times_x_and_other_powers_are_pow():
    """``a**2`` takes the np.square path: bitwise x*x; ``**2.5``, ``**3``, ``**(1+1)`` do not."""
    x = points(500, 2, seed=3) - 0.5
    np.testing.assert_array_equal(expression("(x - y)**2")(x), (x[0] - x[1]) * (x[0] - x[1]))
    np.testing.assert_array_equal(expression("x**2.0")(x), x[0] * x[0])
    np.testing.assert_array_equal(expression("x**3")(x), np.power(x[0], 3))
    np.testing.assert_array_equal(expression("abs(x)**2.5")(x), np.power(np.abs(x[0]), 2.5))
    np.testing.assert_array_equal(expression("y**(1 + 1)")(x), np.power(x[1], 2.0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-x**2", -9.0),
        ("(-x)**2", 9.0),
        ("2**3**2", 512.0),
        ("(2**3)**2", 64.0),
        ("-2**2", -4.0),
        ("2**-1", 0.5),
        ("1 - 2 - 3", -4.0),
        ("8/4/2", 1.0),
        ("2 + 3*4", 14.0),
        ("+x - -x", 6.0),
        ("x*y**2/2", 3.0 * 4.0 / 2.0),
        ("e", np.e),
        ("pi", np.pi),
    ],
)
def test_operator_precedence(text, expected):
    x = np.array([[3.0, 3.0], [2.0, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(expression(text)(x), [expected, expected], rtol=1e-15)


@pytest.mark.parametrize("text", ["1", "2.5", "pi/2", "max(1, 2)"])
def test_constant_expression_broadcasts(text):
    values = expression(text)(points(7, 2))
    assert values.shape == (7,)
    assert np.all(values == values[0])
    assert np.isclose(values[0], {"1": 1.0, "2.5": 2.5, "pi/2": np.pi / 2, "max(1, 2)": 2.0}[text])


def test_uniform_and_floor():
    x = points(5, 3)
    ev = make_evaluator(
        {"kind": "uniform", "floor": 0.25, "expr": "", "field": "target"}, gdim=3, bbox=UNIT3
    )
    np.testing.assert_array_equal(ev(x), np.full(5, 1.25))
    ev = make_evaluator({"kind": "expression", "expr": "x", "floor": 0.5}, gdim=2, bbox=UNIT2)
    np.testing.assert_allclose(ev(points(5, 2)), points(5, 2)[0] + 0.5)


def test_parameters_and_call_time_override():
    ev = expression("a*x + theta**2", a=2.0, theta=0.5)
    assert ev.parameter_names == {"a", "theta"}
    x = points(50, 2)
    np.testing.assert_allclose(ev(x), 2 * x[0] + 0.25)
    np.testing.assert_allclose(ev(x, {"theta": 3}), 2 * x[0] + 9.0)
    np.testing.assert_allclose(ev(x, {"theta": 3, "a": -1.0}), -x[0] + 9.0)
    np.testing.assert_allclose(ev(x), 2 * x[0] + 0.25)  # the override did not stick


def test_missing_parameter_is_named():
    ev = expression("x + theta*y", a=1.0)
    assert ev.parameter_names == {"theta"}
    with pytest.raises(ValueError, match=r"'theta'.*no value.*x, y, z"):
        ev(points(3, 2))
    np.testing.assert_allclose(
        ev(points(3, 2), {"theta": 2.0}), points(3, 2)[0] + 2 * points(3, 2)[1]
    )


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"x": 1.0}, "clashes"),
        ({"exp": 1.0}, "clashes"),
        ({"_a": 1.0}, "not allowed"),
        ({"a": "1"}, "real number"),
        ({"a": True}, "real number"),
        ({"a": float("nan")}, "finite"),
    ],
)
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        make_evaluator({"kind": "expression", "expr": "x", "params": params}, gdim=2, bbox=UNIT2)
    ev = expression("x + a", a=1.0)
    with pytest.raises(ValueError, match=match):
        ev(points(3, 2), params)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("x +", "malformed expression 'x \\+'"),
        ("(x", "malformed"),
        ("", "empty"),
        ("x.__class__", "Attribute is not allowed"),
        ("__import__('os').system('echo hacked')", "Attribute is not allowed"),
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__", "unknown name '__import__'"),
        ("lambda: 1", "Lambda"),
        ("x[0]", "Subscript"),
        ("[t for t in (1, 2)]", "ListComp"),
        ("sum(t for t in (1, 2))", "unknown function 'sum'"),
        ("foo(x)", "unknown function 'foo'.*exp"),
        ("exp(x, y)", "takes 1 argument"),
        ("atan2(x)", "takes 2 arguments"),
        ("min(x)", "at least 2"),
        ("exp(x=1)", "positional"),
        ("exp(*x)", "positional"),
        ("exp", "must be called"),
        ("'abc'", "not a real number"),
        ("1j", "not a real number"),
        ("True", "not a real number"),
        ("x if y else z", "IfExp"),
        ("x < y", "Compare"),
        ("x and y", "BoolOp"),
        ("x ^ 2", "use \\*\\* for powers"),
        ("x % 2", "Mod"),
        ("~x", "Invert"),
        ("(z := 1)", "NamedExpr"),
        ("x.real(1)", "named functions"),
        ("(" * 1000 + "x" + ")" * 1000, "malformed.*nested"),
        ("1" * 20000, "longer than"),
    ],
)
def test_forbidden_expressions(text, match):
    with pytest.raises(ValueError, match=match):
        Expression(text)
    with pytest.raises(ValueError):
        make_evaluator({"kind": "expression", "expr": text}, gdim=2, bbox=UNIT2)


def test_expression_never_runs_code(shared_dir):
    target = shared_dir / f"pwned-{COMM.rank}"
    text = f"__import__('pathlib').Path('{target}').touch()"
    with pytest.raises(ValueError):
        Expression(text)
    assert not target.exists()


def test_expression_ieee_and_huge_numbers():
    x = np.array([[0.0, -1.0], [0.0, 0.0], [0.0, 0.0]])
    values = expression("log(x)")(x)
    assert values[0] == -np.inf and np.isnan(values[1])
    assert expression("9**9**9")(x)[0] == np.inf  # float arithmetic: no huge integer power
    with pytest.raises(ValueError, match="too large"):
        Expression("1" + "0" * 400)


def test_expression_vectorised_on_a_million_points():
    x = points(10**6, 2, seed=3)
    values = expression("exp(-((x-0.3)**2 + (y-0.5)**2)/0.02) + sin(pi*x)*cos(y)")(x)
    reference = np.exp(-((x[0] - 0.3) ** 2 + (x[1] - 0.5) ** 2) / 0.02) + np.sin(
        np.pi * x[0]
    ) * np.cos(x[1])
    np.testing.assert_allclose(values, reference, rtol=1e-14)


# ------------------------------------------------------------------------------- mixtures


@pytest.mark.parametrize("gdim", [2, 3])
def test_gaussian_mixture_matches_scipy(gdim):
    rng = np.random.default_rng(4)
    a = rng.normal(size=(gdim, gdim))
    full = (a @ a.T + gdim * np.eye(gdim)) * 0.01
    section = {
        "kind": "gaussian_mixture",
        "weights": [0.7, 0.3],
        "means": [[0.3] * gdim, [0.6, 0.7, 0.2][:gdim]],
        "covariances": [full.tolist(), 0.02],
        "floor": 0.1,
    }
    ev = make_evaluator(section, gdim=gdim, bbox=UNIT2 if gdim == 2 else UNIT3)
    x = points(500, gdim, seed=5)
    reference = (
        0.7 * multivariate_normal(section["means"][0], full).pdf(x[:gdim].T)
        + 0.3 * multivariate_normal(section["means"][1], 0.02 * np.eye(gdim)).pdf(x[:gdim].T)
        + 0.1
    )
    np.testing.assert_allclose(ev(x), reference, rtol=1e-12)


@pytest.mark.parametrize(
    ("weights", "means", "covariances", "match"),
    [
        ([1.0, 1.0], [[0.5, 0.5]], [0.1], "same length"),
        ([], [], [], "at least one"),
        ([1.0], [[0.5, 0.5, 0.5]], [0.1], "list of 2 numbers"),
        ([1.0], [[0.5, 0.5]], [[[1.0, 0.0]]], "2x2"),
        ([1.0], [[0.5, 0.5]], [[[1.0, 0.5], [0.0, 1.0]]], "symmetric"),
        ([1.0], [[0.5, 0.5]], [[[1.0, 2.0], [2.0, 1.0]]], "positive definite"),
        ([1.0], [[0.5, 0.5]], [-0.1], "must be > 0"),
        ([-1.0], [[0.5, 0.5]], [0.1], "must be >= 0"),
        (["1"], [[0.5, 0.5]], [0.1], "real number"),
        ([1.0], [[0.5, "a"]], [0.1], "real number"),
    ],
)
def test_gaussian_mixture_validation(weights, means, covariances, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(weights, means, covariances, 2)


# ------------------------------------------------------------------------------- images


def bilinear(x, y):
    """A bilinear function with integer values 10..246 at the integer nodes of [0,4]x[0,3]."""
    return 10 + 20 * x + 40 * y + 3 * x * y


def test_png_orientation_and_bilinear_interpolation(shared_dir):
    nx, ny = 5, 4
    cols, rows = np.meshgrid(np.arange(nx), np.arange(ny))
    pixels = bilinear(cols, ny - 1 - rows).astype(np.uint8)  # row 0 = top = y max
    path = shared_dir / "grad.png"
    write_on_root(lambda: Image.fromarray(pixels, mode="L").save(path))
    bbox = (np.array([0.0, 0.0]), np.array([4.0, 3.0]))
    ev = make_evaluator({"kind": "image", "path": str(path)}, gdim=2, bbox=bbox)
    # the top-left pixel is the corner (x min, y max)
    top_left = ev(np.array([[0.0], [3.0], [0.0]]))[0]
    assert top_left == pytest.approx(pixels[0, 0] / 255.0) and top_left == pytest.approx(130 / 255)
    rng = np.random.default_rng(6)
    x = np.zeros((3, 300))
    x[0], x[1] = rng.uniform(0, 4, 300), rng.uniform(0, 3, 300)
    np.testing.assert_allclose(ev(x), bilinear(x[0], x[1]) / 255.0, rtol=1e-12)


def test_png_rgb_luminance_and_16bit(shared_dir):
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    rgb[0, 0] = (255, 0, 0)
    deep = (np.arange(6, dtype=np.uint16).reshape(2, 3) * 13000).astype(np.uint16)

    def write():
        Image.fromarray(rgb, mode="RGB").save(shared_dir / "rgb.png")
        Image.fromarray(deep).save(shared_dir / "deep.png")

    write_on_root(write)
    bbox = (np.array([0.0, 0.0]), np.array([2.0, 1.0]))
    ev = make_evaluator({"kind": "image", "path": str(shared_dir / "rgb.png")}, gdim=2, bbox=bbox)
    nodes = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    luma = lambda r, g, b: (0.299 * r + 0.587 * g + 0.114 * b) / 255  # noqa: E731
    np.testing.assert_allclose(
        ev(nodes), [luma(255, 0, 0), luma(200, 100, 50), luma(200, 100, 50)], atol=1 / 255
    )
    ev = make_evaluator({"kind": "image", "path": str(shared_dir / "deep.png")}, gdim=2, bbox=bbox)
    corners = np.array([[0.0, 2.0, 0.0, 2.0], [1.0, 1.0, 0.0, 0.0], [0, 0, 0, 0]])
    np.testing.assert_allclose(ev(corners), deep[[0, 0, 1, 1], [0, 2, 0, 2]] / 65535.0)


@pytest.mark.parametrize("gdim", [2, 3])
def test_npy_image_index_order(shared_dir, gdim):
    shape = (5, 4, 3)[:gdim]
    lo, hi = np.array([-1.0, 0.0, 2.0])[:gdim], np.array([1.0, 3.0, 4.0])[:gdim]
    axes = [np.linspace(lo[k], hi[k], shape[k]) for k in range(gdim)]
    mesh = np.meshgrid(*axes, indexing="ij")

    def f(*c):  # multilinear, so interpolation is exact
        out = 1.0 + 2 * c[0] - 3 * c[1] + c[0] * c[1]
        return out + (0.5 * c[2] * c[0] if len(c) == 3 else 0.0)

    path = shared_dir / f"img{gdim}.npy"
    write_on_root(lambda: np.save(path, f(*mesh)))
    section = {"kind": "image", "path": str(path), "floor": 0.5}
    with pytest.raises(ValueError, match="set image_extent"):  # pixels 0.5 x 1 (x 1): stretched
        make_evaluator(section, gdim=gdim, bbox=(lo, hi))
    extent = np.column_stack([lo, hi]).ravel().tolist()  # [x0, x1, y0, y1(, z0, z1)]
    ev = make_evaluator({**section, "image_extent": extent}, gdim=gdim, bbox=(lo, hi))
    rng = np.random.default_rng(7)
    x = np.zeros((3, 400))
    x[:gdim] = rng.uniform(lo[:, None], hi[:, None], size=(gdim, 400))
    np.testing.assert_allclose(ev(x), f(*x[:gdim]) + 0.5, rtol=1e-12, atol=1e-12)


def test_image_aspect_ratio_and_extent(shared_dir):
    """The box must match the image's aspect (within a pixel) unless image_extent places it."""
    path = shared_dir / "wide.npy"
    g = np.add.outer(np.linspace(0, 1, 101), np.linspace(0, 2, 51))  # x + y on 101 x 51 nodes
    write_on_root(lambda: np.save(path, g))
    section = {"kind": "image", "path": str(path)}
    wide = (np.zeros(2), np.array([2.0, 1.0]))
    make_evaluator(section, gdim=2, bbox=wide)  # 100 x 50 spacings on 2 x 1: square pixels
    make_evaluator(section, gdim=2, bbox=(np.zeros(2), np.array([2.0, 1.0 + 1 / 50])))  # 1 px
    with pytest.raises(ValueError, match=r"101 x 51 pixels .* mesh box is 1 x 1 .* image_extent"):
        make_evaluator(section, gdim=2, bbox=UNIT2)
    # on the unit square, placed in the left half: 0 outside, the array's values inside
    ev = make_evaluator(
        {**section, "image_extent": [0.0, 0.5, 0.25, 0.75], "floor": 0.1}, gdim=2, bbox=UNIT2
    )
    x = np.array([[0.0, 0.5, 0.25, 0.75, 0.3], [0.25, 0.75, 0.5, 0.5, 0.9], [0, 0, 0, 0, 0]])
    # node (i, j) of the array holds i/100 + 2 j/50; x in [0, 0.5] maps i = 200 x, y: j = 100(y-1/4)
    expect = [0.1 + 0.0, 0.1 + 1.0 + 2.0, 0.1 + 0.5 + 1.0, 0.1, 0.1]
    np.testing.assert_allclose(ev(x), expect, rtol=1e-12, atol=1e-12)
    for bad in ([0, 1, 0], [0, 1, 1, 0], ["a", 1, 0, 1], [0, np.inf, 0, 1]):
        with pytest.raises(ValueError, match="image_extent"):
            make_evaluator({**section, "image_extent": bad}, gdim=2, bbox=UNIT2)


def test_image_errors(shared_dir):
    missing = shared_dir / "missing.png"
    with pytest.raises(RuntimeError, match="missing.png") as info:
        make_evaluator({"kind": "image", "path": str(missing)}, gdim=2, bbox=UNIT2)
    assert info.value.__cause__ is not None
    with pytest.raises(RuntimeError, match="missing.npy") as info:
        make_evaluator(
            {"kind": "image", "path": str(shared_dir / "missing.npy")}, gdim=2, bbox=UNIT2
        )
    assert info.value.__cause__ is not None

    def write():
        (shared_dir / "corrupt.png").write_bytes(b"not a png at all")
        (shared_dir / "corrupt.npy").write_bytes(b"not an npy either")
        np.save(shared_dir / "flat.npy", np.ones((4, 4)))
        np.save(shared_dir / "thin.npy", np.ones((1, 4)))
        Image.fromarray(np.zeros((3, 3), np.uint8), mode="L").save(shared_dir / "ok.png")

    write_on_root(write)
    for name in ("corrupt.png", "corrupt.npy"):
        with pytest.raises(RuntimeError, match=name) as info:
            make_evaluator({"kind": "image", "path": str(shared_dir / name)}, gdim=2, bbox=UNIT2)
        assert info.value.__cause__ is not None
    with pytest.raises(ValueError, match="3D numeric array"):
        make_evaluator({"kind": "image", "path": str(shared_dir / "flat.npy")}, gdim=3, bbox=UNIT3)
    with pytest.raises(ValueError, match=">= 2 samples"):
        make_evaluator({"kind": "image", "path": str(shared_dir / "thin.npy")}, gdim=2, bbox=UNIT2)
    with pytest.raises(ValueError, match="gdim=3"):
        make_evaluator({"kind": "image", "path": str(shared_dir / "ok.png")}, gdim=3, bbox=UNIT3)
    with pytest.raises(ValueError, match="needs a file"):
        make_evaluator({"kind": "image", "path": ""}, gdim=2, bbox=UNIT2)


# ------------------------------------------------------------------------------- samples


@pytest.mark.parametrize("gdim", [2, 3])
def test_kde_scott_matches_scipy(gdim):
    rng = np.random.default_rng(8)
    a = rng.normal(size=(gdim, gdim)) * 0.1
    samples = rng.normal(size=(3000, gdim)) @ a.T + 0.5  # correlated
    x = points(400, gdim, seed=9)[:gdim]
    reference = gaussian_kde(samples.T)(x)
    bbox = UNIT2 if gdim == 2 else UNIT3
    tolerance = {"direct": 1e-12, "tree": 1e-5, "grid": 3e-3}
    for method, tol in tolerance.items():
        kde = GaussianKDE(samples, bbox=bbox, method=method)
        np.testing.assert_allclose(kde.covariance, gaussian_kde(samples.T).covariance)
        error = np.max(np.abs(kde(x) - reference)) / reference.max()
        assert error < tol, (method, error)


def test_kde_fixed_bandwidth_matches_direct_sum():
    rng = np.random.default_rng(10)
    samples = rng.uniform(0.2, 0.8, size=(500, 2))
    h = 0.05
    x = points(300, 2, seed=11)[:2]
    x[:, 0] = samples[0]  # a point exactly on a sample (distance 0)
    diff = x.T[:, None, :] - samples[None, :, :]
    reference = np.exp(-0.5 * (diff**2).sum(-1) / h**2).mean(1) / (2 * np.pi * h**2)
    for method, tol in {"direct": 1e-12, "tree": 1e-5, "grid": 3e-3}.items():
        kde = GaussianKDE(samples, bandwidth=h, bbox=UNIT2, method=method)
        error = np.max(np.abs(kde(x) - reference)) / reference.max()
        assert error < tol, (method, error)


def test_samples_evaluator_from_file(shared_dir):
    rng = np.random.default_rng(12)
    samples = rng.normal([0.4, 0.6], [0.15, 0.1], size=(20000, 2))
    path = shared_dir / "samples.npy"
    write_on_root(lambda: np.save(path, samples))
    ev = make_evaluator(
        {"kind": "samples", "path": str(path), "bandwidth": 0.0, "floor": 0.01}, gdim=2, bbox=UNIT2
    )
    x = points(2000, 2, seed=13)  # 2000 x 20000 pairs: the grid method
    reference = gaussian_kde(samples.T)(x[:2]) + 0.01
    assert np.max(np.abs(ev(x) - reference)) < 2e-3 * reference.max()


def test_samples_fast_on_a_million_points():
    rng = np.random.default_rng(14)
    samples = rng.normal(0.5, 0.2, size=(10**4, 2))
    kde = GaussianKDE(samples, bbox=UNIT2)
    x = points(10**6, 2, seed=15)[:2]
    values = kde(x)
    check = slice(0, 500)
    reference = gaussian_kde(samples.T)(x[:, check])
    assert np.max(np.abs(values[check] - reference)) < 2e-3 * reference.max()


def test_samples_errors(shared_dir):
    def write():
        np.save(shared_dir / "flat.npy", np.ones(10))
        np.save(shared_dir / "three.npy", np.ones((10, 3)))
        np.save(shared_dir / "nan.npy", np.array([[0.1, np.nan], [0.2, 0.3], [0.5, 0.5]]))
        np.save(shared_dir / "line.npy", np.outer(np.linspace(0, 1, 10), [1.0, 1.0]))
        np.save(shared_dir / "ok.npy", np.random.default_rng(0).uniform(size=(10, 2)))

    write_on_root(write)

    def make(name, **extra):
        section = {"kind": "samples", "path": str(shared_dir / name), **extra}
        return make_evaluator(section, gdim=2, bbox=UNIT2)

    with pytest.raises(ValueError, match=r"\(M, 2\)"):
        make("flat.npy")
    with pytest.raises(ValueError, match=r"\(10, 3\)"):
        make("three.npy")
    with pytest.raises(ValueError, match="NaN"):
        make("nan.npy")
    with pytest.raises(ValueError, match="singular"):
        make("line.npy")
    make("line.npy", bandwidth=0.1)  # a fixed bandwidth does not need the covariance
    with pytest.raises(ValueError, match="-0.1"):
        make("ok.npy", bandwidth=-0.1)
    with pytest.raises(RuntimeError, match="missing.npy") as info:
        make("missing.npy")
    assert info.value.__cause__ is not None


# ------------------------------------------------------------------------------- make_evaluator


@pytest.mark.parametrize(
    ("section", "gdim", "bbox", "match"),
    [
        ({"kind": "function"}, 2, UNIT2, "'function'"),
        ({"kind": "banana"}, 2, UNIT2, "'banana'"),
        ({"kind": "uniform", "floor": -1.0}, 2, UNIT2, "-1.0"),
        ({"kind": "uniform"}, 4, UNIT2, "gdim"),
        ({"kind": "uniform"}, 2, UNIT3, "length gdim=2"),
        ({"kind": "uniform"}, 2, (np.ones(2), np.zeros(2)), "lower < upper"),
    ],
)
def test_make_evaluator_errors(section, gdim, bbox, match):
    with pytest.raises(ValueError, match=match):
        make_evaluator(section, gdim=gdim, bbox=bbox)


def test_evaluator_rejects_bad_point_shape():
    ev = make_evaluator({"kind": "uniform"}, gdim=2, bbox=UNIT2)
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        ev(np.zeros((4, 5)))


# ------------------------------------------------------------------------------- check_values


def local_data(n=4):
    """This rank's points (distinct per rank) and positive values."""
    coords = np.zeros((n, 3))
    coords[:, 0] = np.linspace(0.0, 0.3, n) + 0.5 * COMM.rank
    coords[:, 1] = 0.75
    return np.full(n, 2.0), coords


def raise_everywhere(values, coords, **kwargs):
    """Call check_values; return the message, after checking every rank got the same one."""
    try:
        check_values(values, coords, comm=COMM, **kwargs)
        message = None
    except ValueError as err:
        message = str(err)
    messages = COMM.allgather(message)
    assert all(m == messages[0] for m in messages), messages
    return message


def test_check_values_passes():
    values, coords = local_data()
    assert raise_everywhere(values, coords, role="source", min_density=1e-6) is None


def test_check_values_nan_on_last_rank_only():
    values, coords = local_data()
    if COMM.rank == COMM.size - 1:
        values[2], coords[2, :2] = np.nan, (0.25, 0.125)
        values[3] = np.inf
    message = raise_everywhere(values, coords, role="target", min_density=1e-6)
    assert message is not None
    assert message.startswith("target density has NaN at (0.25, 0.125)")
    assert "2 non-finite" in message


def test_check_values_inf():
    values, coords = local_data()
    if COMM.rank == COMM.size - 1:
        values[0] = -np.inf
    message = raise_everywhere(values, coords, role="source", min_density=0.0)
    assert message is not None and message.startswith("source density has -inf at (")


def test_check_values_negative_on_last_rank_only():
    values, coords = local_data()
    if COMM.rank == COMM.size - 1:
        values[1], coords[1, :2] = -0.12, (0.5, 0.25)
        values[2] = -0.05
    message = raise_everywhere(values, coords, role="source", min_density=1e-6)
    assert message is not None
    assert message.startswith(
        "source density has minimum -0.12 at (0.5, 0.25), below min_density 1e-06"
    )


def test_check_values_global_minimum_across_ranks():
    values, coords = local_data()
    values[0] = 0.1 - 0.01 * COMM.rank  # rank-dependent minimum: the last rank's is lowest
    message = raise_everywhere(values, coords, role="target", min_density=0.5)
    lowest = 0.1 - 0.01 * (COMM.size - 1)
    x0 = 0.5 * (COMM.size - 1)
    assert message == (
        f"target density has minimum {lowest:.6g} at ({x0:.6g}, 0.75), below min_density 0.5;"
        " raise 'floor' or fix the density"
    )


def test_check_values_3d_location_and_empty_rank():
    values, coords = local_data()
    coords[:, 2] = 0.5
    if COMM.rank == 0 and COMM.size > 1:
        values, coords = values[:0], coords[:0]  # rank 0 owns no points
    if COMM.rank == COMM.size - 1:
        values[-1], coords[-1] = 0.0, (0.1, 0.2, 0.3)
    message = raise_everywhere(values, coords, role="target", min_density=1e-6)
    assert message is not None and "minimum 0 at (0.1, 0.2, 0.3)" in message


def test_check_values_bad_arguments_are_collective():
    values, coords = local_data()
    if COMM.rank == COMM.size - 1:
        coords = coords[:, :1].ravel()  # wrong shape on one rank only
    message = raise_everywhere(values, coords, role="target", min_density=1e-6)
    assert message is not None and "coords must have shape" in message


def test_check_values_tied_minimum_is_partition_independent():
    # A minimum tied along x = 0 whose values and coordinates differ in the last bits, spread
    # over the ranks in reverse order: the message must name (0, 0) on any rank count.
    n = 5
    y = (COMM.size - 1 - COMM.rank + np.arange(n) / n) / COMM.size
    coords = np.zeros((n, 3))
    coords[:, 0] = 5.38557e-18 * (1 + COMM.rank)
    coords[:, 1] = y + (1e-17 if COMM.rank == COMM.size - 1 else 0.0)
    values = -0.5 + coords[:, 0] + 1e-17 * np.arange(n)
    message = raise_everywhere(values, coords, role="target", min_density=1e-6)
    assert message is not None
    assert "minimum -0.5 at (0, 0), below" in message, message


def test_format_point_scale_relative():
    from beckmann._mpi import format_point

    assert format_point([5.38557e-18, 5.38557e-18]) == "(0, 0)"
    assert format_point([1.0000005, 0.5]) == "(1.0000005, 0.5)"
    assert format_point([2e-7, 0.0], scale=1e-6) == "(0.0000002, 0)"
    # far outside (a hostile probe point): no overflow, a short number
    assert format_point([1e308, -3e7, float("inf")]) == "(1e+308, -3e+07, inf)"


# --------------------------------------------------------------------------- on a mesh


def unit_square_space(n, k):
    from dolfinx import fem, mesh

    msh = mesh.create_unit_square(COMM, n, n)
    return fem.functionspace(msh, ("Lagrange", k))


def l2_error(u, exact):
    import ufl
    from dolfinx import fem

    dx = ufl.dx(metadata={"quadrature_degree": 10})
    local = fem.assemble_scalar(fem.form((u - exact) ** 2 * dx))
    return float(np.sqrt(COMM.allreduce(local, op=MPI.SUM)))


def test_quadrature_degree_default_and_bounds():
    from beckmann.density.discrete import resolve_quadrature_degree

    assert [resolve_quadrature_degree(-1, k) for k in (1, 2, 3)] == [4, 6, 8]
    assert [resolve_quadrature_degree(-1, k, smooth=True) for k in (1, 2, 3)] == [2, 4, 6]
    assert resolve_quadrature_degree(5, 2, smooth=True) == 5
    assert resolve_quadrature_degree(5, 2) == 5
    for bad in (0, 31, -2, True, 2.0):
        with pytest.raises(ValueError, match="quadrature_degree"):
            resolve_quadrature_degree(bad, 1)


@pytest.mark.parametrize(
    ("section", "smooth"),
    [
        ({"kind": "uniform"}, True),
        ({"kind": "gaussian_mixture"}, True),
        ({"kind": "expression", "expr": "1 + 0.5*cos(pi*x)*cos(pi*y)"}, True),
        ({"kind": "expression", "expr": "0.2 + exp(-((x - a)**2 + y**2) / s)"}, True),
        ({"kind": "expression", "expr": "1 + abs(x - 0.3)"}, False),
        ({"kind": "expression", "expr": "1 + max(x, y)"}, False),
        ({"kind": "expression", "expr": "1 + sqrt(x*x + y*y)"}, False),
        ({"kind": "expression", "expr": "1 + ((x-0.5)**2 + (y-0.5)**2)**0.25"}, False),
        ({"kind": "expression", "expr": "1 + x**(1/3)"}, False),
        ({"kind": "expression", "expr": "1 + ("}, False),  # does not parse: the safe choice
        ({"kind": "image", "path": "a.png"}, False),
        ({"kind": "samples", "path": "a.csv"}, False),
        ({"kind": "function", "path": "run"}, False),
    ],
)
def test_smooth_density_decides_the_default_rule(section, smooth):
    from beckmann.density.discrete import smooth_density

    assert smooth_density(section) is smooth


def test_quadrature_rhs_gains_on_the_nodal_interpolant():
    """φ's L² error against the exact φ, P1: quadrature right-hand side vs nodal interpolant.

    p0 = 1, p1 = 1 + ½ cos πx cos πy: Δφ = p0 − p1 gives φ = cos πx cos πy / (4π²). Both
    right-hand sides converge at rate 2; the quadrature one is 1.6x more accurate (measured
    0.617 of the nodal error at n = 8 ... 64). The masses by the quadrature tend to the exact 1
    at O(h⁴).
    """
    import ufl
    from dolfinx import fem

    from beckmann.density.discrete import DensityPoints, QuadratureRHS
    from beckmann.poisson import NeumannPoisson

    ev0 = make_evaluator({"kind": "uniform"}, gdim=2, bbox=UNIT2)
    EXPR = "1 + 0.5*cos(pi*x)*cos(pi*y)"  # noqa: N806
    ev1 = expression(EXPR)
    ns, nodal_err, quad_err = (8, 16, 32), [], []
    for n in ns:
        V = unit_square_space(n, 1)
        pts = DensityPoints(V, -1, ({"kind": "uniform"}, {"kind": "expression", "expr": EXPR}))
        assert pts.degree == 2  # smooth densities: 2k
        assert DensityPoints(V).degree == 4  # nothing known about them: 2k + 2
        d0 = pts.evaluate(ev0, role="source", min_density=0.0)
        d1 = pts.evaluate(ev1, role="target", min_density=0.0)
        # the default rule (degree 2) errs by O(h⁴) on the mass: 0.0102 / n⁴ measured
        assert abs(d1.mass - 1.0) < 0.012 / n**4 and abs(d0.mass - 1.0) < 1e-12
        P = NeumannPoisson(V, method="mumps", rtol=1e-12)
        phi_q = P.solve_vector(QuadratureRHS(pts).assemble(d0, d1))
        f = fem.Function(V)
        f.x.array[:] = d1.p.x.array - d0.p.x.array
        phi_n = P.solve(f)
        x = ufl.SpatialCoordinate(V.mesh)
        exact = ufl.cos(ufl.pi * x[0]) * ufl.cos(ufl.pi * x[1]) / (4 * ufl.pi**2)
        nodal_err.append(l2_error(phi_n, exact))
        quad_err.append(l2_error(phi_q, exact))
        P.destroy()
    h = 1.0 / np.array(ns)
    for errs in (nodal_err, quad_err):
        rate = np.polyfit(np.log(h), np.log(errs), 1)[0]
        assert abs(rate - 2.0) < 0.1, rate
    ratio = np.array(quad_err) / np.array(nodal_err)
    assert np.all(ratio < 0.7), ratio


def test_quadrature_rhs_rate_p2():
    """P2 with the quadrature right-hand side keeps the optimal L² rate 3."""
    import ufl

    from beckmann.density.discrete import DensityPoints, QuadratureRHS
    from beckmann.poisson import NeumannPoisson

    ev0 = make_evaluator({"kind": "uniform"}, gdim=2, bbox=UNIT2)
    ev1 = expression("1 + 0.5*cos(pi*x)*cos(pi*y)")
    ns, errs = (4, 8, 16), []
    for n in ns:
        V = unit_square_space(n, 2)
        pts = DensityPoints(V)
        d0 = pts.evaluate(ev0, role="source", min_density=0.0)
        d1 = pts.evaluate(ev1, role="target", min_density=0.0)
        P = NeumannPoisson(V, method="mumps", rtol=1e-12)
        phi = P.solve_vector(QuadratureRHS(pts).assemble(d0, d1))
        x = ufl.SpatialCoordinate(V.mesh)
        errs.append(
            l2_error(phi, ufl.cos(ufl.pi * x[0]) * ufl.cos(ufl.pi * x[1]) / (4 * ufl.pi**2))
        )
        P.destroy()
    rate = np.polyfit(np.log(1.0 / np.array(ns)), np.log(errs), 1)[0]
    assert abs(rate - 3.0) < 0.2, rate


def brute_minimum(u, per_cell=200, seed=0):
    """Minimum of ``u`` at random points of every owned cell, by DOLFINx's own evaluation."""
    msh = u.function_space.mesh
    ncells = msh.topology.index_map(2).size_local
    rng = np.random.default_rng(seed + COMM.rank)
    lam = rng.dirichlet(np.ones(3), size=per_cell)
    nodes = msh.geometry.dofmaps[0][:ncells, :3]
    verts = msh.geometry.x[nodes]  # (cells, 3, 3)
    x = np.einsum("pl,cld->cpd", lam, verts).reshape(-1, 3)
    cells = np.repeat(np.arange(ncells, dtype=np.int32), per_cell)
    values = u.eval(x, cells)[:, 0] if ncells else np.zeros(0)
    local = float(values.min()) if values.size else np.inf
    return COMM.allreduce(local, op=MPI.MIN)


BUMP = {"kind": "expression", "expr": "exp(-((x-0.5)**2 + (y-0.5)**2)/0.002)", "floor": 1e-4}


def test_positivity_is_certified_on_cells_not_only_nodes():
    """The issue's case: a narrow bump, floor 1e-4, P2 on n = 16.

    Its nodal values are >= 1e-4, yet its P2 interpolant dips to about -0.012 between the
    nodes: a brute-force search with DOLFINx's own point evaluation finds the dip, and the
    message names a value no lower than that minimum and a point in the dip.
    """
    import re

    from dolfinx import fem

    from beckmann.density.discrete import DensityPoints

    V = unit_square_space(16, 2)
    pts = DensityPoints(V)
    ev = make_evaluator(BUMP, gdim=2, bbox=UNIT2)
    p = fem.Function(V)
    p.x.array[:] = ev(pts.nodes)
    assert COMM.allreduce(p.x.array.min(), op=MPI.MIN) >= 1e-4  # the nodal check passes
    brute = brute_minimum(p)
    assert brute < -0.01
    with pytest.raises(ValueError, match="finer mesh") as info:
        pts.evaluate(ev, role="target", min_density=1e-6)
    message = str(info.value)
    found = re.search(r"P2 interpolant reaches (\S+) at \((\S+), (\S+)\)", message)
    assert found, message
    value, point = float(found[1]), np.array([float(found[2]), float(found[3])])
    assert brute - 1e-3 <= value < -0.01  # a true value of the interpolant, near the minimum
    x = np.array([[*point, 0.0]])
    # the named point is in the dip: evaluate there with DOLFINx (on the rank that has it)
    from dolfinx import geometry

    tree = geometry.bb_tree(V.mesh, 2)
    cells = geometry.compute_colliding_cells(V.mesh, geometry.compute_collisions_points(tree, x), x)
    local = p.eval(x, cells.links(0)[:1])[0] if len(cells.links(0)) else np.inf
    assert abs(COMM.allreduce(float(local), op=MPI.MIN) - value) < 1e-5 * abs(value)  # 6 digits
    # P1 on the same mesh: the coefficients are the nodal values, so it passes
    V1 = unit_square_space(16, 1)
    d = DensityPoints(V1).evaluate(ev, role="target", min_density=1e-6)
    assert abs(d.cell_minimum - 1e-4) < 1e-12


def test_certified_bound_is_a_lower_bound():
    """A wider bump passes on P2; the certified bound lies below the brute-force minimum."""
    from dolfinx import fem

    from beckmann.density.discrete import DensityPoints

    V = unit_square_space(16, 2)
    pts = DensityPoints(V)
    section = {**BUMP, "expr": "exp(-((x-0.5)**2 + (y-0.5)**2)/0.05)"}
    ev = make_evaluator(section, gdim=2, bbox=UNIT2)
    d = pts.evaluate(ev, role="target", min_density=1e-6)
    raw = fem.Function(V)
    raw.x.array[:] = ev(pts.nodes)
    bound = pts.certify(raw, role="target", min_density=1e-6)
    assert bound == d.cell_minimum
    brute = brute_minimum(raw)
    nodal = COMM.allreduce(raw.x.array.min(), op=MPI.MIN)
    assert 1e-6 <= bound <= min(brute, nodal)
    assert bound > 0.5 * min(brute, nodal)  # and not a loose one


@pytest.mark.parametrize(("cell", "k"), [("triangle", 1), ("triangle", 3), ("tetrahedron", 2)])
def test_quadrature_points_and_cell_values_match_dolfinx(cell, k):
    """The points computed from the vertices are DOLFINx's own; the dofmap gather is DG_k's.

    DensityPoints computes quadrature points in chunks from the cell vertices (not with
    ``tabulate_dof_coordinates``), and the certificate reads a cell's values through the
    Lagrange dofmap (not through an interpolation into DG_k): both must agree with DOLFINx.
    """
    from dolfinx import fem, mesh

    from beckmann.density.discrete import DensityPoints

    if cell == "triangle":
        msh = mesh.create_unit_square(COMM, 5, 4)
    else:
        msh = mesh.create_unit_cube(COMM, 3, 2, 2)
    V = fem.functionspace(msh, ("Lagrange", k))
    pts = DensityPoints(V)
    reference = pts.Q.tabulate_dof_coordinates().T
    np.testing.assert_allclose(pts.qpoints, reference, atol=1e-14)
    p = fem.Function(V)
    p.interpolate(lambda x: np.sin(3 * x[0]) + x[1] ** 2 - np.cos(2 * x[2]))
    dg = fem.functionspace(msh, ("DG", k))
    u = fem.Function(dg)
    u.interpolate(p)
    ncells = msh.topology.index_map(msh.topology.dim).size_local
    np.testing.assert_allclose(
        p.x.array[V.dofmap.list[:ncells]], u.x.array[dg.dofmap.list[:ncells]], atol=1e-13
    )
    # the mass by the cell Jacobians equals DOLFINx's assembly with the same rule
    q = fem.Function(pts.Q)
    gdim = msh.geometry.dim
    section = {"kind": "expression", "expr": "2 + sin(3*x)*y + z"}
    ev = make_evaluator(section, gdim=gdim, bbox=UNIT3 if gdim == 3 else UNIT2)
    pts.quadrature_values(ev, out=q.x.array)
    reference = COMM.allreduce(fem.assemble_scalar(fem.form(q * pts.dx)), op=MPI.SUM)
    assert pts.integrate(q) == pytest.approx(reference, rel=1e-13)


@pytest.mark.parametrize("shape", ["square", "disk", "cube", "surface"])
def test_cell_jacobians_columns_equal_the_block_route(shape):
    """|det J| from whole coordinate columns (planar triangles) = the per-block formula, bitwise.

    And both integrate 1 to the measure DOLFINx assembles (second route: its own Jacobians).
    """
    from dolfinx import fem, mesh

    from beckmann.density.discrete import DensityPoints, _affine_jacobians
    from beckmann.mesh import create_mesh

    if shape == "square":
        msh = mesh.create_unit_square(COMM, 7, 5)
    elif shape == "disk":
        msh = create_mesh({"kind": "disk", "h": 0.3}, COMM)
    elif shape == "cube":
        msh = mesh.create_unit_cube(COMM, 3, 2, 2)
    else:  # a tilted square in 3D: triangles off z = 0 take the block route
        import basix.ufl

        n = 4
        t = np.linspace(0.0, 1.0, n + 1)
        X, Y = np.meshgrid(t, t, indexing="xy")
        xg = np.stack([X.ravel(), 0.6 * Y.ravel(), 0.8 * Y.ravel()], axis=1)
        v0 = (np.arange(n)[None, :] + (n + 1) * np.arange(n)[:, None]).ravel()
        cells = np.concatenate([np.stack([v0, v0 + 1, v0 + n + 2], 1),
                                np.stack([v0, v0 + n + 1, v0 + n + 2], 1)])  # fmt: skip
        if COMM.rank > 0:  # rank 0 gives the mesh, DOLFINx distributes it
            xg, cells = xg[:0], cells[:0]
        el = basix.ufl.element("Lagrange", "triangle", 1, shape=(3,))
        msh = mesh.create_mesh(COMM, cells.astype(np.int64), el, xg)
    V = fem.functionspace(msh, ("Lagrange", 1))
    pts = DensityPoints(V)
    got = pts._cell_jacobians()
    x, v = msh.geometry.x, msh.geometry.dofmaps[0][: pts._ncells, : msh.topology.dim + 1]
    np.testing.assert_array_equal(got, _affine_jacobians(x[v]))
    one = fem.Function(pts.Q)
    one.x.array[:] = 1.0
    import ufl

    ref = COMM.allreduce(fem.assemble_scalar(fem.form(fem.Constant(msh, 1.0) * ufl.dx)))
    assert pts.integrate(one) == pytest.approx(ref, rel=1e-13)
