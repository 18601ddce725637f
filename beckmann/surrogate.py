r"""Networks as surrogates of a sweep: fit on (x, [t,] θ), transport samples with a network.

Two pieces connect :mod:`beckmann.requ` with :mod:`beckmann.sweep` and :mod:`beckmann.transport`:

**Training data on (x, t, θ)** (:func:`member_data`, :func:`training_set`). For each stored θ
(or the single solution of a run, with no θ) the potential φ of the store, its flux
:math:`F = \nabla\varphi`, its Hessian :math:`D^2\varphi` (cellwise, DG\ :sub:`k-2`), the
densities :math:`p_0, p_1(\theta)` (recomputed at θ from the stored config) and their gradients
are evaluated once at sampled points. Values and derivatives of any field at any time then follow
pointwise, without a new interpolation per time:

- ``potential``: :math:`\varphi`, with :math:`\nabla_x\varphi`,
- ``flux``: :math:`F`, with :math:`D_x F = D^2\varphi`,
- ``velocity``: :math:`v_t = F/p_t` with :math:`p_t = (1-t)p_0 + tp_1`, and the derivatives
  :math:`D_x v_t = D^2\varphi/p_t - F\otimes\nabla p_t/p_t^2` and
  :math:`\partial_t v_t = -v_t\,(p_1 - p_0)/p_t` (linear path, MATH.md §2).

The network's inputs are ``(x, θ)`` for ``potential``/``flux`` and ``(x, t, θ)`` for
``velocity``, with ``t`` uniform in ``[0, 1]`` per point; derivatives enter the Sobolev loss for
``x`` (and ``t``), never for θ (the store has no θ-derivatives).

**Transport with a network** (:class:`NetworkVelocity`): a drop-in for the finite-element
:class:`~beckmann.transport.FieldEvaluator` in :class:`~beckmann.transport.Transporter`, so
``beckmann sample DIR --model MODEL [--param theta=VALUE]`` moves the samples with
:math:`v(x, t, \theta)` of the network while the mesh still locates them (for migration between
ranks and the projection of escaped points).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, fem, ufl
from beckmann.fields import Solution

__all__ = [
    "NetworkVelocity",
    "fit_cli",
    "is_sweep_store",
    "member_data",
    "members",
    "model_velocity",
    "training_set",
    "velocity_inputs",
]

FloatArray = npt.NDArray[np.float64]

_SPACE_NAMES = ("x", "y", "z")


def is_sweep_store(path: str | Path) -> bool:
    """``True`` when ``path`` is a folder with a ``sweep.json`` (a sweep store). Not collective."""
    return (Path(path) / "sweep.json").is_file()


# ---------------------------------------------------------------------------------------------
# data


def _theta_solution(store: Any, i: int | None, theta: dict[str, float]) -> Solution:
    """A :class:`Solution` of θ on the store's mesh: stored φ (zero when ``i`` is None), p0, p1(θ).

    Collective.
    """
    from beckmann.pipeline import build_density
    from beckmann.sweep import _with_params

    cfg = store.config
    V = store.space()
    p0, _ = build_density(_with_params(cfg["source"], theta), "source", V)
    p1, _ = build_density(_with_params(cfg["target"], theta), "target", V)
    phi = store.potential(i) if i is not None else fem.Function(V, name="potential")
    return Solution(V.mesh, phi, p0, p1)


def members(source: str | Path, comm: MPI.Comm) -> tuple[list[str], list[tuple[FloatArray, Any]]]:
    """Parameter names and ``[(θ values, solution factory), ...]`` of a sweep store or a run.

    A run has no parameters and one member. The factories build the :class:`Solution` when
    called (collective), so that only one θ is held in memory at a time. Collective.
    """
    from beckmann import io
    from beckmann.sweep import SweepStore

    if not comm.bcast(is_sweep_store(source) if comm.rank == 0 else None, root=0):
        sol = io.load_run(source, comm)
        return [], [(np.zeros(0), lambda: sol)]
    store = SweepStore(source, comm)
    done = store.completed()
    if not done:
        raise ValueError(f"sweep store {str(source)!r} has no finished θ yet")
    out = []
    for i in done:
        theta = store.grid.theta(i)
        vec = np.array([theta[n] for n in store.grid.names], dtype=np.float64)
        out.append((vec, lambda i=i, theta=theta: _theta_solution(store, i, theta)))
    return list(store.grid.names), out


def member_data(sol: Solution, x: FloatArray) -> dict[str, FloatArray]:
    """φ, F, D²φ, p0, p1, ∇p0, ∇p1 of a solution at points ``x`` (same on every rank).

    The Hessian is that of the discrete potential inside each cell (DG_{k-2}; needs ``k >= 2``
    for a non-zero value); the density gradients are exact for the DG_{k-1} interpolation of the
    Lagrange densities. Collective.
    """
    from beckmann.requ import _eval_function

    d, k = sol.gdim, sol.degree
    vals = sol.evaluate(x, 0.0, what=("potential", "flux", "source", "target"))
    out = {
        "phi": vals["potential"],
        "F": vals["flux"],
        "p0": vals["source"],
        "p1": vals["target"],
    }
    if k >= 2:
        W = fem.functionspace(sol.msh, ("DG", k - 2, (d, d)))
        H = fem.Function(W)
        H.interpolate(fem.Expression(ufl.grad(ufl.grad(sol.phi)), W.element.interpolation_points))
        out["H"] = _eval_function(sol, H, x)
    else:
        out["H"] = np.zeros((len(x), d, d))
    G = fem.functionspace(sol.msh, ("DG", max(k - 1, 0), (d,)))
    for name, p in (("g0", sol.p0), ("g1", sol.p1)):
        g = fem.Function(G)
        g.interpolate(fem.Expression(ufl.grad(p), G.element.interpolation_points))
        out[name] = _eval_function(sol, g, x)
    return out


def field_values(
    data: dict[str, FloatArray], field: str, t: FloatArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """Values and derivatives of ``field`` from :func:`member_data`; ``t`` per point (velocity).

    Returns:
        ``(y, jac)``: potential ``(N,)``, ``(N, d)``; flux ``(N, d)``, ``(N, d, d)``; velocity
        ``(N, d)``, ``(N, d, d + 1)`` (the last column is ``∂_t v``).
    """
    if field == "potential":
        return data["phi"], data["F"]
    if field == "flux":
        return data["F"], data["H"]
    if field != "velocity":
        raise ValueError(f"unknown field {field!r}; choose potential, flux or velocity")
    assert t is not None
    p0, p1, F = data["p0"], data["p1"], data["F"]
    pt = (1.0 - t) * p0 + t * p1
    gt = (1.0 - t)[:, None] * data["g0"] + t[:, None] * data["g1"]
    v = F / pt[:, None]
    Dx = data["H"] / pt[:, None, None] - np.einsum("ni,nj->nij", F, gt) / (pt**2)[:, None, None]
    dt = -v * ((p1 - p0) / pt)[:, None]
    return v, np.concatenate([Dx, dt[:, :, None]], axis=2)


def training_set(
    source: str | Path,
    field: str,
    n: int,
    seed: int,
    comm: MPI.Comm,
    *,
    time: float | None = None,
) -> dict[str, Any]:
    """Inputs ``(x, [t,] θ)``, values and derivatives from every member of a sweep (or a run).

    ``n`` points are spread evenly over the stored θ (at least one each), each θ with its own
    uniform points in the mesh (:func:`beckmann.requ.sample_domain`). For ``velocity``, ``t`` is
    uniform in ``[0, 1]`` per point and an input, unless ``time`` fixes it (then no ``t`` input).
    Collective; the result is the same on every rank and on any number of ranks.

    Returns:
        ``{"x", "y", "jac", "derivative_inputs", "input_names", "bounds", "parameters", "degree"}``.
    """
    from beckmann.requ import _bbox, sample_domain

    names, mem = members(source, comm)
    per = max(1, -(-n // len(mem)))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    with_t = field == "velocity" and time is None
    X, Y, J = [], [], []
    lo = hi = None
    degree = 0
    d = 0
    for j, (vec, make) in enumerate(mem):
        sol = make()
        d, degree = sol.gdim, sol.degree
        if lo is None:
            lo, hi = _bbox(sol.msh)
        x = sample_domain(sol.msh, per, seed + 7919 * j)
        t = rng.uniform(0.0, 1.0, per) if with_t else np.full(per, 0.0 if time is None else time)
        y, jac = field_values(member_data(sol, x), field, t)
        if field == "velocity" and not with_t:
            jac = jac[:, :, :d]
        cols = [x] + ([t[:, None]] if with_t else []) + [np.tile(vec, (per, 1))]
        X.append(np.hstack(cols))
        Y.append(y)
        J.append(jac)
    assert lo is not None and hi is not None
    tlo, thi = np.zeros(int(with_t)), np.ones(int(with_t))
    thetas = np.array([vec for vec, _ in mem]).reshape(len(mem), len(names))
    plo, phi = thetas.min(axis=0), thetas.max(axis=0)
    flat = phi - plo <= 1e-12 * np.maximum(np.abs(phi), 1.0)
    # a parameter with one value: any box around it (the network cannot learn a dependence)
    plo, phi = np.where(flat, plo - 0.5, plo), np.where(flat, phi + 0.5, phi)
    nder = d + int(with_t)
    return {
        "x": np.vstack(X),
        "y": np.concatenate(Y),
        "jac": np.concatenate(J),
        "derivative_inputs": list(range(nder)),
        "input_names": [*_SPACE_NAMES[:d], *(["t"] if with_t else []), *names],
        "bounds": (np.concatenate([lo, tlo, plo]), np.concatenate([hi, thi, phi])),
        "parameters": names,
        "thetas": thetas,
        "degree": degree,
    }


# ---------------------------------------------------------------------------------------------
# `beckmann fit SWEEP` (and `beckmann fit RUN --field velocity --time-input`)


def fit_cli(args: Any, comm: MPI.Comm) -> int:
    """``beckmann fit`` on a sweep store, or a run with ``t`` as an input; collective.

    Arguments were validated by :func:`beckmann.requ.handler`. The JSON report holds the
    held-out errors at new points (and new times) of the stored θ; errors at a θ off the grid
    need an independent solve (see ``scripts/conditional_generation.py`` and the tests).
    """
    from beckmann.requ import errors, fit, print_fit_report

    t0 = time.perf_counter()
    if args.field in ("potential", "flux") and getattr(args, "time_input", False):
        raise ValueError(f"--time-input is for --field velocity, not {args.field!r}")
    fixed = None if (args.field == "velocity") else 0.0
    train = training_set(args.source, args.field, args.points, args.seed, comm, time=fixed)
    test = training_set(args.source, args.field, args.test_points, args.seed + 1, comm, time=fixed)
    k = train["derivative_inputs"]
    model = fit(
        train["x"], train["y"], train["jac"], activation=args.activation, width=args.width,
        depth=args.depth, steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size,
        derivative_weight=args.derivative_weight, derivative_inputs=k, seed=args.seed,
        bounds=train["bounds"], input_names=train["input_names"], field=args.field, comm=comm,
    )  # fmt: skip
    if comm.rank == 0:
        err = errors(
            model, test["x"], test["y"], test["jac"], derivative_inputs=k, alpha=args.alpha
        )
        model.info.update(
            source=str(args.source), parameters=train["parameters"],
            thetas=train["thetas"].tolist(), test_points=len(test["x"]), errors=err,
        )  # fmt: skip
        model.save(args.out)
        head = {
            "field": args.field,
            "inputs": model.input_names,
            "parameters_theta": train["parameters"],
            "thetas": len(train["thetas"]),
        }
        print_fit_report(
            head, model, args, err, t0=t0, training_points=len(train["x"]),
            test_points=len(test["x"]), degree=train["degree"],
        )  # fmt: skip
    comm.Barrier()
    return 0


# ---------------------------------------------------------------------------------------------
# transport with a network


def velocity_inputs(model: Any, d: int) -> list[str]:
    """θ names of a velocity model with inputs ``(x, t, θ...)``, or raise a ValueError."""
    names = list(model.input_names)
    if model.field != "velocity" or names[: d + 1] != [*_SPACE_NAMES[:d], "t"]:
        raise ValueError(
            f"--model needs a velocity network with inputs ({', '.join(_SPACE_NAMES[:d])}, t"
            f"[, θ...]); this one fits {model.field or 'an unnamed field'!r} with inputs "
            f"{names}. Fit one with `beckmann fit RUN --field velocity --time-input` or "
            "`beckmann fit SWEEP --field velocity`"
        )
    if model.scalar or model.output_dim != d:
        raise ValueError(f"--model must have {d} outputs, this one has {model.output_dim}")
    return names[d + 1 :]


class NetworkVelocity:
    """``v(x, t, θ)`` of a network as the velocity of a :class:`~beckmann.transport.Transporter`.

    Same interface as :class:`~beckmann.transport.FieldEvaluator` (``cells``, ``fast_values``,
    ``values``); the mesh only locates the points. Local (no communication).

    Args:
        model: A :class:`~beckmann.requ.Network` with inputs ``(x, t, θ...)``.
        cells: The mesh cells of the transport.
        theta: Values of the θ inputs (may be empty).
    """

    def __init__(self, model: Any, cells: Any, theta: npt.ArrayLike = ()) -> None:
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
        from beckmann.transport import INSIDE_TOL

        lam = self.cells.barycentric(x, cells)
        return self(t, x), lam.min(axis=1) >= -INSIDE_TOL

    def values(
        self, t: float, cells: npt.NDArray[np.int32], lam: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Velocity at barycentric ``lam`` in ``cells``; the density is not known (NaN)."""
        x = np.einsum("nk,nkd->nd", lam, self.cells.vertices[cells])
        return self(t, x), np.full(lam.shape[0], np.nan)


def model_velocity(
    source: str | Path, model_path: str | Path, params: list[str], comm: MPI.Comm
) -> tuple[Solution, Any, dict[str, float]]:
    """The solution (densities) and the evaluator factory for ``beckmann sample --model``.

    ``source`` is a run folder or a sweep store; a store needs ``--param`` for each of its
    parameters and supplies ``p0, p1(θ)`` recomputed at θ (also off the grid). Collective.

    Returns:
        ``(sol, factory, theta)`` with ``factory(cells) -> NetworkVelocity``.
    """
    from beckmann import io
    from beckmann.requ import load
    from beckmann.sweep import SweepStore, _parse_params

    err, model = None, None
    try:
        model = load(model_path)
    except ValueError as e:
        err = str(e)
    errs = comm.allgather(err)
    if any(errs):
        raise ValueError(next(e for e in errs if e))
    assert model is not None
    if comm.bcast(is_sweep_store(source) if comm.rank == 0 else None, root=0):
        store = SweepStore(source, comm)
        theta = _parse_params(params, list(store.grid.names))
        sol = _theta_solution(store, None, theta)
    else:
        sol = io.load_run(source, comm)
        theta = None
    names = velocity_inputs(model, sol.gdim)
    if theta is None:
        theta = _parse_params(params, names)
    elif list(theta) != names and sorted(theta) != sorted(names):
        raise ValueError(f"the model's θ inputs {names} differ from the sweep's {list(theta)}")
    vec = np.array([theta[n] for n in names], dtype=np.float64)
    return sol, (lambda cells: NetworkVelocity(model, cells, vec)), theta
