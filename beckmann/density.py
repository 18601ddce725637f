"""Density evaluators: turn a ``[source]`` / ``[target]`` config section into a function of points.

:func:`make_evaluator` reads a section and returns an :class:`Evaluator`, a callable
``ev(x, params=None)`` that takes points in DOLFINx's interpolation layout (shape ``(3, N)``: rows
x, y, z; the z row is zero in 2D) and returns the *raw* density values, shape ``(N,)``. Nothing
here normalises or checks positivity: the caller normalises on the discrete domain and calls
:func:`check_values`, which is collective and raises the same error on every rank.

Kinds:

``uniform``
    The constant 1.
``expression``
    A formula in ``x, y, z``, the constants ``pi, e`` and named parameters, read by a small safe
    parser (:class:`Expression`): Python's :mod:`ast` builds the tree, only a whitelist of nodes
    is accepted, and the tree is compiled once into vectorised NumPy closures. User text is never
    passed to :func:`eval` or :func:`compile`.
``gaussian_mixture``
    ``sum_i w_i N(x; m_i, C_i)`` in ``gdim`` dimensions (:class:`GaussianMixture`).
``image``
    A PNG (values scaled to [0, 1]) or a ``.npy`` array, stretched over the mesh bounding box and
    read by bilinear / trilinear interpolation (:func:`load_image`).
``samples``
    A Gaussian kernel density estimate of the points in a ``.npy`` file (:class:`GaussianKDE`).

Every kind adds the section's ``floor``. This module is
not collective (each rank reads files itself), except :func:`check_values`.
"""

from __future__ import annotations

import ast
import functools
import itertools
import keyword
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.ndimage
import scipy.spatial

from beckmann._dolfinx import MPI
from beckmann._mpi import format_point, point_quantum

__all__ = [
    "CONSTANTS",
    "COORDINATES",
    "FUNCTIONS",
    "KINDS",
    "Evaluator",
    "Expression",
    "GaussianKDE",
    "GaussianMixture",
    "check_values",
    "load_image",
    "load_samples",
    "make_evaluator",
]

FloatArray = npt.NDArray[np.float64]

#: Density kinds :func:`make_evaluator` handles (``function`` is read from a run folder elsewhere).
KINDS = ("uniform", "expression", "gaussian_mixture", "image", "samples")

#: Coordinate names of an expression; ``z`` is zero in 2D.
COORDINATES = ("x", "y", "z")

#: Named constants of an expression.
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

_UNARY: dict[str, Callable[..., Any]] = {
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
}
_BINARY: dict[str, Callable[..., Any]] = {"atan2": np.arctan2}
_VARIADIC: dict[str, Callable[..., Any]] = {"min": np.minimum, "max": np.maximum}

#: Functions an expression may call: one argument each, except ``atan2(y, x)`` (two) and
#: ``min`` / ``max`` (two or more, elementwise).
FUNCTIONS = tuple(sorted([*_UNARY, *_BINARY, *_VARIADIC]))

_OPERATORS: dict[type[ast.operator], Callable[..., Any]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}

_MAX_EXPRESSION_LENGTH = 10_000
_MAX_EXPRESSION_DEPTH = 400

# Kernel density estimate: direct summation below this many (point, sample) pairs; the kernel is
# cut off at this many standard deviations by the grid and tree methods.
_KDE_DIRECT_PAIRS = 2.0e7
_KDE_TRUNCATE = 5.0
# Grid spacings tried (in kernel standard deviations) and the node budget of each.
_KDE_GRIDS = ((0.1, 2**20), (0.2, 2**22), (0.35, 2**23))

_Node = Callable[[Mapping[str, Any]], Any]


# --------------------------------------------------------------------------- small validators


def _real(value: Any, what: str) -> float:
    """Return ``value`` as a finite float, or raise a ValueError quoting it."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{what} must be a real number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return result


def _check_params(params: Any, what: str) -> dict[str, float]:
    """Validate a name -> number mapping of expression parameters."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ValueError(f"{what} must be a mapping of names to numbers, got {params!r}")
    reserved = {*COORDINATES, *CONSTANTS, *FUNCTIONS}
    checked: dict[str, float] = {}
    for name, value in params.items():
        if (
            not isinstance(name, str)
            or not name.isidentifier()
            or keyword.iskeyword(name)
            or name.startswith("_")
        ):
            raise ValueError(
                f"parameter name {name!r} in {what} is not allowed: use a plain identifier "
                "not starting with '_'"
            )
        if name in reserved:
            raise ValueError(
                f"parameter name {name!r} in {what} clashes with a coordinate, constant or "
                "function of the expression language"
            )
        checked[name] = _real(value, f"parameter {name!r} in {what}")
    return checked


def _check_bbox(bbox: Any, gdim: int) -> tuple[FloatArray, FloatArray]:
    try:
        lo_in, hi_in = bbox
        lo = np.asarray(lo_in, dtype=np.float64).reshape(-1)
        hi = np.asarray(hi_in, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"bbox must be a pair (lower, upper) of arrays, got {bbox!r}") from err
    if lo.shape != (gdim,) or hi.shape != (gdim,):
        raise ValueError(f"bbox corners must have length gdim={gdim}, got {bbox!r}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)):
        raise ValueError(f"bbox must have finite corners with lower < upper, got {bbox!r}")
    return lo, hi


def _as_points(x: npt.ArrayLike, gdim: int) -> FloatArray:
    """Points as a ``(3, N)`` float64 array; a ``(gdim, N)`` input is padded with zero rows."""
    pts = np.asarray(x, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] not in (gdim, 3):
        raise ValueError(
            f"points must have shape (3, N) or ({gdim}, N) for gdim={gdim}, got {pts.shape}"
        )
    if pts.shape[0] < 3:
        pts = np.vstack([pts, np.zeros((3 - pts.shape[0], pts.shape[1]))])
    return pts


# --------------------------------------------------------------------------- expressions


class Expression:
    """A safe, vectorised arithmetic expression in ``x, y, z``, constants and parameters.

    Grammar (Python syntax, whitelisted): real number literals; the names ``x, y, z``
    (coordinates), ``pi, e`` (constants), and any other plain identifier, which is a *parameter*
    and must get a value when the expression is evaluated; binary ``+ - * / **``; unary ``+ -``;
    calls of the functions in :data:`FUNCTIONS`. Precedence is Python's: ``-x**2 == -(x**2)``,
    ``2**3**2 == 2**9``. Everything else (attributes, subscripts, lambdas, comprehensions,
    comparisons, keyword arguments, strings, ...) is rejected. The syntax tree is compiled once
    into nested NumPy closures; user text is never evaluated by Python.

    Arithmetic follows IEEE rules without warnings: ``log(0)`` gives ``-inf``, ``sqrt(-1)`` gives
    ``nan``; :func:`check_values` reports such values.

    Args:
        text: The expression.

    Raises:
        ValueError: The text does not parse, or uses a construct, function or name that is not
            allowed.
    """

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ValueError(f"expression must be a string, got {text!r}")
        self.text = text
        if not text.strip():
            raise ValueError(f"malformed expression {text!r}: it is empty")
        if len(text) > _MAX_EXPRESSION_LENGTH:
            raise ValueError(
                f"malformed expression {self._quoted}: longer than "
                f"{_MAX_EXPRESSION_LENGTH} characters"
            )
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as err:
            where = f" (column {err.offset})" if err.offset else ""
            raise ValueError(f"malformed expression {self._quoted}: {err.msg}{where}") from err
        except (RecursionError, MemoryError) as err:
            raise ValueError(f"malformed expression {self._quoted}: nested too deeply") from err
        names: set[str] = set()
        try:
            self._root = self._compile(tree.body, names)
        except RecursionError as err:
            raise ValueError(f"malformed expression {self._quoted}: nested too deeply") from err
        #: Free names other than coordinates and constants: the parameters it needs.
        self.parameter_names: frozenset[str] = frozenset(names)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    @property
    def _quoted(self) -> str:
        """The text for messages, shortened when long."""
        text = self.text if len(self.text) <= 80 else self.text[:77] + "..."
        return repr(text)

    def _error(self, node: ast.AST, reason: str) -> ValueError:
        segment = ast.get_source_segment(self.text.strip(), node)
        if segment and len(segment) > 60:
            segment = segment[:57] + "..."
        at = f" in {segment!r}" if segment and segment != self.text.strip() else ""
        return ValueError(f"malformed expression {self._quoted}: {reason}{at}")

    def _compile(self, node: ast.AST, names: set[str], depth: int = 0) -> _Node:
        # The closures recurse as deep as the tree: bound it well below Python's stack limit.
        if depth > _MAX_EXPRESSION_DEPTH:
            raise self._error(node, f"nested more than {_MAX_EXPRESSION_DEPTH} levels deep")
        depth += 1
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self._error(node, f"constant {value!r} is not a real number")
            try:
                const = np.float64(float(value))
            except OverflowError as err:
                raise self._error(node, "a number literal is too large") from err
            return lambda env: const
        if isinstance(node, ast.Name):
            return self._compile_name(node, names)
        if isinstance(node, ast.UnaryOp):
            operand = self._compile(node.operand, names, depth)
            if isinstance(node.op, ast.USub):
                return lambda env: np.negative(operand(env))
            if isinstance(node.op, ast.UAdd):
                return operand
            raise self._error(node, f"unary operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.BinOp):
            op = _OPERATORS.get(type(node.op))
            if op is None:
                hint = "; use ** for powers" if isinstance(node.op, ast.BitXor) else ""
                raise self._error(
                    node,
                    f"operator {type(node.op).__name__} is not allowed (only + - * / **){hint}",
                )
            left = self._compile(node.left, names, depth)
            right = self._compile(node.right, names, depth)
            return lambda env: op(left(env), right(env))
        if isinstance(node, ast.Call):
            return self._compile_call(node, names, depth)
        raise self._error(node, f"{type(node).__name__} is not allowed")

    def _compile_name(self, node: ast.Name, names: set[str]) -> _Node:
        name = node.id
        if name in FUNCTIONS:
            raise self._error(node, f"function {name!r} must be called, as {name}(...)")
        if name.startswith("_"):
            raise self._error(
                node,
                f"unknown name {name!r}: allowed are the coordinates x, y, z, the constants "
                "pi, e, and parameter names not starting with '_'",
            )
        if name in CONSTANTS:
            const = np.float64(CONSTANTS[name])
            return lambda env: const
        if name not in COORDINATES:
            names.add(name)
        return lambda env: env[name]

    def _compile_call(self, node: ast.Call, names: set[str], depth: int) -> _Node:
        if not isinstance(node.func, ast.Name):
            raise self._error(
                node.func, f"{type(node.func).__name__} is not allowed; only named functions"
            )
        fname = node.func.id
        if fname not in FUNCTIONS:
            raise self._error(
                node, f"unknown function {fname!r}; allowed functions: {', '.join(FUNCTIONS)}"
            )
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self._error(node, f"{fname}() takes positional arguments only")
        args = [self._compile(a, names, depth) for a in node.args]
        nargs = len(args)
        if fname in _UNARY:
            if nargs != 1:
                raise self._error(node, f"{fname}() takes 1 argument, got {nargs}")
            f1, (a0,) = _UNARY[fname], args
            return lambda env: f1(a0(env))
        if fname in _BINARY:
            if nargs != 2:
                raise self._error(node, f"{fname}() takes 2 arguments, got {nargs}")
            f2, (b0, b1) = _BINARY[fname], args
            return lambda env: f2(b0(env), b1(env))
        if nargs < 2:
            raise self._error(node, f"{fname}() takes at least 2 arguments, got {nargs}")
        fv = _VARIADIC[fname]
        return lambda env: functools.reduce(fv, (a(env) for a in args))

    def evaluate(self, x: FloatArray, params: Mapping[str, float] | None = None) -> FloatArray:
        """Evaluate at points.

        Args:
            x: Points, shape ``(3, N)`` (rows x, y, z).
            params: Values of the parameters; each name in :attr:`parameter_names` needs one.

        Returns:
            The values, shape ``(N,)``, float64 (constants are broadcast).

        Raises:
            ValueError: A parameter has no value.
        """
        params = {} if params is None else params
        missing = sorted(self.parameter_names - params.keys())
        if missing:
            given = ", ".join(sorted(params)) or "none"
            raise ValueError(
                f"expression {self._quoted} uses {', '.join(map(repr, missing))}, which "
                f"{'has' if len(missing) == 1 else 'have'} no value: allowed names are the "
                f"coordinates x, y, z, the constants pi, e, and parameters given in params "
                f"(given: {given})"
            )
        env: dict[str, Any] = {name: np.float64(params[name]) for name in self.parameter_names}
        env.update(x=x[0], y=x[1], z=x[2])
        with np.errstate(all="ignore"):
            values = self._root(env)
        return np.array(np.broadcast_to(values, (x.shape[1],)), dtype=np.float64)


# --------------------------------------------------------------------------- Gaussian mixtures


def _spd_factor(matrix: FloatArray, what: str, original: Any) -> FloatArray:
    """Lower Cholesky factor of a symmetric positive definite matrix, or a ValueError."""
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{what} must be finite, got {original!r}")
    scale = max(float(np.max(np.abs(matrix))), np.finfo(np.float64).tiny)
    if not np.allclose(matrix, matrix.T, rtol=0.0, atol=1e-12 * scale):
        raise ValueError(f"{what} must be symmetric, got {original!r}")
    try:
        return np.asarray(scipy.linalg.cholesky(matrix, lower=True), dtype=np.float64)
    except np.linalg.LinAlgError as err:
        raise ValueError(f"{what} must be positive definite, got {original!r}") from err


class GaussianMixture:
    """A weighted sum of normal densities, ``sum_i w_i N(x; m_i, C_i)``.

    Args:
        weights: Non-negative weights ``w_i`` (not renormalised).
        means: One point of length ``gdim`` per component.
        covariances: One per component: a ``gdim x gdim`` symmetric positive definite nested
            list, or a positive number ``s`` meaning the isotropic covariance ``s * I`` (a
            variance, not a standard deviation).
        gdim: Dimension, 2 or 3.

    Raises:
        ValueError: The lists disagree in length, a mean or matrix has the wrong size, a weight is
            negative, or a covariance is not symmetric positive definite.
    """

    def __init__(
        self, weights: Sequence[Any], means: Sequence[Any], covariances: Sequence[Any], gdim: int
    ) -> None:
        for what, seq in (("weights", weights), ("means", means), ("covariances", covariances)):
            if not isinstance(seq, Sequence) or isinstance(seq, str):
                raise ValueError(f"gaussian_mixture {what} must be a list, got {seq!r}")
        if not weights:
            raise ValueError("gaussian_mixture needs at least one component; weights is empty")
        if not len(weights) == len(means) == len(covariances):
            raise ValueError(
                "gaussian_mixture weights, means and covariances must have the same length, got "
                f"{len(weights)}, {len(means)} and {len(covariances)}"
            )
        self.gdim = gdim
        self.weights: list[float] = []
        self.means: list[FloatArray] = []
        self._factors: list[FloatArray] = []
        for i, (w, m, c) in enumerate(zip(weights, means, covariances, strict=True)):
            weight = _real(w, f"gaussian_mixture weights[{i}]")
            if weight < 0:
                raise ValueError(f"gaussian_mixture weights[{i}] must be >= 0, got {w!r}")
            if not isinstance(m, Sequence) or isinstance(m, str) or len(m) != gdim:
                raise ValueError(
                    f"gaussian_mixture means[{i}] must be a list of {gdim} numbers, got {m!r}"
                )
            mean = np.array([_real(v, f"gaussian_mixture means[{i}]") for v in m])
            if isinstance(c, Sequence) and not isinstance(c, str):
                if len(c) != gdim or any(
                    not isinstance(row, Sequence) or isinstance(row, str) or len(row) != gdim
                    for row in c
                ):
                    raise ValueError(
                        f"gaussian_mixture covariances[{i}] must be a {gdim}x{gdim} nested list "
                        f"or one number, got {c!r}"
                    )
                cov = np.array(
                    [[_real(v, f"gaussian_mixture covariances[{i}]") for v in row] for row in c]
                )
            else:
                variance = _real(c, f"gaussian_mixture covariances[{i}]")
                if variance <= 0:
                    raise ValueError(
                        f"gaussian_mixture covariances[{i}] (a variance) must be > 0, got {c!r}"
                    )
                cov = variance * np.eye(gdim)
            self._factors.append(_spd_factor(cov, f"gaussian_mixture covariances[{i}]", c))
            self.weights.append(weight)
            self.means.append(mean)

    def __call__(self, x: FloatArray) -> FloatArray:
        """Evaluate at points ``x`` of shape ``(gdim, N)``; returns shape ``(N,)``."""
        d = self.gdim
        out = np.zeros(x.shape[1])
        for w, mean, factor in zip(self.weights, self.means, self._factors, strict=True):
            z = scipy.linalg.solve_triangular(factor, x[:d] - mean[:, None], lower=True)
            norm = w / ((2.0 * np.pi) ** (d / 2) * float(np.prod(np.diag(factor))))
            out += norm * np.exp(-0.5 * np.einsum("ij,ij->j", z, z))
        return out


# --------------------------------------------------------------------------- grids


def _corners(
    x: FloatArray, lo: FloatArray, step: FloatArray, shape: tuple[int, ...]
) -> Iterator[tuple[npt.NDArray[np.intp], FloatArray]]:
    """Multilinear stencil of points ``x`` (shape ``(d, N)``) on a regular grid.

    The grid has nodes ``lo + i * step``, ``i < shape``, each ``shape[k] >= 2``. Points outside
    it are clamped onto its boundary. Yields, for each of the ``2**d`` cell corners, the flat
    (C-order) node index and the weight of every point.
    """
    n = np.asarray(shape)
    t = np.clip((x - lo[:, None]) / step[:, None], 0.0, (n - 1)[:, None])
    i0 = np.minimum(t.astype(np.intp), (n - 2)[:, None])
    frac = t - i0
    strides = np.array([int(np.prod(n[k + 1 :])) for k in range(len(n))], dtype=np.intp)
    base = strides @ i0
    for corner in itertools.product((0, 1), repeat=len(n)):
        weight = np.ones(x.shape[1])
        offset = 0
        for k, c in enumerate(corner):
            weight *= frac[k] if c else 1.0 - frac[k]
            offset += c * int(strides[k])
        yield base + offset, weight


def _interpolate(grid: FloatArray, lo: FloatArray, step: FloatArray, x: FloatArray) -> FloatArray:
    """Multilinear interpolation of node values ``grid`` at points ``x`` (shape ``(d, N)``)."""
    flat = grid.ravel()
    out = np.zeros(x.shape[1])
    for index, weight in _corners(x, lo, step, grid.shape):
        out += weight * flat[index]
    return out


def _bin(x: FloatArray, lo: FloatArray, step: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    """Linear binning (cloud in cell) of unit masses at ``x`` onto grid nodes."""
    size = int(np.prod(shape))
    counts = np.zeros(size)
    for index, weight in _corners(x, lo, step, shape):
        counts += np.bincount(index, weights=weight, minlength=size)
    return counts.reshape(shape)


# --------------------------------------------------------------------------- images


def load_image(path: str | Path, gdim: int) -> FloatArray:
    """Read an image as node values of a regular grid over the bounding box.

    A PNG (2D only) is read with pillow: greyscale as is, colour images converted to luminance
    (pillow's ``L`` mode, ITU-R 601-2 weights; alpha ignored), values scaled to [0, 1] (8-bit by
    255, 16-bit by 65535). Image row 0 is the *top* of the box (largest y), column 0 its left
    (smallest x). A ``.npy`` array of dimension ``gdim`` is indexed ``[i_x, i_y]`` or
    ``[i_x, i_y, i_z]``, index 0 at the lower corner, and used unscaled.

    In both cases the first and last samples along an axis sit on the box faces (node-centred,
    not pixel-centred), so an array sampled on ``linspace(lo, hi, n)`` is reproduced exactly.

    Args:
        path: A ``.npy`` file, or an image file pillow reads (PNG).
        gdim: Dimension of the mesh, 2 or 3.

    Returns:
        Node values indexed ``[i_x, i_y(, i_z)]``, at least 2 nodes per axis.

    Raises:
        RuntimeError: The file is missing or unreadable (chained to the cause).
        ValueError: The array has the wrong dimension, fewer than 2 nodes along an axis, or
            non-finite values.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            grid = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise RuntimeError(f"cannot read image array {str(path)!r}: {err}") from err
        if grid.ndim != gdim or not np.issubdtype(grid.dtype, np.number):
            raise ValueError(
                f"image array {str(path)!r} must be a {gdim}D numeric array for gdim={gdim}, "
                f"got shape {grid.shape} and dtype {grid.dtype}"
            )
        grid = np.asarray(grid, dtype=np.float64)
    else:
        if gdim != 2:
            raise ValueError(
                f"a PNG image ({str(path)!r}) needs a 2D mesh, got gdim={gdim}; use a 3D .npy array"
            )
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                if img.mode.startswith("I;16") or img.mode == "I":
                    pixels = np.asarray(img, dtype=np.float64) / 65535.0
                elif img.mode == "F":
                    pixels = np.asarray(img, dtype=np.float64)
                else:
                    pixels = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise RuntimeError(f"cannot read image {str(path)!r}: {err}") from err
        grid = np.ascontiguousarray(pixels[::-1, :].T)  # [row, col] top-down -> [i_x, i_y]
    if min(grid.shape) < 2:
        raise ValueError(f"image {str(path)!r} needs >= 2 samples per axis, got {grid.shape}")
    if not np.all(np.isfinite(grid)):
        raise ValueError(f"image {str(path)!r} has NaN or inf values")
    return grid


# --------------------------------------------------------------------------- samples (KDE)


def load_samples(path: str | Path, gdim: int) -> FloatArray:
    """Read an ``(M, gdim)`` array of points from a ``.npy`` file.

    Raises:
        RuntimeError: The file is missing or unreadable (chained to the cause).
        ValueError: The array is not ``(M, gdim)`` with ``M >= 1``, or has non-finite entries.
    """
    try:
        samples = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise RuntimeError(f"cannot read samples {str(path)!r}: {err}") from err
    if (
        samples.ndim != 2
        or samples.shape[1] != gdim
        or samples.shape[0] < 1
        or not np.issubdtype(samples.dtype, np.number)
    ):
        raise ValueError(
            f"samples {str(path)!r} must be a numeric (M, {gdim}) array for gdim={gdim}, "
            f"got shape {samples.shape} and dtype {samples.dtype}"
        )
    samples = np.asarray(samples, dtype=np.float64)
    if not np.all(np.isfinite(samples)):
        raise ValueError(f"samples {str(path)!r} has NaN or inf entries")
    return samples


class GaussianKDE:
    """Gaussian kernel density estimate ``(1/M) sum_j N(x; s_j, H)`` of samples ``s_j``.

    Bandwidth: ``bandwidth > 0`` gives the isotropic kernel ``H = bandwidth**2 * I`` (bandwidth
    is a standard deviation, in coordinate units). ``bandwidth = 0`` gives Scott's rule with the
    full sample covariance, ``H = M**(-2/(d+4)) * cov(samples)``, exactly as
    :class:`scipy.stats.gaussian_kde` does, so that rotated or correlated samples are smoothed
    along their own axes.

    Coordinates are whitened by ``H``'s Cholesky factor, where the kernel is the standard normal.
    Three methods, chosen per call by ``method="auto"``:

    * ``direct``: exact summation, when points x samples <= 2e7;
    * ``grid``: linear binning of the samples on a regular grid over the (whitened) bounding box,
      padded by 6 kernel widths, a Gaussian filter (cut off at 5 widths), then multilinear
      interpolation. Grid spacing 0.1-0.35 kernel widths, the filter width corrected for the
      smoothing of binning and interpolation; relative error about 1e-3 of the peak. Built once
      and cached. Used when the grid has at most ~8M nodes;
    * ``tree``: a k-d tree sum over samples within 5 kernel widths, for kernels too narrow for
      the grid.

    Args:
        samples: Points, shape ``(M, d)``.
        bandwidth: Kernel standard deviation, or 0 for Scott's rule.
        bbox: ``(lower, upper)`` corners of the region where the estimate is evaluated; needed
            by the grid method (points outside it are clamped onto it).
        method: ``auto``, ``direct``, ``grid`` or ``tree``.

    Raises:
        ValueError: Bad bandwidth or method, or a singular sample covariance with Scott's rule.
    """

    def __init__(
        self,
        samples: npt.ArrayLike,
        *,
        bandwidth: float = 0.0,
        bbox: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
        method: str = "auto",
    ) -> None:
        data = np.asarray(samples, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] < 1 or not np.all(np.isfinite(data)):
            raise ValueError(f"samples must be a finite (M, d) array, got shape {data.shape}")
        bandwidth = _real(bandwidth, "bandwidth")
        if bandwidth < 0:
            raise ValueError(f"bandwidth must be >= 0 (0 = Scott's rule), got {bandwidth!r}")
        if method not in ("auto", "direct", "grid", "tree"):
            raise ValueError(f"method must be auto, direct, grid or tree, got {method!r}")
        m, d = data.shape
        if bandwidth > 0:
            covariance = bandwidth**2 * np.eye(d)
        else:
            if m <= d:
                raise ValueError(
                    f"Scott's rule needs more than {d} samples, got {m}; set bandwidth > 0"
                )
            covariance = np.atleast_2d(np.cov(data.T)) * m ** (-2.0 / (d + 4))
        eigenvalues = np.linalg.eigvalsh(covariance)
        if not eigenvalues[0] > 1e-12 * eigenvalues[-1]:
            raise ValueError(
                "the sample covariance is singular (samples on a line or plane, or all equal); "
                "set bandwidth > 0"
            )
        factor = scipy.linalg.cholesky(covariance, lower=True)
        self.covariance: FloatArray = covariance
        self.method = method
        self.bbox = None if bbox is None else _check_bbox(bbox, d)
        self._factor = np.asarray(factor, dtype=np.float64)
        self._ys = self._whiten(data.T)
        # density in x = density of whitened points / det(factor)
        self._scale = 1.0 / (m * float(np.prod(np.diag(self._factor))))
        self._grid: tuple[FloatArray, FloatArray, FloatArray] | None = None
        self._grid_tried = False
        self._tree: scipy.spatial.cKDTree | None = None

    @property
    def dim(self) -> int:
        """Dimension ``d`` of the samples."""
        return int(self._ys.shape[0])

    def _whiten(self, x: FloatArray) -> FloatArray:
        return np.asarray(
            scipy.linalg.solve_triangular(self._factor, x, lower=True), dtype=np.float64
        )

    def __call__(self, x: FloatArray) -> FloatArray:
        """Evaluate at points ``x`` of shape ``(d, N)``; returns shape ``(N,)``."""
        yq = self._whiten(np.asarray(x, dtype=np.float64)[: self.dim])
        method = self.method
        if method == "auto":
            if yq.shape[1] * self._ys.shape[1] <= _KDE_DIRECT_PAIRS:
                method = "direct"
            elif self._build_grid() is not None:
                method = "grid"
            else:
                method = "tree"
        if method == "direct":
            return self._direct(yq)
        if method == "grid":
            grid = self._build_grid()
            if grid is None:
                raise ValueError("the grid method needs a bbox and a kernel wide enough for it")
            values, lo, step = grid
            return _interpolate(values, lo, step, yq)
        return self._tree_sum(yq)

    def _direct(self, yq: FloatArray) -> FloatArray:
        m = self._ys.shape[1]
        out = np.empty(yq.shape[1])
        chunk = max(1, 2**22 // m)
        for start in range(0, yq.shape[1], chunk):
            sl = slice(start, start + chunk)
            sq = np.zeros((yq[:, sl].shape[1], m))
            for k in range(self.dim):
                sq += (yq[k, sl, None] - self._ys[k, None, :]) ** 2
            out[sl] = np.exp(-0.5 * sq).sum(axis=1)
        return out * self._scale / (2.0 * np.pi) ** (self.dim / 2)

    def _tree_sum(self, yq: FloatArray) -> FloatArray:
        if self._tree is None:
            self._tree = scipy.spatial.cKDTree(self._ys.T)
        out = np.zeros(yq.shape[1])
        chunk = 2**14
        for start in range(0, yq.shape[1], chunk):
            block = yq[:, start : start + chunk]
            # "ndarray" output keeps pairs at distance exactly 0 (a sparse matrix would drop them)
            pairs = scipy.spatial.cKDTree(block.T).sparse_distance_matrix(
                self._tree, _KDE_TRUNCATE, output_type="ndarray"
            )
            out[start : start + block.shape[1]] = np.bincount(
                pairs["i"], weights=np.exp(-0.5 * pairs["v"] ** 2), minlength=block.shape[1]
            )
        return out * self._scale / (2.0 * np.pi) ** (self.dim / 2)

    def _build_grid(self) -> tuple[FloatArray, FloatArray, FloatArray] | None:
        if self._grid_tried:
            return self._grid
        self._grid_tried = True
        if self.bbox is None:
            return None
        lo_x, hi_x = self.bbox
        corners = np.array(list(itertools.product(*zip(lo_x, hi_x, strict=True)))).T
        wc = self._whiten(corners)
        pad = _KDE_TRUNCATE + 1.0
        lo = wc.min(axis=1) - pad
        extent = wc.max(axis=1) + pad - lo
        for delta, budget in _KDE_GRIDS:
            shape = tuple(int(s) for s in np.ceil(extent / delta).astype(int) + 1)
            if math.prod(shape) <= budget:
                break
        else:
            return None
        step = extent / (np.array(shape) - 1)
        inside = np.all((self._ys >= lo[:, None]) & (self._ys <= (lo + extent)[:, None]), axis=0)
        counts = _bin(self._ys[:, inside], lo, step, shape)
        # Binning and interpolation each smooth by about step**2 / 6 in variance: take it off.
        sigma = np.sqrt(1.0 - step**2 / 3.0) / step
        smoothed = scipy.ndimage.gaussian_filter(
            counts, sigma=sigma, mode="constant", truncate=_KDE_TRUNCATE
        )
        values = smoothed * (self._scale / float(np.prod(step)))
        self._grid = (values, lo, step)
        return self._grid


# --------------------------------------------------------------------------- the evaluator


class Evaluator:
    """A density as a function of points: ``ev(x, params=None) -> values``.

    Args:
        kind: The section's kind.
        gdim: Geometric dimension, 2 or 3.
        raw: ``raw(x, params)`` with ``x`` of shape ``(3, N)``; returns values broadcastable to
            ``(N,)``.
        floor: Constant added to every value.
        parameter_names: Names ``raw`` needs in ``params``.
        params: Default parameter values, overridden by those given at call time.

    Attributes:
        kind: As given.
        gdim: As given.
        floor: As given.
        parameter_names: Free parameter names of an expression (empty for other kinds).
        params: Default parameter values (from the section).
    """

    def __init__(
        self,
        kind: str,
        gdim: int,
        raw: Callable[[FloatArray, Mapping[str, float]], Any],
        *,
        floor: float = 0.0,
        parameter_names: frozenset[str] = frozenset(),
        params: Mapping[str, float] | None = None,
    ) -> None:
        self.kind = kind
        self.gdim = gdim
        self.floor = floor
        self.parameter_names = parameter_names
        self.params: dict[str, float] = dict(params or {})
        self._raw = raw

    def __repr__(self) -> str:
        return f"Evaluator(kind={self.kind!r}, gdim={self.gdim}, floor={self.floor})"

    def __call__(self, x: npt.ArrayLike, params: Mapping[str, float] | None = None) -> FloatArray:
        """Evaluate the density.

        Args:
            x: Points, shape ``(3, N)`` (DOLFINx's layout; the z row is ignored in 2D except by
                expressions, which see it as ``z``), or ``(gdim, N)``.
            params: Parameter values overriding the section's ``params``; names the density does
                not use are ignored.

        Returns:
            Raw values (floor included), shape ``(N,)``, float64.

        Raises:
            ValueError: Wrong point shape, a bad parameter value, or a parameter with no value.
        """
        pts = _as_points(x, self.gdim)
        merged = dict(self.params)
        merged.update(_check_params(params, "call-time params"))
        values = np.array(np.broadcast_to(self._raw(pts, merged), (pts.shape[1],)), np.float64)
        if self.floor != 0.0:
            values += self.floor
        return values


def make_evaluator(
    section: Mapping[str, Any], *, gdim: int, bbox: tuple[npt.ArrayLike, npt.ArrayLike]
) -> Evaluator:
    """Build the evaluator of a ``[source]`` or ``[target]`` config section.

    Keys read: ``kind``, ``floor`` (>= 0, added to every value) and, by kind, ``expr`` and
    ``params``; ``weights``, ``means`` and ``covariances``; ``path`` (relative paths are relative
    to the working directory); ``bandwidth``. Other keys (``field``, ``min_density``, ...) are
    ignored. See the module docstring for the kinds. Not collective: each rank reads any file
    itself.

    Args:
        section: The config section.
        gdim: Geometric dimension of the mesh, 2 or 3.
        bbox: ``(lower, upper)`` corners of the mesh bounding box, each of length ``gdim``.
            Images are stretched over it; the kernel density estimate is gridded on it.

    Returns:
        The evaluator.

    Raises:
        ValueError: A bad kind (including ``function``, which is not handled here), value or
            file content.
        RuntimeError: A file is missing or unreadable.
    """
    if gdim not in (2, 3):
        raise ValueError(f"gdim must be 2 or 3, got {gdim!r}")
    if not isinstance(section, Mapping):
        raise ValueError(f"density section must be a mapping, got {section!r}")
    lo, hi = _check_bbox(bbox, gdim)
    kind = section.get("kind", "uniform")
    floor = _real(section.get("floor", 0.0), "floor")
    if floor < 0:
        raise ValueError(f"floor must be >= 0, got {floor!r}")

    if kind == "uniform":
        return Evaluator(kind, gdim, lambda x, p: 1.0, floor=floor)
    if kind == "expression":
        expression = Expression(section.get("expr", ""))
        params = _check_params(section.get("params", {}), "params")
        return Evaluator(
            kind,
            gdim,
            expression.evaluate,
            floor=floor,
            parameter_names=expression.parameter_names,
            params=params,
        )
    if kind == "gaussian_mixture":
        mixture = GaussianMixture(
            section.get("weights", []),
            section.get("means", []),
            section.get("covariances", []),
            gdim,
        )
        return Evaluator(kind, gdim, lambda x, p: mixture(x[:gdim]), floor=floor)
    if kind in ("image", "samples"):
        path = section.get("path", "")
        if not isinstance(path, str | Path) or not str(path):
            raise ValueError(f"kind {kind!r} needs a file in 'path', got {path!r}")
        if kind == "image":
            grid = load_image(path, gdim)
            step = (hi - lo) / (np.array(grid.shape) - 1)
            return Evaluator(
                kind, gdim, lambda x, p: _interpolate(grid, lo, step, x[:gdim]), floor=floor
            )
        kde = GaussianKDE(
            load_samples(path, gdim), bandwidth=section.get("bandwidth", 0.0), bbox=(lo, hi)
        )
        return Evaluator(kind, gdim, lambda x, p: kde(x[:gdim]), floor=floor)
    if kind == "function":
        raise ValueError(
            "density kind 'function' reads a field from a run folder and is not handled by "
            "make_evaluator"
        )
    raise ValueError(f"unknown density kind {kind!r}; expected one of {', '.join(KINDS)}")


# --------------------------------------------------------------------------- collective checks


def _tied(values: npt.NDArray[np.float64], vmin: float) -> npt.NDArray[np.bool_]:
    """Values equal to the minimum up to round-off (a tie the partition must not break)."""
    tol = 1e-9 * max(abs(vmin), float(np.max(np.abs(values))) if values.size else 0.0, 1e-300)
    return values <= vmin + tol


def _lowest(
    vals: npt.NDArray[np.float64], pts: npt.NDArray[np.float64], quantum: float
) -> tuple[float, list]:
    """The minimum and, among its ties, the lexicographically smallest point.

    Points are compared at the precision ``quantum`` of messages, so round-off in the
    coordinates cannot pick the one reported.
    """
    vmin = float(vals.min())
    cand = pts[_tied(vals, vmin)]
    order = np.lexsort(np.round(cand / quantum).T[::-1])
    return vmin, cand[order[0]].tolist()


def _lowest_of(minima: list[tuple[float, list]], quantum: float) -> tuple[float, list]:
    """Reduce per-rank :func:`_lowest` results the same way, independent of the partition."""
    vals = np.array([m[0] for m in minima])
    vmin = float(vals.min())
    ties = [minima[i] for i in np.flatnonzero(_tied(vals, vmin))]
    _, point = min(ties, key=lambda m: tuple(np.round(np.asarray(m[1]) / quantum)))
    return vmin, point


def check_values(
    values: npt.ArrayLike,
    coords: npt.ArrayLike,
    *,
    role: str,
    min_density: float,
    comm: MPI.Comm,
    gdim: int | None = None,
) -> None:
    """Check that density values are finite and at least ``min_density``, over all ranks.

    Collective over ``comm``: every rank calls it, one ``allgather`` of a small summary per rank
    follows, and then every rank reaches the same verdict and raises the same error (or none).
    Problems with the arguments themselves are gathered too, so no rank is left waiting.

    Args:
        values: This rank's density values, shape ``(N,)`` (``N`` may be 0).
        coords: Their points, shape ``(N, 3)`` (or ``(N, gdim)``).
        role: ``source`` or ``target``, for the message.
        min_density: Smallest allowed value.
        comm: The communicator (mpi4py).
        gdim: Coordinates shown in messages; by default 2 if the z column is zero on every
            rank, else the number of columns.

    Raises:
        ValueError: On every rank, naming the first non-finite value (lowest rank first) and its
            point, or else the global minimum and its point when it is below ``min_density``.
    """
    summary: dict[str, Any] = {"error": None, "bad": None, "nbad": 0, "min": None, "z": False}
    extent = 0.0
    try:
        min_density = _real(min_density, "min_density")
        vals = np.asarray(values, dtype=np.float64)
        pts = np.asarray(coords, dtype=np.float64)
        if vals.ndim != 1:
            raise ValueError(f"values must have shape (N,), got {vals.shape}")
        if pts.ndim != 2 or pts.shape[0] != vals.size or pts.shape[1] not in (1, 2, 3):
            raise ValueError(f"coords must have shape ({vals.size}, 3), got {pts.shape}")
        bad = ~np.isfinite(vals)
        summary["nbad"] = int(bad.sum())
        summary["z"] = pts.shape[1] == 3 and bool(np.any(pts[:, 2] != 0.0))
        if summary["nbad"]:
            i = int(np.argmax(bad))
            what = "NaN" if np.isnan(vals[i]) else ("inf" if vals[i] > 0 else "-inf")
            summary["bad"] = (what, pts[i].tolist())
        extent = float(np.max(np.ptp(pts, axis=0))) if pts.shape[0] else 0.0
    except ValueError as err:
        summary["error"] = str(err)
    scale = comm.allreduce(extent if summary["error"] is None else 0.0, op=MPI.MAX)
    quantum = point_quantum(scale)
    if summary["error"] is None and not summary["nbad"] and vals.size:
        summary["min"] = _lowest(vals, pts, quantum)

    gathered: list[dict[str, Any]] = comm.allgather(summary)

    for rank, s in enumerate(gathered):
        if s["error"] is not None:
            raise ValueError(f"check_values on rank {rank}: {s['error']}")
    if gdim is None:
        ncols = max((len(s["bad"][1]) for s in gathered if s["bad"]), default=0)
        ncols = max([ncols, *(len(s["min"][1]) for s in gathered if s["min"])])
        gdim = 2 if ncols == 3 and not any(s["z"] for s in gathered) else ncols
    nbad = sum(s["nbad"] for s in gathered)
    if nbad:
        what, point = next(s["bad"] for s in gathered if s["bad"])
        more = f" ({nbad} non-finite values in all)" if nbad > 1 else ""
        raise ValueError(f"{role} density has {what} at {format_point(point[:gdim], scale)}{more}")
    minima = [s["min"] for s in gathered if s["min"] is not None]
    if not minima:
        return
    vmin, point = _lowest_of(minima, quantum)
    if vmin < min_density:
        raise ValueError(
            f"{role} density has minimum {vmin:.6g} at {format_point(point[:gdim], scale)}, below "
            f"min_density {min_density:g}; raise 'floor' or fix the density"
        )
