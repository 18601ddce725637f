"""Training networks with JAX and optax: the relative Sobolev loss, Adam, compiled chunks.

Training minimises

    L = mean|f − u|² / mean|u|² + λ · mean|D_k f − D_k u|² / mean|D_k u|²

over the training points, where ``D_k`` is the derivative with respect to the inputs ``k`` (all
inputs by default; e.g. only the space coordinates and ``t`` when the ``θ`` inputs carry no
derivative data). ``D_k f`` comes from ``jax.jacfwd``; the steps are ``jax.jit``-compiled and run
in chunks under ``lax.scan``; optax Adam follows a warm-up + cosine schedule. Initial weights come
from ``numpy.random.default_rng(seed)`` and minibatches from ``jax.random.key(seed)``: the same
seed gives the same weights.

JAX and optax are the optional ``nn`` extra (``pip install 'beckmann[nn]'``) and are imported
only here, inside the functions. **Platform:** JAX runs on the CPU unless told otherwise: before
JAX is first imported, :func:`require_jax` sets ``JAX_PLATFORMS=cpu`` if that environment
variable is unset (``os.environ.setdefault``), so JAX never probes for accelerators on a shared
machine. Set ``JAX_PLATFORMS`` yourself, or pass ``platform="gpu"`` to :func:`fit`
(``beckmann fit --platform gpu``), to use another device.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann.progress import progress as progress_bar
from beckmann.requ.network import (
    Network,
    check_activation,
    check_data,
    check_derivative_inputs,
)
from beckmann.requ.norms import errors

__all__ = ["DTYPES", "INSTALL_HINT", "fit", "init_weights", "require_jax"]

FloatArray = npt.NDArray[np.float64]

INSTALL_HINT = "the network fitter needs JAX and optax: pip install 'beckmann[nn]'"
DTYPES = ("float32", "float64")

# Gain g with Var(W) = g / fan_in keeping pre-activations of unit variance through the layers:
# E[σ(z)²] for z ~ N(0, 1) is 3/2 (requ), 1/2 (relu), about 0.39 (tanh), about 0.92 (softplus).
_GAIN = {"requ": 1.0 / 1.5, "relu": 2.0, "tanh": 1.0 / 0.394, "softplus": 1.0 / 0.92}


def require_jax(platform: str | None = None) -> tuple[Any, Any, Any]:
    """Import JAX and optax, or raise an ImportError saying how to install them.

    Args:
        platform: ``"cpu"``, ``"gpu"``, ... If JAX is not imported yet, this sets
            ``JAX_PLATFORMS``; ``None`` keeps a ``JAX_PLATFORMS`` already in the environment and
            otherwise chooses ``"cpu"``.

    Returns:
        The modules ``jax``, ``jax.numpy`` and ``optax``.
    """
    if "jax" not in sys.modules:
        if platform is None:
            # Never let JAX probe for accelerators unasked: beckmann fits small networks.
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
        else:
            os.environ["JAX_PLATFORMS"] = platform
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    return jax, jnp, optax


def _act_jax(name: str) -> Callable[[Any], Any]:
    jax, jnp, _ = require_jax()
    if name == "requ":
        return lambda a: jnp.square(jnp.maximum(a, 0.0))
    if name == "relu":
        return jax.nn.relu
    if name == "tanh":
        return jnp.tanh
    if name == "softplus":
        return jax.nn.softplus
    check_activation(name)
    raise AssertionError  # unreachable


def init_weights(
    widths: Sequence[int], activation: str, seed: int
) -> list[tuple[FloatArray, FloatArray]]:
    """Initial weights: normal with variance ``gain / fan_in``, seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    gain = _GAIN[check_activation(activation)]
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


def _check_options(
    activation: str, width: int, depth: int, steps: int, learning_rate: float,
    derivative_weight: float, dtype: str, check_every: int, batch_size: int | None,
) -> None:  # fmt: skip
    check_activation(activation)
    for name, val in (("width", width), ("depth", depth), ("steps", steps)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    if not derivative_weight >= 0:
        raise ValueError(f"derivative_weight must be >= 0, got {derivative_weight!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if batch_size is not None and not 1 <= batch_size:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")


def _box(
    X: FloatArray, bounds: tuple[npt.ArrayLike, npt.ArrayLike] | None
) -> tuple[FloatArray, FloatArray]:
    d = X.shape[1]
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
    return lower, upper


def fit(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    jac: npt.ArrayLike | None = None,
    *,
    activation: str = "requ",
    width: int = 32,
    depth: int = 2,
    steps: int = 2000,
    lbfgs_steps: int = 0,
    learning_rate: float = 1e-2,
    batch_size: int | None = None,
    derivative_weight: float = 1.0,
    derivative_inputs: Sequence[int] | None = None,
    seed: int = 0,
    dtype: str = "float32",
    platform: str | None = None,
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
        activation: One of :data:`~beckmann.requ.network.ACTIVATIONS`.
        width: Neurons per hidden layer.
        depth: Number of hidden layers.
        steps: Optimiser steps (Adam, warm-up then cosine decay to ``learning_rate / 1000``).
        lbfgs_steps: Full-batch L-BFGS steps (optax, zoom line search) after Adam.
        learning_rate: Peak learning rate.
        batch_size: Points per step; ``None`` uses all points (full batch, deterministic).
        derivative_weight: ``λ`` in the loss (0 fits values only).
        derivative_inputs: Indices of the inputs the columns of ``jac`` differentiate by.
        seed: Seeds the initial weights and the minibatches; the same seed gives the same model.
        dtype: ``"float32"`` (fast) or ``"float64"`` for the training arithmetic. The model is
            evaluated in float64 either way.
        platform: JAX platform (``"cpu"``, ``"gpu"``); ``None``: see :func:`require_jax`.
        bounds: ``(lower, upper)`` input box mapped onto ``[-1, 1]^d``; default: the points'.
        input_names: Names of the inputs, stored with the model.
        field: Name of the field, stored with the model.
        validation: ``(x, y, jac)`` held-out data; with ``target_c1_rel``, training stops at the
            first check (every ``check_every`` steps) with ``c1_rel <= target_c1_rel``.
        target_c1_rel: Relative ``C¹`` error at which to stop early.
        check_every: Steps per compiled chunk, between progress reports and validation checks.
        callback: Called as ``callback(step, loss)`` after every chunk (on the training rank).
        progress: Show a progress bar; default: on rank 0 when stderr is a terminal.
        comm: An MPI communicator. With more than one rank, rank 0 trains and broadcasts the
            model (collective); errors are raised on every rank.

    Returns:
        The model; ``model.info`` holds ``seed``, ``steps`` (taken), ``seconds``, ``loss``,
        ``history`` (``[step, loss]`` per chunk) and, with ``validation``, ``validation`` errors.

    Raises:
        ValueError: Bad shapes, non-finite data or options.
        ImportError: JAX or optax is missing.
        RuntimeError: The training diverged, or the platform is not available.
    """
    opts = dict(
        activation=activation, width=width, depth=depth, steps=steps, lbfgs_steps=lbfgs_steps,
        learning_rate=learning_rate, batch_size=batch_size, derivative_weight=derivative_weight,
        derivative_inputs=derivative_inputs, seed=seed, dtype=dtype, platform=platform,
        bounds=bounds, input_names=input_names, field=field, validation=validation,
        target_c1_rel=target_c1_rel, check_every=check_every, callback=callback,
        progress=progress,
    )  # fmt: skip
    if comm is not None and comm.size > 1:
        result: Network | BaseException | None = None
        if comm.rank == 0:
            try:
                result = _fit(x, y, jac, **opts)  # type: ignore[arg-type]
            except Exception as err:  # noqa: BLE001 - re-raised on every rank below
                result = err
        result = _idle_bcast(result, comm)
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        return result
    return _fit(x, y, jac, **opts)  # type: ignore[arg-type]


def _lbfgs(
    jax: Any, optax: Any, loss_fn: Callable[..., Any], params: Any, data: tuple[Any, ...], n: int
) -> tuple[Any, float]:
    """``n`` full-batch L-BFGS steps on ``loss_fn(params, *data)``, compiled as one scan."""

    def f(p: Any) -> Any:
        return loss_fn(p, *data)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(f)

    def step(carry: Any, _: Any) -> tuple[Any, Any]:
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=f)
        return (optax.apply_updates(p, updates), state), value

    run = jax.jit(lambda carry: jax.lax.scan(step, carry, None, length=n))
    (params, _), _ = run((params, opt.init(params)))
    return params, float(jax.jit(f)(params))


def _fit(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    jac: npt.ArrayLike | None,
    *,
    activation: str,
    width: int,
    depth: int,
    steps: int,
    lbfgs_steps: int,
    learning_rate: float,
    batch_size: int | None,
    derivative_weight: float,
    derivative_inputs: Sequence[int] | None,
    seed: int,
    dtype: str,
    platform: str | None,
    bounds: tuple[npt.ArrayLike, npt.ArrayLike] | None,
    input_names: Sequence[str] | None,
    field: str,
    validation: tuple[Any, Any, Any] | None,
    target_c1_rel: float | None,
    check_every: int,
    callback: Callable[[int, float], None] | None,
    progress: bool | None,
) -> Network:
    """:func:`fit` on one process."""
    # Check the arguments before importing JAX, so that bad input fails fast and clearly.
    _check_options(
        activation, width, depth, steps, learning_rate, derivative_weight, dtype, check_every,
        batch_size,
    )  # fmt: skip
    if not isinstance(lbfgs_steps, int) or isinstance(lbfgs_steps, bool) or lbfgs_steps < 0:
        raise ValueError(f"lbfgs_steps must be a non-negative integer, got {lbfgs_steps!r}")
    X, Y, J = check_data(None, x, y, jac)
    scalar = np.asarray(y).ndim == 1
    N, d = X.shape
    m = Y.shape[1]
    k = check_derivative_inputs(d, derivative_inputs, J)
    if target_c1_rel is not None and (validation is None or validation[2] is None):
        raise ValueError("target_c1_rel needs validation=(x, y, jac) with derivatives")
    lower, upper = _box(X, bounds)
    names = list(input_names) if input_names is not None else [f"x{i}" for i in range(d)]
    if len(names) != d:
        raise ValueError(f"{len(names)} input names {names} for {d} inputs")

    jax, jnp, optax = require_jax(platform)
    try:
        device = jax.devices(platform)[0] if platform is not None else None
    except RuntimeError as err:
        raise RuntimeError(f"JAX platform {platform!r} is not available: {err}") from err
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
    init = init_weights(widths, activation, seed)
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
    history: list[list[float]] = []

    def make_model(params: Any) -> Network:
        weights = [(np.asarray(W, np.float64), np.asarray(b, np.float64)) for W, b in params]
        return Network(
            activation=activation, weights=weights, lower=lower, upper=upper,
            shift=shift, scale=scale, scalar=scalar, field=field, input_names=names,
        )  # fmt: skip

    # Top-level jax.enable_x64 is recent; older JAX has it in jax.experimental.
    x64: Any = getattr(jax, "enable_x64", None)
    if x64 is None:
        import jax.experimental

        x64 = jax.experimental.enable_x64  # type: ignore[attr-defined]
    bar = progress_bar(steps, f"fit {activation} {widths}", None, disable=progress is False)
    with x64(dtype == "float64"), jax.default_device(device), bar:
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
        done, stop = 0, False
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
            note = f"loss {loss:.3e}"
            stop = False
            if target_c1_rel is not None:
                assert validation is not None
                check = errors(
                    make_model(carry[0]), *validation, derivative_inputs=k, holder_points=0
                )
                note += f" c1_rel {check['c1_rel']:.3e}"
                stop = check["c1_rel"] <= target_c1_rel
            bar.update(n, postfix=note)
            if stop:
                break
        params = carry[0]
        if lbfgs_steps and not stop:
            params, lb_loss = _lbfgs(jax, optax, loss_fn, params, (zt, yt, jt), lbfgs_steps)
            if math.isfinite(lb_loss) and lb_loss <= history[-1][1]:
                history.append([done + lbfgs_steps, lb_loss])
            else:  # a failed line search: keep the Adam weights
                params = carry[0]
        model = make_model(params)
    model.info = {
        "seed": seed,
        "steps": done,
        "max_steps": steps,
        "lbfgs_steps": lbfgs_steps,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "derivative_weight": derivative_weight,
        "derivative_inputs": k,
        "dtype": dtype,
        "platform": str(getattr(device, "platform", None) or jax.default_backend()),
        "training_points": N,
        "loss": history[-1][1],
        "seconds": time.perf_counter() - t0,
        "history": history,
    }
    if validation is not None:
        model.info["validation"] = errors(model, *validation, derivative_inputs=k)
    return model
