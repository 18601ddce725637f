"""ReQu network fitter: multilayer perceptrons fitted to a field and its derivatives (JAX).

A network ``f(x) = m + s · g(A x + c)`` approximates a field ``u`` given at sample points
together with its derivatives (MATH.md §5): the potential ``φ`` with ``∇φ``, or a vector field
``F`` (or ``v_t``) with its Jacobian. ``g`` is a multilayer perceptron with activation

- ``requ``: ``σ(z) = max(0, z)²`` (piecewise quadratic, C¹: the network and its input derivatives
  both approximate),
- ``relu``: ``max(0, z)`` (piecewise linear, its derivative is piecewise constant),
- ``tanh`` and ``softplus`` (smooth, for comparison).

``A x + c`` maps the bounding box of the inputs affinely onto ``[-1, 1]^d``; ``m`` (per output
component) and ``s`` (one number) rescale the outputs. Both maps are stored with the model.

Training minimises the relative Sobolev loss

    L = mean|f − u|² / mean|u|² + λ · mean|D_k f − D_k u|² / mean|D_k u|²

over the training points, where ``D_k`` is the derivative with respect to the inputs ``k``
(all inputs by default; e.g. only the space coordinates when ``θ`` inputs carry no derivative
data). ``D_k f`` comes from ``jax.jacfwd``; the steps are ``jax.jit``-compiled and run in chunks
under ``lax.scan``; optax Adam follows a warm-up + cosine schedule. Initial weights come from
``numpy.random.default_rng(seed)`` and minibatches from ``jax.random.key(seed)``: the same seed
gives the same weights.

Evaluation (``model(x)``, ``model.jacobian(x)``) is plain NumPy in float64 and does not need JAX;
only :func:`fit` does. Models are saved without pickle: ``MODEL.npz`` (weights) and ``MODEL.json``
(architecture, normalisation, field and input names, training report).

Error norms (:func:`errors`, MATH.md §3), on held-out points, for the error ``e = f − u``:

- ``c0_error = sup|e|`` (Euclidean norm of vector values),
- ``c1_error = sup|e| + sup|D_k e|`` (the ``C¹`` norm of §3; ``|D_k e|`` the Frobenius norm),
- ``holder_error = [e]_α`` and ``holder_grad_error = [D_k e]_α``, all-pairs estimates,
- ``l2_error = ‖e‖_{L²} / ‖u‖_{L²}`` (Monte Carlo over the points),

and the relative versions ``c0_rel``, ``c1_rel`` (divided by ``sup|u|``, ``‖u‖_{C¹}``).

Command line (:func:`register_cli`): ``beckmann fit RUN --field potential|flux|velocity --out
MODEL`` samples training and held-out points uniformly in the mesh (:func:`sample_domain`), takes
values and derivatives from the finite-element solution (:func:`training_data`), fits on rank 0
and prints a JSON report of the held-out errors.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ACTIVATIONS",
    "FIELDS",
    "FORMAT",
    "Network",
    "errors",
    "fit",
    "holder_seminorm",
    "load",
    "register_cli",
    "sample_domain",
    "training_data",
]

FloatArray = npt.NDArray[np.float64]

ACTIVATIONS = ("requ", "relu", "tanh", "softplus")
FIELDS = ("potential", "flux", "velocity")
FORMAT = "beckmann-network"
_FORMAT_VERSION = 1
_INSTALL_HINT = "the network fitter needs JAX and optax: pip install 'beckmann[nn]'"


def _require_jax() -> tuple[Any, Any, Any]:
    """Import JAX (on the CPU) and optax, or raise an ImportError saying how to install them."""
    # Never let JAX probe for accelerators: beckmann fits small networks on shared CPU cores.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError as err:
        raise ImportError(f"{_INSTALL_HINT} ({err})") from err
    return jax, jnp, optax


# ---------------------------------------------------------------------------------------------
# activations, in NumPy (evaluation) and JAX (training)


def _act_np(name: str, a: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Return ``σ(a)`` and ``σ'(a)``."""
    if name == "requ":
        r = np.maximum(a, 0.0)
        return r * r, 2.0 * r
    if name == "relu":
        return np.maximum(a, 0.0), (a > 0.0).astype(a.dtype)
    if name == "tanh":
        t = np.tanh(a)
        return t, 1.0 - t * t
    if name == "softplus":
        return np.logaddexp(0.0, a), 0.5 * (1.0 + np.tanh(0.5 * a))
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


def _act_jax(name: str) -> Callable[[Any], Any]:
    jax, jnp, _ = _require_jax()
    if name == "requ":
        return lambda a: jnp.square(jnp.maximum(a, 0.0))
    if name == "relu":
        return jax.nn.relu
    if name == "tanh":
        return jnp.tanh
    if name == "softplus":
        return jax.nn.softplus
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


# Gain g with Var(W) = g / fan_in keeping pre-activations of unit variance through the layers:
# E[σ(z)²] for z ~ N(0, 1) is 3/2 (requ), 1/2 (relu), about 0.39 (tanh), about 0.92 (softplus).
_GAIN = {"requ": 1.0 / 1.5, "relu": 2.0, "tanh": 1.0 / 0.394, "softplus": 1.0 / 0.92}


# ---------------------------------------------------------------------------------------------
# the model


@dataclasses.dataclass
class Network:
    """A fitted multilayer perceptron with its input and output normalisation.

    Attributes:
        activation: One of :data:`ACTIVATIONS`.
        weights: ``[(W, b), ...]`` with ``W`` of shape ``(n_in, n_out)``; the last layer is linear.
        lower: Lower corner of the input box mapped to ``-1`` (shape ``(d,)``).
        upper: Upper corner of the input box mapped to ``+1``.
        shift: Output offset ``m`` (shape ``(m,)``).
        scale: Output scale ``s`` (a positive number).
        scalar: ``True`` for a scalar field: ``model(x)`` is ``(N,)``, the Jacobian ``(N, d)``.
        field: Name of the fitted field (``potential``, ``flux``, ``velocity``, or free text).
        input_names: One name per input, e.g. ``["x", "y"]`` or ``["x", "y", "t", "theta0"]``.
        info: Training report (seed, steps, seconds, loss, errors); saved in the JSON.
    """

    activation: str
    weights: list[tuple[FloatArray, FloatArray]]
    lower: FloatArray
    upper: FloatArray
    shift: FloatArray
    scale: float
    scalar: bool
    field: str = ""
    input_names: list[str] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        if not self.input_names:
            self.input_names = [f"x{i}" for i in range(self.input_dim)]
        if len(self.input_names) != self.input_dim:
            raise ValueError(
                f"{len(self.input_names)} input names {self.input_names} "
                f"for {self.input_dim} inputs"
            )

    @property
    def widths(self) -> list[int]:
        """Layer widths, inputs first and outputs last, e.g. ``[2, 32, 32, 1]``."""
        return [self.weights[0][0].shape[0]] + [W.shape[1] for W, _ in self.weights]

    @property
    def input_dim(self) -> int:
        """Number of inputs ``d``."""
        return int(self.weights[0][0].shape[0])

    @property
    def output_dim(self) -> int:
        """Number of output components (1 for a scalar field)."""
        return int(self.weights[-1][0].shape[1])

    @property
    def parameters(self) -> int:
        """Number of trainable parameters (weights and biases)."""
        return int(sum(W.size + b.size for W, b in self.weights))

    def _inputs(self, x: npt.ArrayLike) -> FloatArray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1 and self.input_dim == 1:
            x = x[:, None]
        if x.ndim == 1 and x.shape[0] == self.input_dim:
            raise ValueError(
                f"points must be an array of shape (N, {self.input_dim}), got shape {x.shape}; "
                "pass one point as x[None, :]"
            )
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"points must have shape (N, {self.input_dim}) for inputs {self.input_names}, "
                f"got shape {x.shape}"
            )
        return x

    def _forward(self, x: FloatArray, jac: bool) -> tuple[FloatArray, FloatArray | None]:
        half = 0.5 * (self.upper - self.lower)
        h = (x - self.lower) / half - 1.0
        J: FloatArray | None = None
        for i, (W, b) in enumerate(self.weights):
            a = h @ W + b
            if jac:
                # Forward mode: J = ∂h/∂z has shape (N, n, d); the first layer's ∂a/∂z is W^T.
                if J is None:
                    Ja = np.broadcast_to(W.T, (len(x), *W.T.shape))
                else:
                    Ja = np.einsum("nid,io->nod", J, W)
            if i == len(self.weights) - 1:
                h = a
                J = Ja if jac else None
            else:
                h, dh = _act_np(self.activation, a)
                if jac:
                    J = dh[:, :, None] * Ja
        y = self.shift + self.scale * h
        if jac:
            assert J is not None
            J = self.scale * J / half[None, None, :]
        return y, J

    def __call__(self, x: npt.ArrayLike, *, batch: int = 65536) -> FloatArray:
        """Evaluate at points ``x`` of shape ``(N, d)``: ``(N,)`` (scalar field) or ``(N, m)``."""
        x = self._inputs(x)
        out = np.empty((len(x), self.output_dim))
        for s in range(0, len(x), batch):
            out[s : s + batch] = self._forward(x[s : s + batch], jac=False)[0]
        return out[:, 0] if self.scalar else out

    def jacobian(self, x: npt.ArrayLike, *, batch: int = 8192) -> FloatArray:
        """Input derivatives at ``x``: ``(N, d)`` (gradient of a scalar field) or ``(N, m, d)``."""
        x = self._inputs(x)
        out = np.empty((len(x), self.output_dim, self.input_dim))
        for s in range(0, len(x), batch):
            J = self._forward(x[s : s + batch], jac=True)[1]
            assert J is not None
            out[s : s + batch] = J
        return out[:, 0, :] if self.scalar else out

    def architecture(self) -> dict[str, Any]:
        """Return the JSON-serialisable description saved next to the weights."""
        return {
            "format": FORMAT,
            "version": _FORMAT_VERSION,
            "activation": self.activation,
            "widths": self.widths,
            "scalar": self.scalar,
            "field": self.field,
            "input_names": list(self.input_names),
            "input_lower": [float(v) for v in self.lower],
            "input_upper": [float(v) for v in self.upper],
            "output_shift": [float(v) for v in self.shift],
            "output_scale": float(self.scale),
            "info": self.info,
        }

    def save(self, path: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``PATH.npz`` (weights) and ``PATH.json`` (architecture); no pickle.

        A ``.npz`` or ``.json`` suffix on ``path`` is dropped. Not collective: call it on one rank.

        Returns:
            The paths of the JSON and the weights file.
        """
        stem = _stem(path)
        stem.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {}
        for i, (W, b) in enumerate(self.weights):
            arrays[f"W{i}"] = np.asarray(W, dtype=np.float64)
            arrays[f"b{i}"] = np.asarray(b, dtype=np.float64)
        npz, js = stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")
        np.savez(npz, **arrays)
        js.write_text(json.dumps(self.architecture(), indent=2, default=_json_default) + "\n")
        return js, npz


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _stem(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".npz", ".json") else p


def load(
    path: str | os.PathLike[str],
    *,
    input_dim: int | None = None,
    input_names: Sequence[str] | None = None,
    field: str | None = None,
) -> Network:
    """Load a model written by :meth:`Network.save`, checking it against what the caller needs.

    Args:
        path: ``MODEL``, ``MODEL.json`` or ``MODEL.npz``.
        input_dim: If given, the number of inputs the caller will pass.
        input_names: If given, the input names the caller expects (order matters).
        field: If given, the field the model must approximate.

    Raises:
        ValueError: Missing files, a file that is not a beckmann model, weights that do not match
            the architecture, or a model incompatible with ``input_dim``/``input_names``/``field``.
    """
    stem = _stem(path)
    js, npz = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".npz")
    for f in (js, npz):
        if not f.is_file():
            raise ValueError(f"model file {str(f)!r} not found (a model is MODEL.json + MODEL.npz)")
    try:
        arch = json.loads(js.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(js)!r} is not valid JSON: {err}") from err
    if not isinstance(arch, dict) or arch.get("format") != FORMAT:
        raise ValueError(f"{str(js)!r} is not a beckmann network (missing format {FORMAT!r})")
    if arch.get("version") != _FORMAT_VERSION:
        raise ValueError(
            f"{str(js)!r} has format version {arch.get('version')!r}; "
            f"this beckmann reads version {_FORMAT_VERSION}"
        )
    try:
        widths = [int(w) for w in arch["widths"]]
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k], dtype=np.float64) for k in data.files}
        weights = [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(len(widths) - 1)]
        model = Network(
            activation=str(arch["activation"]),
            weights=weights,
            lower=np.asarray(arch["input_lower"], dtype=np.float64),
            upper=np.asarray(arch["input_upper"], dtype=np.float64),
            shift=np.asarray(arch["output_shift"], dtype=np.float64),
            scale=float(arch["output_scale"]),
            scalar=bool(arch["scalar"]),
            field=str(arch.get("field", "")),
            input_names=[str(n) for n in arch["input_names"]],
            info=dict(arch.get("info", {})),
        )
    except KeyError as err:
        raise ValueError(f"model {str(stem)!r} lacks entry {err}") from err
    except (OSError, ValueError, TypeError) as err:
        if isinstance(err, ValueError) and "beckmann" in str(err):
            raise
        raise ValueError(f"cannot read model {str(stem)!r}: {err}") from err
    if model.widths != widths:
        raise ValueError(
            f"weights in {str(npz)!r} have layer widths {model.widths}, the JSON says {widths}"
        )
    for i, (W, b) in enumerate(model.weights):
        if b.shape != (W.shape[1],) or (i > 0 and W.shape[0] != model.weights[i - 1][0].shape[1]):
            raise ValueError(f"weights in {str(npz)!r}: layer {i} has inconsistent shapes")
    d = model.input_dim
    if model.lower.shape != (d,) or model.upper.shape != (d,) or np.any(model.upper <= model.lower):
        raise ValueError(f"model {str(stem)!r}: bad input normalisation box")
    if model.shift.shape != (model.output_dim,) or not model.scale > 0:
        raise ValueError(f"model {str(stem)!r}: bad output normalisation")
    if input_dim is not None and d != input_dim:
        raise ValueError(
            f"model {str(stem)!r} takes {d} inputs {model.input_names}, but {input_dim} were given"
        )
    if input_names is not None and list(input_names) != model.input_names:
        raise ValueError(
            f"model {str(stem)!r} takes inputs {model.input_names}, expected {list(input_names)}"
        )
    if field is not None and model.field != field:
        raise ValueError(f"model {str(stem)!r} approximates {model.field!r}, not {field!r}")
    return model


# ---------------------------------------------------------------------------------------------
# error norms


def _pairs_seminorm(x: FloatArray, g: FloatArray, alpha: float, chunk: int = 1024) -> float:
    """All pairs in NumPy: ``max_{i≠j} |g_i − g_j| / |x_i − x_j|^α`` (the fallback)."""
    best = 0.0
    for s in range(0, len(x), chunk):
        dx = np.linalg.norm(x[s : s + chunk, None, :] - x[None, :, :], axis=-1)
        dg = np.linalg.norm(g[s : s + chunk, None, :] - g[None, :, :], axis=-1)
        ok = dx > 0.0
        if np.any(ok):
            best = max(best, float(np.max(dg[ok] / dx[ok] ** alpha)))
    return best


def holder_seminorm(x: npt.ArrayLike, g: npt.ArrayLike, alpha: float) -> float:
    """Hölder seminorm ``[g]_α = max_{i≠j} |g_i − g_j| / |x_i − x_j|^α`` (MATH.md §3).

    Serial: all points are on this rank. Uses :func:`beckmann.holder.seminorm` (exact, on
    ``MPI.COMM_SELF``) when that module and mpi4py import, else an all-pairs NumPy loop. Vector
    values use the Euclidean norm of the difference; coincident points are skipped.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"Hölder exponent alpha must be in (0, 1], got {alpha!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    g = np.asarray(g, dtype=np.float64).reshape(len(x), -1)
    if len(x) < 2:
        return 0.0
    try:
        from mpi4py import MPI

        from beckmann import holder
    except ImportError:
        return _pairs_seminorm(x, g, alpha)
    return float(holder.seminorm(x, g, MPI.COMM_SELF, alpha, method="exact"))


def errors(
    model: Network,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    jac: npt.ArrayLike | None = None,
    *,
    derivative_inputs: Sequence[int] | None = None,
    alpha: float = 0.5,
    holder_points: int = 2000,
) -> dict[str, float]:
    """Errors of ``model`` against values ``y`` (and derivatives ``jac``) at held-out points ``x``.

    Args:
        model: The network.
        x: Points, shape ``(N, d)``; sampled uniformly, so means approximate integrals.
        y: Target values, ``(N,)`` or ``(N, m)``.
        jac: Target derivatives with respect to ``derivative_inputs``: ``(N, k)`` for a scalar
            field, ``(N, m, k)`` otherwise. Without it only the ``C⁰`` and ``L²`` errors are given.
        derivative_inputs: Indices of the inputs in ``jac`` (default: all).
        alpha: Hölder exponent for ``holder_error`` and ``holder_grad_error``.
        holder_points: The all-pairs Hölder estimate uses the first this many points.

    Returns:
        ``c0_error``, ``c0_rel``, ``l2_error`` (relative), ``holder_error``, and with ``jac``
        also ``c1_error``, ``c1_rel``, ``grad_error`` (``sup|D_k e|``), ``holder_grad_error``.
    """
    x, Y, J = _check_data(model.input_dim, x, y, jac, model.scalar)
    k = _derivative_inputs(model.input_dim, derivative_inputs, J)
    e = model(x).reshape(len(x), -1) - Y
    enorm = np.linalg.norm(e, axis=1)
    ynorm = np.linalg.norm(Y, axis=1)
    c0 = float(enorm.max())
    out = {
        "c0_error": c0,
        "c0_rel": c0 / max(float(ynorm.max()), np.finfo(float).tiny),
        "l2_error": float(np.sqrt(np.mean(enorm**2) / max(np.mean(ynorm**2), 1e-300))),
    }
    n = min(len(x), holder_points)
    if n >= 2:
        out["holder_error"] = holder_seminorm(x[:n], e[:n], alpha)
    if J is not None:
        Jm = model.jacobian(x).reshape(len(x), model.output_dim, model.input_dim)[:, :, k]
        De = (Jm - J).reshape(len(x), -1)
        grad = float(np.linalg.norm(De, axis=1).max())
        norm_c1 = float(ynorm.max() + np.linalg.norm(J.reshape(len(x), -1), axis=1).max())
        out["grad_error"] = grad
        out["c1_error"] = c0 + grad
        out["c1_rel"] = (c0 + grad) / max(norm_c1, np.finfo(float).tiny)
        if n >= 2:
            out["holder_grad_error"] = holder_seminorm(x[:n], De[:n], alpha)
    out["alpha"] = alpha
    return out


# ---------------------------------------------------------------------------------------------
# training


def _check_data(
    d: int | None,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    jac: npt.ArrayLike | None,
    scalar: bool | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Return ``x (N, d)``, ``Y (N, m)`` and ``J (N, m, k)`` or raise a ValueError."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"points must have shape (N, d) with N > 0, got shape {x.shape}")
    if d is not None and x.shape[1] != d:
        raise ValueError(f"points have {x.shape[1]} coordinates, the model takes {d} inputs")
    Y = np.asarray(y, dtype=np.float64)
    if Y.shape[:1] != (len(x),) or Y.ndim not in (1, 2):
        raise ValueError(f"values must have shape ({len(x)},) or ({len(x)}, m), got {Y.shape}")
    if scalar is not None and scalar != (Y.ndim == 1):
        kind = "scalar, shape (N,)" if scalar else "vector, shape (N, m)"
        raise ValueError(f"the model's field is {kind}; values have shape {Y.shape}")
    is_scalar = Y.ndim == 1
    Y = Y.reshape(len(x), -1)
    J = None
    if jac is not None:
        J = np.asarray(jac, dtype=np.float64)
        if is_scalar and J.ndim == 2:
            J = J[:, None, :]
        if J.ndim != 3 or J.shape[:2] != Y.shape:
            want = f"({len(x)}, k)" if is_scalar else f"({len(x)}, {Y.shape[1]}, k)"
            raise ValueError(f"derivatives must have shape {want}, got {np.shape(jac)}")
    for name, arr in (("points", x), ("values", Y), ("derivatives", J)):
        if arr is not None and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contain NaN or inf")
    return x, Y, J


def _derivative_inputs(d: int, k: Sequence[int] | None, J: FloatArray | None) -> list[int]:
    idx = list(range(d)) if k is None else [int(i) for i in k]
    if any(i < 0 or i >= d for i in idx) or len(set(idx)) != len(idx):
        raise ValueError(f"derivative_inputs {list(idx)} must be distinct indices in [0, {d})")
    if J is not None and J.shape[2] != len(idx):
        raise ValueError(
            f"derivatives have {J.shape[2]} columns but derivative_inputs has {len(idx)} entries"
        )
    return idx


def _init_weights(
    widths: Sequence[int], activation: str, seed: int
) -> list[tuple[FloatArray, FloatArray]]:
    rng = np.random.default_rng(seed)
    gain = _GAIN[activation]
    out = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        g = 1.0 if i == len(widths) - 2 else gain
        W = rng.normal(0.0, math.sqrt(g / n_in), size=(n_in, n_out))
        b = np.zeros(n_out) if i == len(widths) - 2 else rng.normal(0.0, 0.1, size=n_out)
        out.append((W, b))
    return out


def _idle_bcast(obj: Any, comm: Any) -> Any:
    """``comm.bcast(obj, root=0)``, but the other ranks sleep instead of spinning meanwhile.

    MPI's blocking calls busy-wait; while rank 0 trains, a spinning rank would take a CPU core
    from it. Collective.
    """
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(0.02)
    return comm.bcast(obj, root=0)


def _progress_default(comm: Any) -> bool:
    """Progress on rank 0 (of ``comm``, else of COMM_WORLD if MPI is loaded) to a terminal."""
    if comm is None:
        mpi = sys.modules.get("mpi4py.MPI")
        comm = getattr(mpi, "COMM_WORLD", None)
    rank = 0 if comm is None else comm.rank
    return rank == 0 and sys.stderr.isatty()


def fit(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    jac: npt.ArrayLike | None = None,
    *,
    activation: str = "requ",
    width: int = 32,
    depth: int = 2,
    steps: int = 2000,
    learning_rate: float = 1e-2,
    batch_size: int | None = None,
    derivative_weight: float = 1.0,
    derivative_inputs: Sequence[int] | None = None,
    seed: int = 0,
    dtype: str = "float32",
    bounds: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    input_names: Sequence[str] | None = None,
    field: str = "",
    validation: tuple[Any, Any, Any] | None = None,
    target_c1_rel: float | None = None,
    check_every: int = 100,
    callback: Callable[[int, float], None] | None = None,
    progress: bool | None = None,
    comm: Any = None,
) -> Network:
    """Fit a network to values ``y`` and derivatives ``jac`` at points ``x`` (Sobolev loss).

    Args:
        x: Training points, shape ``(N, d)``: ``x``, ``(x, θ)`` or ``(x, t, θ)`` coordinates.
        y: Values, ``(N,)`` for a scalar field or ``(N, m)``.
        jac: Derivatives with respect to ``derivative_inputs``, ``(N, k)`` or ``(N, m, k)``;
            ``None`` fits values only.
        activation: One of :data:`ACTIVATIONS`.
        width: Neurons per hidden layer.
        depth: Number of hidden layers.
        steps: Optimiser steps (Adam, warm-up then cosine decay to ``learning_rate / 1000``).
        learning_rate: Peak learning rate.
        batch_size: Points per step; ``None`` uses all points (full batch, deterministic).
        derivative_weight: ``λ`` in the loss (0 fits values only).
        derivative_inputs: Indices of the inputs the columns of ``jac`` differentiate by.
        seed: Seeds the initial weights and the minibatches; the same seed gives the same model.
        dtype: ``"float32"`` (fast) or ``"float64"`` for the training arithmetic.
        bounds: ``(lower, upper)`` input box mapped onto ``[-1, 1]^d``; default: the points'.
        input_names: Names of the inputs, stored with the model.
        field: Name of the field, stored with the model.
        validation: ``(x, y, jac)`` held-out data; with ``target_c1_rel``, training stops at the
            first check (every ``check_every`` steps) with ``c1_rel <= target_c1_rel``.
        target_c1_rel: Relative ``C¹`` error at which to stop early.
        check_every: Steps per compiled chunk, between progress reports and validation checks.
        callback: Called as ``callback(step, loss)`` after every chunk (on the training rank).
        progress: Print progress to stderr; default: on rank 0 when stderr is a terminal.
        comm: An MPI communicator. With more than one rank, rank 0 trains and broadcasts the
            model (collective); errors are raised on every rank.

    Returns:
        The model; ``model.info`` holds ``seed``, ``steps`` (taken), ``seconds``, ``loss``,
        ``history`` (``[step, loss]`` per chunk) and, with ``validation``, ``validation`` errors.

    Raises:
        ValueError: Bad shapes, non-finite data or options.
        ImportError: JAX or optax is missing.
    """
    if comm is not None and comm.size > 1:
        result: Network | BaseException | None = None
        if comm.rank == 0:
            try:
                result = fit(
                    x, y, jac, activation=activation, width=width, depth=depth, steps=steps,
                    learning_rate=learning_rate, batch_size=batch_size,
                    derivative_weight=derivative_weight, derivative_inputs=derivative_inputs,
                    seed=seed, dtype=dtype, bounds=bounds, input_names=input_names, field=field,
                    validation=validation, target_c1_rel=target_c1_rel, check_every=check_every,
                    callback=callback, progress=progress, comm=None,
                )  # fmt: skip
            except Exception as err:  # noqa: BLE001 - re-raised on every rank below
                result = err
        result = _idle_bcast(result, comm)
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        return result

    # ---- check arguments before importing JAX, so bad input fails fast and clearly
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
        )
    for name, val in (("width", width), ("depth", depth), ("steps", steps)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    if not derivative_weight >= 0:
        raise ValueError(f"derivative_weight must be >= 0, got {derivative_weight!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    X, Y, J = _check_data(None, x, y, jac)
    scalar = np.asarray(y).ndim == 1
    N, d = X.shape
    m = Y.shape[1]
    k = _derivative_inputs(d, derivative_inputs, J)
    if batch_size is not None and not 1 <= batch_size:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if target_c1_rel is not None and (validation is None or validation[2] is None):
        raise ValueError("target_c1_rel needs validation=(x, y, jac) with derivatives")
    if bounds is None:
        lower, upper = X.min(axis=0), X.max(axis=0)
    else:
        lower = np.asarray(bounds[0], dtype=np.float64).reshape(-1)
        upper = np.asarray(bounds[1], dtype=np.float64).reshape(-1)
        if lower.shape != (d,) or upper.shape != (d,):
            raise ValueError(f"bounds must be two arrays of length {d}, got {bounds!r}")
    if np.any(upper <= lower):
        bad = [i for i in range(d) if upper[i] <= lower[i]]
        raise ValueError(
            f"inputs {bad} do not vary over the points (bounding box {lower}..{upper}); "
            "pass bounds=(lower, upper) or drop those inputs"
        )
    names = list(input_names) if input_names is not None else [f"x{i}" for i in range(d)]
    if len(names) != d:
        raise ValueError(f"{len(names)} input names {names} for {d} inputs")

    jax, jnp, optax = _require_jax()
    t0 = time.perf_counter()
    half = 0.5 * (upper - lower)
    shift = Y.mean(axis=0)
    scale = float(np.sqrt(np.mean(np.sum((Y - shift) ** 2, axis=1)))) or 1.0
    Z = (X - lower) / half - 1.0
    Yn = (Y - shift) / scale
    # Derivatives in normalised coordinates: ∂g/∂z = (∂u/∂x) · half / scale.
    Jn = None if J is None else J * half[k][None, None, :] / scale
    y_den = max(float(np.mean(np.sum(Yn**2, axis=1))), 1e-30)
    j_den = 1.0 if Jn is None else max(float(np.mean(np.sum(Jn**2, axis=(1, 2)))), 1e-30)
    lam = 0.0 if Jn is None else float(derivative_weight)

    widths = [d] + [width] * depth + [m]
    init = _init_weights(widths, activation, seed)
    sigma = _act_jax(activation)
    kidx = np.asarray(k)

    def g(params: Any, z: Any) -> Any:
        h = z
        for W, b in params[:-1]:
            h = sigma(h @ W + b)
        W, b = params[-1]
        return h @ W + b

    def loss_fn(params: Any, z: Any, yt: Any, jt: Any) -> Any:
        val = jnp.mean(jnp.sum((g(params, z) - yt) ** 2, axis=1)) / y_den
        if lam == 0.0:
            return val
        jz = jax.vmap(jax.jacfwd(lambda zz: g(params, zz)))(z)[:, :, kidx]
        return val + lam * jnp.mean(jnp.sum((jz - jt) ** 2, axis=(1, 2))) / j_den

    warmup = min(100, max(steps // 20, 1))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=learning_rate / 100, peak_value=learning_rate, warmup_steps=warmup,
        decay_steps=max(steps, warmup + 1), end_value=learning_rate / 1000,
    )  # fmt: skip
    opt = optax.adam(schedule)
    show = _progress_default(None) if progress is None else progress
    history: list[list[float]] = []
    info_val: dict[str, float] | None = None

    def to_numpy(params: Any) -> list[tuple[FloatArray, FloatArray]]:
        return [(np.asarray(W, dtype=np.float64), np.asarray(b, np.float64)) for W, b in params]

    def make_model(params: Any) -> Network:
        return Network(
            activation=activation, weights=to_numpy(params), lower=lower, upper=upper,
            shift=shift, scale=scale, scalar=scalar, field=field, input_names=names,
        )  # fmt: skip

    # Top-level jax.enable_x64 is recent; older JAX has it in jax.experimental.
    x64: Any = getattr(jax, "enable_x64", None)
    if x64 is None:
        import jax.experimental

        x64 = jax.experimental.enable_x64  # type: ignore[attr-defined]
    with x64(dtype == "float64"):
        ft = jnp.float64 if dtype == "float64" else jnp.float32
        params = [(jnp.asarray(W, ft), jnp.asarray(b, ft)) for W, b in init]
        zt, yt = jnp.asarray(Z, ft), jnp.asarray(Yn, ft)
        jt = jnp.zeros((N, m, len(k)), ft) if Jn is None else jnp.asarray(Jn, ft)
        opt_state = opt.init(params)
        B = N if batch_size is None else min(int(batch_size), N)

        def step(carry: Any, _: Any) -> tuple[Any, Any]:
            params, opt_state, key = carry
            if B < N:
                key, sub = jax.random.split(key)
                idx = jax.random.randint(sub, (B,), 0, N)
                batch = (zt[idx], yt[idx], jt[idx])
            else:
                batch = (zt, yt, jt)
            loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state, key), loss

        run_chunk = jax.jit(
            lambda carry, n: jax.lax.scan(step, carry, None, length=n), static_argnums=1
        )
        carry = (params, opt_state, jax.random.key(seed))
        done = 0
        while done < steps:
            n = min(check_every, steps - done)
            carry, losses = run_chunk(carry, n)
            done += n
            loss = float(losses[-1])
            history.append([done, loss])
            if not math.isfinite(loss):
                raise RuntimeError(
                    f"training diverged at step {done} (loss {loss}); "
                    "lower the learning rate or the depth"
                )
            if callback is not None:
                callback(done, loss)
            msg = f"fit {activation} {widths}: step {done}/{steps} loss {loss:.3e}"
            if target_c1_rel is not None:
                assert validation is not None
                info_val = errors(
                    make_model(carry[0]), *validation, derivative_inputs=k, holder_points=0
                )
                msg += f" c1_rel {info_val['c1_rel']:.3e}"
                if info_val["c1_rel"] <= target_c1_rel:
                    if show:
                        print("\r" + msg, file=sys.stderr)
                    break
            if show:
                print("\r" + msg, end="" if done < steps else "\n", file=sys.stderr, flush=True)
        model = make_model(carry[0])
    seconds = time.perf_counter() - t0
    model.info = {
        "seed": seed,
        "steps": done,
        "max_steps": steps,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "derivative_weight": derivative_weight,
        "derivative_inputs": k,
        "dtype": dtype,
        "training_points": N,
        "loss": history[-1][1],
        "seconds": seconds,
        "history": history,
    }
    if validation is not None:
        model.info["validation"] = errors(model, *validation, derivative_inputs=k)
    return model


# ---------------------------------------------------------------------------------------------
# data from a run, and the `beckmann fit` command


def sample_domain(msh: Any, n: int, seed: int) -> FloatArray:
    """``n`` points uniformly distributed in the mesh's domain, the same on every rank.

    Cells are drawn with probability proportional to their volume, then a point in the cell
    with uniform barycentric coordinates (a flat Dirichlet sample). Uses the cells' vertices, so
    a curved (higher-order) geometry is sampled on its straight-sided cells. Collective: the
    cells are gathered on rank 0, put in a canonical order and sampled with
    ``numpy.random.default_rng(seed)``: the same points on any number of ranks.
    """
    from beckmann._dolfinx import dmesh

    tdim, gdim = msh.topology.dim, msh.geometry.dim
    if tdim != gdim:
        raise ValueError(f"sampling needs a mesh of full dimension, got tdim {tdim}, gdim {gdim}")
    ncells = msh.topology.index_map(tdim).size_local
    nodes = dmesh.entities_to_geometry(msh, tdim, np.arange(ncells, dtype=np.int32), False)
    verts = msh.geometry.x[nodes[:, : tdim + 1], :gdim]  # (cells, tdim + 1, gdim)
    pieces = msh.comm.gather(verts, root=0)
    pts = None
    if msh.comm.rank == 0:
        assert pieces is not None
        V = np.concatenate(pieces)
        # A canonical order of cells and of their vertices, so that the sample does not depend
        # on the partition (the number of ranks): vertices sorted lexicographically in each
        # cell, cells by their (rounded) centroids.
        order = np.lexsort(V.transpose(2, 0, 1)[::-1], axis=-1)
        V = np.take_along_axis(V, order[:, :, None], axis=1)
        key = np.round(V.mean(axis=1), 12)
        V = V[np.lexsort(key.T[::-1])]
        vol = np.abs(np.linalg.det(V[:, 1:] - V[:, :1])) / math.factorial(tdim)
        rng = np.random.default_rng(seed)
        cells = rng.choice(len(V), size=n, p=vol / vol.sum())
        lam = rng.dirichlet(np.ones(tdim + 1), size=n)
        pts = np.einsum("nk,nkd->nd", lam, V[cells])
    return np.asarray(msh.comm.bcast(pts, root=0))


def _eval_function(sol: Any, u: Any, x: FloatArray) -> FloatArray:
    """Values of a dolfinx Function at points given on every rank; collective (like evaluate)."""
    from beckmann._dolfinx import MPI

    xp, cells, mine = sol.locator().locate(x)
    size = int(np.prod(u.ufl_shape)) if u.ufl_shape else 1
    out = np.zeros((len(x), size))
    idx = np.flatnonzero(mine)
    if idx.size:
        out[idx] = u.eval(xp[idx], cells[idx]).reshape(len(idx), size)
    return np.asarray(sol.comm.allreduce(out, op=MPI.SUM)).reshape(len(x), *u.ufl_shape)


def training_data(
    sol: Any, field: str, x: FloatArray, t: float = 0.0
) -> tuple[FloatArray, FloatArray]:
    """Values and input derivatives of a field of a :class:`~beckmann.fields.Solution` at ``x``.

    - ``potential``: ``φ`` and ``∇φ`` (the flux; exact for the FE field),
    - ``flux``: ``F = ∇φ`` and its Jacobian ``D²φ`` (the Hessian of the FE potential, exact
      inside each cell, piecewise ``P_{k−2}``; needs degree ``k ≥ 2``),
    - ``velocity``: ``v_t = F / p_t`` exactly at the points, and its Jacobian
      ``(D²φ p_t − F ⊗ ∇p_t) / p_t²`` interpolated cellwise into discontinuous ``P_k``.

    The derivatives of ``flux`` and ``velocity`` are those of the discrete field inside the
    cells: they jump across facets, by ``O(h^{k−1})`` for a smooth solution. Collective.

    Returns:
        ``(y, jac)``: ``(N,)`` and ``(N, d)`` for the potential, ``(N, d)`` and ``(N, d, d)``.

    Raises:
        ValueError: Unknown field, or ``flux``/``velocity`` derivatives with degree 1.
    """
    from beckmann._dolfinx import fem, ufl
    from beckmann.fields import velocity_expression

    if field not in FIELDS:
        raise ValueError(f"unknown field {field!r}; choose one of {', '.join(FIELDS)}")
    vals = sol.evaluate(x, t, what=("potential", "flux", "velocity"))
    if field == "potential":
        return vals["potential"], vals["flux"]
    if sol.degree < 2:
        raise ValueError(
            f"--field {field} needs the Jacobian of the flux, which is zero in every cell for "
            "degree 1; solve with --set solver.degree=2 (or higher)"
        )
    d = sol.gdim
    grad_phi = ufl.grad(sol.phi)
    expr = grad_phi if field == "flux" else velocity_expression(grad_phi, sol.p0, sol.p1, t)
    degree = sol.degree - 2 if field == "flux" else sol.degree
    W = fem.functionspace(sol.msh, ("DG", degree, (d, d)))
    Ju = fem.Function(W, name=f"jacobian_{field}")
    Ju.interpolate(fem.Expression(ufl.grad(expr), W.element.interpolation_points))
    return vals[field], _eval_function(sol, Ju, x)


def register_cli(subparsers: Any) -> None:
    """Add the ``fit`` subcommand to the ``beckmann`` command line."""
    p = subparsers.add_parser(
        "fit",
        help="fit a ReQu (or other) network to a field of a run, in values and derivatives",
        description=(
            "Fit a network to the potential (with its gradient), the flux (with its Jacobian) or "
            "the velocity v_t (with its Jacobian) of a solved run; save it as MODEL.json + "
            "MODEL.npz and print a JSON report of the errors on held-out points."
        ),
    )
    p.add_argument(
        "source",
        help="run folder (`beckmann solve --out DIR`) or sweep store (`beckmann sweep --out DIR`;"
        " inputs (x, θ), or (x, t, θ) for the velocity)",
    )
    p.add_argument("--field", default="potential", help=f"one of {', '.join(FIELDS)}")
    p.add_argument("--activation", default="requ", help=f"one of {', '.join(ACTIVATIONS)}")
    p.add_argument("--width", type=int, default=32, help="neurons per hidden layer")
    p.add_argument("--depth", type=int, default=2, help="hidden layers")
    p.add_argument("--steps", type=int, default=2000, help="Adam steps")
    p.add_argument("--lr", type=float, default=1e-2, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="seeds weights and point samples")
    p.add_argument("--time", type=float, default=0.0, help="time t of the velocity")
    p.add_argument(
        "--time-input",
        action="store_true",
        help="velocity of a run: fit v(x, t) with t uniform in [0, 1] (always so for a sweep)",
    )
    p.add_argument("--points", type=int, default=2048, help="training points")
    p.add_argument("--test-points", type=int, default=1000, help="held-out points")
    p.add_argument("--batch-size", type=int, default=None, help="default: full batch")
    p.add_argument(
        "--derivative-weight", type=float, default=1.0, help="weight of the derivative loss"
    )
    p.add_argument("--alpha", type=float, default=0.5, help="Hölder exponent of the error")
    p.add_argument("--out", required=True, help="model path: writes MODEL.json and MODEL.npz")
    p.add_argument("--json-out", help="also write the report here")
    p.set_defaults(func=handler)


def handler(args: Any, comm: Any) -> int:
    """Run ``beckmann fit``; collective. Prints the JSON report on rank 0."""
    from beckmann import io

    t0 = time.perf_counter()
    if args.field not in FIELDS:
        raise ValueError(f"unknown field {args.field!r}; choose one of {', '.join(FIELDS)}")
    if args.activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {args.activation!r}; choose one of {', '.join(ACTIVATIONS)}"
        )
    for name in ("width", "depth", "steps", "points", "test_points"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0.0 <= args.time <= 1.0:
        raise ValueError(f"--time must lie in [0, 1], got {args.time}")
    ok = True
    if comm.rank == 0:
        try:
            _require_jax()
        except ImportError:
            ok = False
    if not comm.bcast(ok, root=0):
        raise RuntimeError(_INSTALL_HINT)
    from beckmann.surrogate import fit_cli, is_sweep_store

    sweep = comm.bcast(is_sweep_store(args.source) if comm.rank == 0 else None, root=0)
    if sweep or getattr(args, "time_input", False):
        return fit_cli(args, comm)  # inputs (x, [t,] θ): beckmann.surrogate
    sol = io.load_run(args.source, comm)
    x = sample_domain(sol.msh, args.points, args.seed)
    xt = sample_domain(sol.msh, args.test_points, args.seed + 1)
    y, J = training_data(sol, args.field, x, args.time)
    yt, Jt = training_data(sol, args.field, xt, args.time)
    d = sol.gdim
    lo, hi = _bbox(sol.msh)
    model = fit(
        x, y, J, activation=args.activation, width=args.width, depth=args.depth,
        steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size,
        derivative_weight=args.derivative_weight, seed=args.seed, bounds=(lo, hi),
        input_names=["x", "y", "z"][:d], field=args.field, comm=comm,
    )  # fmt: skip
    report: dict[str, Any] | None = None
    if comm.rank == 0:
        err = errors(model, xt, yt, Jt, alpha=args.alpha)
        model.info.update(
            source=str(args.source), time=args.time, test_points=args.test_points, errors=err
        )
        model.save(args.out)
        report = {"field": args.field, "time": args.time}
        print_fit_report(
            report, model, args, err, t0=t0, training_points=args.points,
            test_points=args.test_points, degree=sol.degree,
        )  # fmt: skip
    comm.Barrier()
    return 0


def print_fit_report(
    head: dict[str, Any],
    model: Network,
    args: Any,
    err: dict[str, Any],
    *,
    t0: float,
    training_points: int,
    test_points: int,
    degree: int,
) -> dict[str, Any]:
    """Complete, print and (with ``--json-out``) write the JSON report of ``beckmann fit``.

    Shared by run and sweep sources; ``head`` holds the source-specific keys. Rank 0 only.
    """
    report = {
        **head,
        "activation": args.activation,
        "width": args.width,
        "depth": args.depth,
        "parameters": model.parameters,
        "steps": model.info["steps"],
        "seconds": round(time.perf_counter() - t0, 3),
        "train_seconds": round(model.info["seconds"], 3),
        **err,
        "loss": model.info["loss"],
        "training_points": training_points,
        "test_points": test_points,
        "degree": degree,
        "out": str(_stem(args.out)),
    }
    text = json.dumps(report, default=_json_default)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(text, flush=True)
    return report


def _bbox(msh: Any) -> tuple[FloatArray, FloatArray]:
    """Bounding box of the mesh nodes over all ranks; collective."""
    from beckmann._dolfinx import MPI

    x = msh.geometry.x[:, : msh.geometry.dim]
    lo, hi = np.ascontiguousarray(x.min(axis=0)), np.ascontiguousarray(x.max(axis=0))
    glo, ghi = np.empty_like(lo), np.empty_like(hi)
    msh.comm.Allreduce(lo, glo, op=MPI.MIN)
    msh.comm.Allreduce(hi, ghi, op=MPI.MAX)
    return glo, ghi
