"""Fit a network to a field of a run or a sweep store: data, training, held-out errors, files.

:func:`fit_field` is the one entry point of ``beckmann fit`` and of library users::

    from beckmann import requ
    report = requ.fit_field("runs/a", "runs/a/vnet", requ.FitSettings(field="velocity"), comm)

:class:`FitSettings` is the option table: its fields, types, defaults and help texts are what
``beckmann fit --help`` shows (the CLI generates its flags from it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beckmann._mpi import on_root
from beckmann._resources import fit_bytes, require_memory
from beckmann.requ.data import (
    FIELDS,
    SAMPLINGS,
    density_table,
    is_sweep_store,
    members,
    training_set,
)
from beckmann.requ.flux_velocity import FluxVelocity
from beckmann.requ.model_io import model_files, save
from beckmann.requ.network import ACTIVATIONS, Network
from beckmann.requ.norms import errors
from beckmann.requ.train import DTYPES, INSTALL_HINT, fit, require_jax
from beckmann.store import jsonable, write_json
from beckmann.store.writes import before_collective_write, described_write

if TYPE_CHECKING:
    from beckmann._dolfinx import MPI

__all__ = ["VELOCITY_FORMS", "FitSettings", "check_outputs", "fit_field"]

VELOCITY_FORMS = ("auto", "flux", "direct")

#: Largest ``--depth``. JAX compiles every layer (``--depth 100`` took 12 s to compile, 1000
#: did not finish), and a ReQu network of depth L is a polynomial of degree 2^L.
MAX_DEPTH = 64


def _opt(default: Any, help: str, flag: str | None = None) -> Any:  # noqa: A002 - argparse name
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag})


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Options of :func:`fit_field` (and of ``beckmann fit``), with their defaults."""

    field: str = _opt("potential", f"field to fit: {', '.join(FIELDS)}")
    activation: str = _opt("requ", f"activation: {', '.join(ACTIVATIONS)}")
    width: int = _opt(64, "neurons per hidden layer")
    depth: int = _opt(2, "hidden layers")
    steps: int = _opt(4000, "Adam steps")
    learning_rate: float = _opt(1e-2, "peak learning rate (warm-up, then cosine decay)", "--lr")
    batch_size: int | None = _opt(
        512, "points per step (minibatches drawn without replacement; 0: full batch)"
    )
    derivative_weight: float = _opt(1.0, "weight λ of the derivative term of the loss")
    points: int = _opt(16384, "training points (spread over the sweep's θ)")
    test_points: int = _opt(1000, "held-out points, drawn like the training points")
    sampling: str = _opt(
        "path",
        "where points are drawn: 'path' (x from p_t, t uniform; with --uniform-fraction "
        "uniform points mixed in) or 'uniform' (uniform in the mesh)",
    )
    uniform_fraction: float = _opt(0.2, "share of uniform points with --sampling path")
    time: float = _opt(0.0, "time t of a velocity fitted at one time (run without --time-input)")
    time_input: bool = _opt(
        False, "velocity of a run: fit v(x, t) with t an input (always so for a sweep)"
    )
    velocity_form: str = _opt(
        "auto",
        "how a velocity v(x, t) is fitted: 'flux' fits the flux F(x), which does not depend on t "
        "on the linear path, and divides by p_t = (1-t) p0 + t p1 tabulated from the run (a run "
        "only); 'direct' fits v(x, t[, θ]); 'auto': flux for a run with --time-input, direct "
        "for a sweep (p1 depends on θ)",
    )
    seed: int = _opt(0, "seeds the weights, the minibatches and the points")
    dtype: str = _opt("float32", f"training arithmetic: {', '.join(DTYPES)}")
    platform: str | None = _opt(
        None,
        "JAX platform (cpu, gpu, ...); default: $JAX_PLATFORMS if set before JAX is imported, "
        "else cpu",
    )
    alpha: float = _opt(0.5, "Hölder exponent of the reported error seminorms")

    def check(self) -> None:
        """Raise a ValueError naming the option for any bad value."""
        if self.field not in FIELDS:
            raise ValueError(f"unknown field {self.field!r}; choose one of {', '.join(FIELDS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        for name in ("width", "depth", "steps", "points", "test_points"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if self.depth > MAX_DEPTH:
            raise ValueError(
                f"--depth must be <= {MAX_DEPTH}, got {self.depth} (JAX compiles every layer, "
                "and a ReQu network of depth L is a polynomial of degree 2^L)"
            )
        if self.seed < 0:
            raise ValueError(f"--seed must be a non-negative integer, got {self.seed}")
        if self.batch_size is not None and self.batch_size < 0:
            raise ValueError(f"--batch-size must be >= 0 (0: full batch), got {self.batch_size}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"--lr must be positive, got {self.learning_rate}")
        if not self.derivative_weight >= 0:
            raise ValueError(f"--derivative-weight must be >= 0, got {self.derivative_weight}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(
                f"unknown sampling {self.sampling!r}; choose one of {', '.join(SAMPLINGS)}"
            )
        if not 0.0 <= self.uniform_fraction <= 1.0:
            raise ValueError(f"--uniform-fraction must lie in [0, 1], got {self.uniform_fraction}")
        if not 0.0 <= self.time <= 1.0:
            raise ValueError(f"--time must lie in [0, 1], got {self.time}")
        if self.time_input and self.field != "velocity":
            raise ValueError(f"--time-input is for --field velocity, not {self.field!r}")
        if self.velocity_form not in VELOCITY_FORMS:
            raise ValueError(
                f"unknown velocity form {self.velocity_form!r}; choose one of "
                f"{', '.join(VELOCITY_FORMS)}"
            )
        if self.velocity_form == "flux" and self.field != "velocity":
            raise ValueError(f"--velocity-form flux is for --field velocity, not {self.field!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"--alpha must lie in (0, 1], got {self.alpha}")


def check_outputs(out: str | Path, json_out: str | Path | None) -> None:
    """Refuse a report path that is one of the model's own files (``OUT.json``, ``OUT.npz``)."""
    if json_out is None:
        return
    report = Path(json_out).resolve()
    for f in model_files(out):
        if f.resolve() == report:
            raise ValueError(
                f"--json-out {str(json_out)!r} would overwrite the model file {str(f)!r} "
                f"written for --out {str(out)!r}; choose another report path"
            )


def fit_field(
    source: str | Path,
    out: str | Path,
    settings: FitSettings,
    comm: MPI.Comm,
    *,
    json_out: str | Path | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Fit a network to a field of a run folder or a sweep store and save it; collective.

    The inputs are ``x`` (potential, flux, a velocity at one time), ``(x, t)`` (a run's velocity
    with ``time_input``) and ``(x, [t,] θ)`` for a sweep store (the velocity always with ``t``).
    A run's velocity with ``time_input`` is fitted in the flux form by default
    (``settings.velocity_form``): a network of ``F(x)`` divided by ``p_t`` tabulated from the run
    (:class:`~beckmann.requ.flux_velocity.FluxVelocity`); its held-out errors are those of ``v``.
    Training and held-out points are drawn independently from the same measure
    (``settings.sampling``); rank 0 trains (:func:`~beckmann.requ.train.fit`), measures the
    held-out errors (:func:`~beckmann.requ.norms.errors`) and writes ``OUT.json`` + ``OUT.npz``.

    Args:
        source: A run folder (``beckmann solve --out``) or a sweep store (``beckmann sweep``).
        out: Model path (``OUT.json`` and ``OUT.npz`` are written).
        settings: The options.
        comm: The communicator of the run.
        json_out: Also write the report here (never one of the model's files).
        progress: Progress bar (default: on a terminal).

    Returns:
        The report (the same on every rank): errors, sizes, timings and the model path.

    Raises:
        ValueError: Bad settings or paths (before any training), on every rank.
        RuntimeError: JAX or optax missing, or a failing source.
    """
    t0 = time.perf_counter()
    settings.check()
    check_outputs(out, json_out)
    s = settings
    # Before any data or JAX array is allocated: `--width 1000000` is refused in one line.
    require_memory(
        fit_bytes(s.width, s.depth, s.points + s.test_points, s.batch_size or None),
        f"fit --width {s.width} --depth {s.depth} --points {s.points}",
        "lower --width, --depth or --points",
    )

    def probe_jax() -> bool:
        try:
            require_jax(settings.platform)
        except ImportError:
            return False
        return True

    sweep = comm.bcast(is_sweep_store(source) if comm.rank == 0 else None, root=0)
    velocity_t = s.field == "velocity" and (sweep or s.time_input)
    fixed = None if velocity_t else s.time
    if s.velocity_form == "flux" and (sweep or not velocity_t):
        raise ValueError(
            "--velocity-form flux needs a run: p1 of a sweep store depends on θ "
            "(use --velocity-form direct or auto)"
            if sweep
            else "--velocity-form flux fits v(x, t) of a run: add --time-input"
        )
    if not on_root(comm, probe_jax):
        raise RuntimeError(INSTALL_HINT)
    form = "flux" if velocity_t and not sweep and s.velocity_form != "direct" else "direct"
    data = {"time": fixed, "sampling": s.sampling, "uniform_fraction": s.uniform_fraction}
    # the flux form: F(x) at points drawn like the velocity's (t uniform, x from p_t), so the
    # held-out velocity points below are drawn from the same measure
    fitted = "flux" if form == "flux" else s.field
    train = training_set(source, fitted, s.points, s.seed, comm, **data)
    test = training_set(source, s.field, s.test_points, s.seed + 1, comm, **data)
    k = test["derivative_inputs"]
    model: Network | FluxVelocity = fit(
        train["x"], train["y"], train["jac"], activation=s.activation, width=s.width,
        depth=s.depth, steps=s.steps, learning_rate=s.learning_rate,
        batch_size=s.batch_size or None,
        derivative_weight=s.derivative_weight, derivative_inputs=train["derivative_inputs"],
        seed=s.seed, dtype=s.dtype, platform=s.platform, bounds=train["bounds"],
        input_names=train["input_names"], field=fitted, progress=progress, comm=comm,
    )  # fmt: skip
    if form == "flux":
        assert isinstance(model, Network)
        tic = time.perf_counter()
        table = density_table(members(source, comm)[1][0][1]())
        model = FluxVelocity(
            model, table["lower"], table["upper"], table["p0"], table["p1"], dict(model.info)
        )
        model.info["density_table"] = {
            "nodes": list(table["p0"].shape),
            "seconds": round(time.perf_counter() - tic, 3),
        }
    measure = (
        "uniform"
        if s.sampling == "uniform"
        else f"{1 - s.uniform_fraction:g} p_t + {s.uniform_fraction:g} uniform"
    )

    def finish() -> dict[str, Any]:
        err = errors(model, test["x"], test["y"], test["jac"], derivative_inputs=k, alpha=s.alpha)
        model.info.update(
            source=str(source), parameters=train["parameters"], thetas=train["thetas"].tolist(),
            time=fixed, test_points=len(test["x"]), test_measure=measure, errors=err,
            settings=dataclasses.asdict(s),
        )  # fmt: skip
        described_write("model", lambda: save(model, out))  # BECKMANN_FAIL_WRITE=0:model
        return jsonable(_report(model, s, err, train, test, fixed, measure, out, t0))

    before_collective_write(comm, "model")  # a failure injected on any rank, agreed on first
    report = on_root(comm, finish)
    if json_out is not None:
        write_json(json_out, report, comm)
    return report


def _report(
    model: Network | FluxVelocity,
    s: FitSettings,
    err: dict[str, Any],
    train: dict[str, Any],
    test: dict[str, Any],
    fixed: float | None,
    measure: str,
    out: str | Path,
    t0: float,
) -> dict[str, Any]:
    return {
        "field": s.field,
        "velocity_form": model.form if isinstance(model, FluxVelocity) else "direct",
        "density_table": model.info.get("density_table"),
        "time": fixed,
        "inputs": model.input_names,
        "parameters_theta": train["parameters"],
        "thetas": len(train["thetas"]),
        "activation": s.activation,
        "width": s.width,
        "depth": s.depth,
        "parameters": model.parameters,
        "steps": model.info["steps"],
        "seconds": round(time.perf_counter() - t0, 3),
        "train_seconds": round(model.info["seconds"], 3),
        **err,
        "loss": model.info["loss"],
        "training_points": len(train["x"]),
        "test_points": len(test["x"]),
        "test_measure": measure,
        "sampling": s.sampling,
        "dtype": s.dtype,
        "platform": model.info["platform"],
        "degree": train["degree"],
        "out": str(model_files(out)[0].with_suffix("")),
    }
