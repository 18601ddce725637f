"""Export a network as one self-contained ``.npz`` plus a loader that needs only NumPy (or JAX).

``beckmann export MODEL --to numpy --out NET.npz`` (:func:`export_numpy`) writes

- ``NET.npz``: ``W0, b0, W1, b1, ...``, ``lower``, ``upper`` (input box), ``shift``, ``scale``
  (output normalisation), ``activation``, ``input_names``, ``field`` and ``scalar`` -- no
  pickle, readable with ``numpy.load(..., allow_pickle=False)``;
- ``NET.py``: the loader below (:func:`load_export`), a copy of its source with no beckmann
  import, so the network runs where beckmann is not installed::

      from NET import load_export          # or copy the function
      v = load_export("NET.npz")           # a plain function of the inputs
      v(x, t, theta)                       # velocity at x (N, d), time(s) t, parameters θ
      v(np.hstack([x, t[:, None], th]))    # the same on stacked inputs (x, t, θ...)

  ``load_export("NET.npz", xp=jax.numpy)`` gives the same function in JAX (differentiable,
  ``jax.jit``-able; enable float64 for round-off agreement).

The exported function is the network's formula ``m + s · g(2 (z − lower)/(upper − lower) − 1)``
with ``g`` the perceptron, exactly as :class:`~beckmann.requ.network.Network` evaluates it. A
velocity in the flux form (:class:`~beckmann.requ.flux_velocity.FluxVelocity`) adds the tables
``density_p0``, ``density_p1`` and their box ``grid_lower``, ``grid_upper``: the perceptron
gives ``F(x)`` and ``v(x, t) = F(x) / ((1 - t) p0(x) + t p1(x))`` with ``p0``, ``p1``
interpolated by :func:`~beckmann.requ.flux_velocity.multilinear`, whose source the loader file
carries (the same code as the model's: the export matches to round-off).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np

from beckmann.requ.flux_velocity import FluxVelocity, multilinear
from beckmann.requ.network import Network

__all__ = ["EXPORT_FORMATS", "export", "export_numpy", "load_export"]

EXPORT_FORMATS = ("numpy",)


def load_export(path: Any, xp: Any = None) -> Any:
    """A network exported by ``beckmann export`` as a plain function (NumPy by default).

    Args:
        path: The ``.npz`` file.
        xp: The array module: ``numpy`` (default) or ``jax.numpy``.

    Returns:
        ``f(x, t=None, theta=None)``: ``x`` is ``(N, k)`` -- all inputs stacked, or the space
        coordinates followed by ``t`` (a number or ``(N,)``) and ``theta`` (the parameter values
        shared by all points, ``(p,)``, or ``(N, p)``). Returns ``(N,)`` for a scalar field,
        else ``(N, m)``. ``f.input_names`` and ``f.field`` describe it.
    """
    import math
    import zipfile

    import numpy

    xp = numpy if xp is None else xp
    # Every header is read before any data: no pickle, no allocation from a declared shape.
    fmt = numpy.lib.format
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{str(path)!r} is not an exported network (not a .npz archive)")
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as fh:
                version = fmt.read_magic(fh)
                read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, dtype = read(fh)
            if dtype.hasobject or math.prod(shape) > 2**25:
                what = f"array {info.filename!r} ({dtype}, shape {shape})"
                raise ValueError(f"{str(path)!r}: {what} is refused (object or too large)")
    with numpy.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    for k, a in arrays.items():
        if a.dtype.kind == "f" and not numpy.all(numpy.isfinite(a)):
            raise ValueError(f"{str(path)!r}: array {k!r} contains NaN or inf")
    n_layers = sum(1 for k in arrays if k.startswith("W") and k[1:].isdigit())
    layers = [(xp.asarray(arrays[f"W{i}"]), xp.asarray(arrays[f"b{i}"])) for i in range(n_layers)]
    lower, upper = xp.asarray(arrays["lower"]), xp.asarray(arrays["upper"])
    shift, scale = xp.asarray(arrays["shift"]), float(arrays["scale"])
    activation, scalar = str(arrays["activation"]), bool(arrays["scalar"])
    d = int(arrays["lower"].shape[0])
    # velocity_form "flux/p_t": the perceptron gives F(x); v = F / ((1 - t) p0 + t p1) with
    # p0, p1 interpolated multilinearly from their grid tables
    tables = None
    if "density_p0" in arrays:
        tables = tuple(
            xp.asarray(arrays[k]) for k in ("density_p0", "density_p1", "grid_lower", "grid_upper")
        )
    sigma = {
        "requ": lambda a: xp.maximum(a, 0.0) ** 2,
        "relu": lambda a: xp.maximum(a, 0.0),
        "tanh": xp.tanh,
        "softplus": lambda a: xp.logaddexp(0.0, a),
    }[activation]

    def f(x: Any, t: Any = None, theta: Any = None) -> Any:
        x = xp.asarray(x, dtype=lower.dtype)
        n = x.shape[0]
        parts = [x]
        if t is not None:
            t = xp.asarray(t, dtype=lower.dtype)
            parts.append(xp.full((n, 1), t) if t.ndim == 0 else t.reshape(n, 1))
        if theta is not None:
            theta = xp.asarray(theta, dtype=lower.dtype)
            parts.append(
                theta.reshape(n, -1) if theta.ndim == 2 else xp.tile(theta.reshape(1, -1), (n, 1))
            )
        z = xp.concatenate(parts, axis=1) if len(parts) > 1 else x
        want = d + (tables is not None)
        if z.shape[1] != want:
            raise ValueError(f"the network takes {want} inputs, got {z.shape[1]}")
        h = 2.0 * (z[:, :d] - lower) / (upper - lower) - 1.0
        for W, b in layers[:-1]:
            h = sigma(h @ W + b)
        W, b = layers[-1]
        y = shift + scale * (h @ W + b)
        if tables is not None:
            p0, p1, glo, ghi = tables
            tt = z[:, d]
            pt = (1.0 - tt) * multilinear(xp, p0, glo, ghi, z[:, :d]) + tt * multilinear(
                xp, p1, glo, ghi, z[:, :d]
            )
            y = y / pt[:, None]
        return y[:, 0] if scalar else y

    f.input_names = [str(s) for s in arrays["input_names"]]  # type: ignore[attr-defined]
    f.field = str(arrays["field"])  # type: ignore[attr-defined]
    return f


def export_numpy(model: Network | FluxVelocity, path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``PATH.npz`` (everything the network needs) and ``PATH.py`` (its loader).

    Not collective: call it on one rank.

    Returns:
        The paths of the ``.npz`` and the loader.
    """
    p = Path(path)
    npz = p if p.suffix == ".npz" else p.with_name(p.name + ".npz")
    loader = npz.with_suffix(".py")
    arrays: dict[str, Any] = {}
    net = model.flux if isinstance(model, FluxVelocity) else model
    for i, (W, b) in enumerate(net.weights):
        arrays[f"W{i}"], arrays[f"b{i}"] = W, b
    arrays.update(
        lower=net.lower, upper=net.upper, shift=net.shift, scale=np.float64(net.scale),
        activation=np.str_(net.activation), scalar=np.bool_(net.scalar),
        input_names=np.array(model.input_names, dtype=str), field=np.str_(model.field),
    )  # fmt: skip
    if isinstance(model, FluxVelocity):
        arrays.update(
            density_p0=model.p0, density_p1=model.p1, grid_lower=model.grid_lower,
            grid_upper=model.grid_upper,
        )  # fmt: skip
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez(npz, **arrays)
    head = f'"""Loader of {npz.name}, a network exported by beckmann (needs only NumPy)."""\n\n'
    source = inspect.getsource(multilinear) + "\n\n" + inspect.getsource(load_export)
    imports = "from typing import Any\n\nimport numpy as np\n\n\n"
    loader.write_text(head + imports + source)
    return npz, loader


def export(
    model: Network | FluxVelocity, path: str | os.PathLike[str], to: str = "numpy"
) -> tuple[Path, Path]:
    """Export ``model`` in format ``to`` (one of :data:`EXPORT_FORMATS`)."""
    if to not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {to!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    return export_numpy(model, path)
