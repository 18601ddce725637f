"""The network: a multilayer perceptron with input and output normalisation, in NumPy.

A network ``f(x) = m + s · g(A x + c)`` approximates a field ``u`` (docs/math.md, "ReQu
networks"). ``g`` is a multilayer perceptron with activation

- ``requ``: ``σ(z) = max(0, z)²`` (piecewise quadratic, C¹: the network and its input derivatives
  both approximate),
- ``relu``: ``max(0, z)`` (piecewise linear, its derivative is piecewise constant),
- ``tanh`` and ``softplus`` (smooth, for comparison).

``A x + c`` maps the box ``[lower, upper]`` affinely onto ``[-1, 1]^d``; ``m`` (per output
component) and ``s`` (one number) rescale the outputs. Evaluation (``model(x)``,
``model.jacobian(x)``, forward-mode) is plain NumPy in float64 and needs neither JAX nor DOLFINx.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ACTIVATIONS",
    "Network",
    "activation",
    "check_activation",
    "check_data",
    "check_derivative_inputs",
]

FloatArray = npt.NDArray[np.float64]

ACTIVATIONS = ("requ", "relu", "tanh", "softplus")


def check_activation(name: str) -> str:
    """Return ``name`` if it is one of :data:`ACTIVATIONS`, else raise a ValueError."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return name


def activation(name: str, a: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Return ``σ(a)`` and ``σ'(a)`` for the activation ``name``."""
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
    check_activation(name)
    raise AssertionError  # unreachable: check_activation raised


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
        info: Training report (seed, steps, seconds, loss, errors); saved with the model.
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
        check_activation(self.activation)
        self.weights = [
            (np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64))
            for W, b in self.weights
        ]
        self.lower = np.asarray(self.lower, dtype=np.float64)
        self.upper = np.asarray(self.upper, dtype=np.float64)
        self.shift = np.asarray(self.shift, dtype=np.float64)
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
        Ja: FloatArray | None = None
        for i, (W, b) in enumerate(self.weights):
            a = h @ W + b
            if jac:
                # Forward mode: J = ∂h/∂z has shape (N, n, d); the first layer's ∂a/∂z is W^T.
                Ja = (
                    np.broadcast_to(W.T, (len(x), *W.T.shape))
                    if J is None
                    else np.einsum("nid,io->nod", J, W)
                )
            if i == len(self.weights) - 1:
                h = a
                J = Ja
            else:
                h, dh = activation(self.activation, a)
                if Ja is not None:
                    J = dh[:, :, None] * Ja
        y = self.shift + self.scale * h
        if J is not None:
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


def check_data(
    d: int | None,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    jac: npt.ArrayLike | None,
    scalar: bool | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Points, values and derivatives as ``x (N, d)``, ``Y (N, m)``, ``J (N, m, k)``.

    Args:
        d: The number of inputs required (``None``: any).
        x: Points, ``(N, d)`` (or ``(N,)`` for one input).
        y: Values, ``(N,)`` (scalar field) or ``(N, m)``.
        jac: Derivatives ``(N, k)`` (scalar field) or ``(N, m, k)``, or ``None``.
        scalar: If given, whether the values must be scalar.

    Raises:
        ValueError: Bad shapes, or NaN or inf anywhere.
    """
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


def check_derivative_inputs(d: int, k: Sequence[int] | None, J: FloatArray | None) -> list[int]:
    """The input indices ``k`` the derivative columns of ``J`` refer to (default: all ``d``)."""
    idx = list(range(d)) if k is None else [int(i) for i in k]
    if any(i < 0 or i >= d for i in idx) or len(set(idx)) != len(idx):
        raise ValueError(f"derivative_inputs {list(idx)} must be distinct indices in [0, {d})")
    if J is not None and J.shape[2] != len(idx):
        raise ValueError(
            f"derivatives have {J.shape[2]} columns but derivative_inputs has {len(idx)} entries"
        )
    return idx
