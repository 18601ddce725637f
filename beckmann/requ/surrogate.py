r"""Transport with a network: ``v(x, t, θ)`` of a fitted model as the velocity of the flow.

:class:`NetworkVelocity` is a drop-in for the finite-element velocity evaluator of
:mod:`beckmann.transport` (``cells``, ``fast_values``, ``values``), so that
``beckmann sample DIR --model MODEL [--param theta=VALUE]`` moves the samples with the network's
:math:`v(x, t, \theta)` while the mesh still locates them (for migration between ranks and the
projection of escaped points). :func:`model_velocity` builds it from a run or a sweep store.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from beckmann._mpi import agree
from beckmann.locate import INSIDE_TOL
from beckmann.requ.data import SPACE_NAMES, is_sweep_store
from beckmann.requ.flux_velocity import Model
from beckmann.requ.model_io import load

if TYPE_CHECKING:
    from beckmann._dolfinx import MPI
    from beckmann.fields import Solution

__all__ = ["NetworkVelocity", "check_prompt", "model_velocity", "prompt_box", "velocity_inputs"]

FloatArray = npt.NDArray[np.float64]


def velocity_inputs(model: Model, d: int) -> list[str]:
    """θ names of a velocity model with inputs ``(x, t, θ...)``, or raise a ValueError."""
    names = list(model.input_names)
    if model.field != "velocity" or names[: d + 1] != [*SPACE_NAMES[:d], "t"]:
        raise ValueError(
            f"--model needs a velocity network with inputs ({', '.join(SPACE_NAMES[:d])}, t"
            f"[, θ...]); this one fits {model.field or 'an unnamed field'!r} with inputs "
            f"{names}. Fit one with `beckmann fit RUN --field velocity --time-input` or "
            "`beckmann fit SWEEP --field velocity`"
        )
    if model.scalar or model.output_dim != d:
        raise ValueError(f"--model must have {d} outputs, this one has {model.output_dim}")
    return names[d + 1 :]


def prompt_box(model: Model) -> dict[str, tuple[float, float]]:
    """The θ inputs' training range of a model: name -> ``(low, high)``.

    The range of the θ the model was fitted on (``info["thetas"]``, written by ``beckmann fit``);
    for a model without it, the θ part of its input box. Space and time inputs are not prompts.
    """
    names = list(model.input_names)
    idx = [i for i, n in enumerate(names) if n not in (*SPACE_NAMES, "t")]
    thetas = np.asarray(model.info.get("thetas") or [], dtype=np.float64)
    params = list(model.info.get("parameters") or [])
    box = {}
    for i in idx:
        n = names[i]
        if thetas.ndim == 2 and n in params and thetas.shape[1] == len(params) and len(thetas):
            col = thetas[:, params.index(n)]
            box[n] = (float(col.min()), float(col.max()))
        else:
            box[n] = (float(model.lower[i]), float(model.upper[i]))
    return box


def check_prompt(
    model: Model, theta: dict[str, float], extrapolate: bool = False, name: str = "the model"
) -> bool:
    """Whether ``theta`` lies outside :func:`prompt_box`; raise a ValueError unless ``extrapolate``.

    The message is one line naming the parameter, its value and the box. Not collective.
    """
    outside = []
    for n, (lo, hi) in prompt_box(model).items():
        v = theta.get(n)
        tol = 1e-9 * max(abs(lo), abs(hi), 1.0)
        if v is not None and not lo - tol <= v <= hi + tol:
            outside.append(f"{n}={v:g} (trained on [{lo:g}, {hi:g}])")
    if outside and not extrapolate:
        raise ValueError(
            f"--param {', '.join(outside)} lies outside the training box of {name}; "
            "pass --extrapolate to use the network there anyway"
        )
    return bool(outside)


class NetworkVelocity:
    """``v(x, t, θ)`` of a network as the velocity of the transport.

    Same interface as the finite-element evaluator of :mod:`beckmann.transport` (``cells``,
    ``fast_values``, ``values``); the mesh only locates the points. Local (no communication).

    Args:
        model: A :class:`~beckmann.requ.network.Network` with inputs ``(x, t, θ...)``.
        cells: The mesh cells of the transport (:class:`beckmann.locate.MeshCells`).
        theta: Values of the θ inputs (may be empty).
    """

    def __init__(self, model: Model, cells: Any, theta: npt.ArrayLike = ()) -> None:
        self.model = model
        self.cells = cells
        self.theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        velocity_inputs(model, cells.d)
        if model.input_dim != cells.d + 1 + self.theta.size:
            raise ValueError(
                f"the model takes {model.input_dim} inputs {model.input_names}; "
                f"got {self.theta.size} θ values"
            )

    def __call__(self, t: float, x: FloatArray) -> FloatArray:
        """The velocity at points ``x`` and time ``t``."""
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, self.cells.d))
        z = np.hstack([x, np.full((n, 1), t), np.broadcast_to(self.theta, (n, self.theta.size))])
        return np.asarray(self.model(z))

    def fast_values(
        self, t: float, x: FloatArray, cells: npt.NDArray[np.int32]
    ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Velocity at ``x`` and the mask of points inside their cell ``cells``."""
        lam = self.cells.barycentric(x, cells)
        return self(t, x), lam.min(axis=1) >= -INSIDE_TOL

    def values(
        self, t: float, cells: npt.NDArray[np.int32], lam: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Velocity at barycentric ``lam`` in ``cells``; the density is not known (NaN)."""
        x = np.einsum("nk,nkd->nd", lam, self.cells.vertices[cells])
        return self(t, x), np.full(lam.shape[0], np.nan)


def model_velocity(
    source: str | Path,
    model_path: str | Path,
    params: list[str],
    comm: MPI.Comm,
    *,
    extrapolate: bool = False,
) -> tuple[Solution, Any, dict[str, float]]:
    """The solution (densities) and the evaluator factory for ``beckmann sample --model``.

    ``source`` is a run folder or a sweep store; a store needs ``--param`` for each of its
    parameters and supplies ``p0, p1(θ)`` recomputed at θ (also off the grid). A θ outside the
    model's training box (:func:`prompt_box`) is refused (on every rank, before any density is
    built) unless ``extrapolate``. Collective.

    Returns:
        ``(sol, factory, theta)`` with ``factory(cells) -> NetworkVelocity``.
    """
    from beckmann.store import load_run
    from beckmann.sweep import SweepStore, parse_params, theta_solution

    err, model = None, None
    try:
        model = load(model_path)
    except ValueError as e:
        err = str(e)
    agree(comm, err)
    assert model is not None
    if params:
        err = None
        try:
            asked = parse_params(params, list(prompt_box(model)))
        except ValueError:
            asked = {}  # bad names or values: reported below, where the sweep's names are known
        try:
            check_prompt(model, asked, extrapolate, repr(str(model_path)))
        except ValueError as e:
            err = str(e)
        agree(comm, err)
    if comm.bcast(is_sweep_store(source) if comm.rank == 0 else None, root=0):
        store = SweepStore(source, comm)
        theta: dict[str, float] | None = parse_params(params, list(store.grid.names))
        assert theta is not None
        sol = theta_solution(store, None, theta)
    else:
        sol = load_run(source, comm)
        theta = None
    names = velocity_inputs(model, sol.gdim)
    if theta is None:
        theta = parse_params(params, names)
    elif list(theta) != names and sorted(theta) != sorted(names):
        raise ValueError(f"the model's θ inputs {names} differ from the sweep's {list(theta)}")
    vec = np.array([theta[n] for n in names], dtype=np.float64)
    net = model
    return sol, (lambda cells: NetworkVelocity(net, cells, vec)), theta
