r"""The transport experiment: sample the source, move the samples, measure the result.

:func:`sample_transport` draws :math:`X_0 \sim p_0` exactly (or takes the caller's points),
integrates :math:`dX/dt = v_t(X)` from :math:`t = 0` to :math:`1` (or back) with the velocity of a
:class:`~beckmann.paths.PathFlux` (or a velocity object given by the caller, e.g. a network) and
compares the end points with the target: histogram TV against quadrature bin masses, and the
energy distance to exact samples of the target, beside the same distances of an exact sample
set (the noise floor) and of the untransported samples. Given data, it also compares the end
points with the data (:mod:`~beckmann.transport.reference`). Along the way it can record
:math:`\log p_t(X_t)`, the path's density evaluated at the moving samples.

**Choosing the integrator** (``method="auto"``, see docs/transport.md): the path's largest speed
:math:`\max|v_t|` is measured first; if an RK4 step of ``1/steps`` could carry a sample farther
than the smallest cell (``max|v| / steps > h_min``) the adaptive RK45 is used, else RK4 with
``steps`` steps. A network velocity has no such bound and uses RK4.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann._mpi import global_bbox, on_root
from beckmann.fields import Solution
from beckmann.locate import MeshCells
from beckmann.paths import LinearPath, path_energy, solve_path, solver_options
from beckmann.transport.evaluate import FieldEvaluator, PathDensity
from beckmann.transport.integrate import Transporter
from beckmann.transport.reference import compare_to_data
from beckmann.transport.sampling import Samples, gather_samples, sample_density
from beckmann.transport.stats import (
    bin_masses,
    check_bins,
    energy_distance,
    histogram_tv,
    mean_distance,
)

__all__ = ["METHODS", "sample_transport"]

FloatArray = npt.NDArray[np.float64]

#: Integrators of :func:`sample_transport`.
METHODS = ("auto", "rk4", "rk45")

COMPARISONS = {
    "distances": (
        "transported samples vs the solved target density p1 (reverse: p0): histogram TV "
        "against its bin masses by quadrature, energy distance to exact samples of it; "
        "'exact' is an exact sample set of that density (the noise floor)"
    ),
    "reference": (
        "transported samples vs the data file given with --reference, each metric beside "
        "the same metric between two disjoint subsets of the data (the noise floor)"
    ),
}


def _min_cell_size(mc: MeshCells, comm: MPI.Comm) -> float:
    """The smallest cell diameter (longest edge) over all ranks."""
    v = mc.vertices[: mc.n_owned]
    if v.shape[0]:
        d = v.shape[1]
        edges = [np.linalg.norm(v[:, i] - v[:, j], axis=1) for i in range(d) for j in range(i)]
        local = float(np.max(np.stack(edges), axis=0).min())
    else:
        local = np.inf
    return float(comm.allreduce(local, op=MPI.MIN))


def _given_samples(x: FloatArray, comm: MPI.Comm) -> Samples:
    """The caller's points (the same array on every rank) as an unlocated distributed set."""
    ids = np.arange(comm.rank, x.shape[0], comm.size, dtype=np.int64)
    cells = np.full(ids.size, -1, dtype=np.int32)
    return Samples(ids, np.array(x[ids], dtype=np.float64), cells, int(x.shape[0]))


def _log_density(dens: PathDensity, t: float, s: Samples, comm: MPI.Comm) -> FloatArray:
    """``log p_t`` at the samples, in global sample order on every rank; collective."""
    mc = dens.cells
    c = np.array(s.cells, dtype=np.int32, copy=True)
    unknown = np.flatnonzero(c < 0)
    if unknown.size:
        c[unknown] = mc.find_local(s.x[unknown], c[unknown])[0]
    out = np.full(s.ids.size, np.nan)
    ok = c >= 0
    with np.errstate(divide="ignore"):
        out[ok] = np.log(np.maximum(dens(t, s.x[ok], c[ok]), 0.0))
    full = np.full(s.n, np.nan)
    for ids, v in comm.allgather((s.ids, out)):
        full[ids] = v
    return full


def sample_transport(
    sol: Solution,
    n: int | None = None,
    *,
    path: str = "linear",
    steps: int = 50,
    seed: int = 0,
    method: str = "auto",
    rtol: float = 1e-5,
    n_times: int = 21,
    reverse: bool = False,
    save_every: int = 0,
    bins: int | None = None,
    energy_points: int = 3000,
    path_report: bool = True,
    velocity: Any = None,
    init: FloatArray | None = None,
    log_density: bool = False,
    reference: FloatArray | None = None,
    reference_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Sample the source, transport to the target and measure the result; collective.

    Args:
        sol: A solved run.
        n: Number of samples (``None`` with ``init``).
        path: ``linear`` or ``fisher-rao``.
        steps: RK4 steps; also the grid of saved times for ``save_every`` (RK45 lands on them).
        seed: Seed; the samples do not depend on the number of ranks.
        method: ``auto`` (RK45 where speeds are large, see the module docstring), ``rk4``
            (fixed steps) or ``rk45`` (adaptive, global step).
        rtol: RK45 tolerance relative to the domain diameter.
        n_times: Time grid of a time-dependent path.
        reverse: Integrate from ``t = 1`` back to ``0`` (sampling the target, unless ``init``).
        save_every: Keep the samples every this many of the ``steps`` intervals (0: only start
            and end).
        bins: Histogram bins per axis (default about 50 samples per bin).
        energy_points: Subsample size for the O(m²) energy distance.
        path_report: Also report the path's kinetic energy and maximum speed.
        velocity: A velocity used instead of the FE one (linear path only, no path report): an
            object with ``cells`` (:class:`~beckmann.locate.MeshCells` of ``sol.msh``),
            ``fast_values`` and ``values`` like :class:`FieldEvaluator` (e.g. a network's
            velocity from :mod:`beckmann.requ`), or a factory ``velocity(cells)`` returning one.
        init: ``(N, d)`` points to move instead of samples (the same array on every rank);
            points outside the domain are projected onto it and counted.
        log_density: Record ``log p_t(X_t)`` (the path's density at the samples) at the saved
            times.
        reference: ``(M, d)`` data to compare the end points with (any rank's copy; rank 0's
            is used).
        reference_options: Keyword arguments of
            :func:`~beckmann.transport.reference.compare_to_data` (``points``, ``bins``,
            ``bandwidth``, ``radius``).

    Returns:
        ``{"samples": (n, d) array on rank 0 else None, "start": ..., "trajectory": list,
        "trajectory_times": list, "log_density": (T, n) array on rank 0 or None,
        "report": dict}``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(save_every, int) or save_every < 0:
        raise ValueError(f"save_every must be a non-negative integer, got {save_every!r}")
    if not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(energy_points, int) or energy_points < 2:
        raise ValueError(f"energy_points must be an integer >= 2, got {energy_points!r}")
    if init is not None:
        init = np.asarray(init, dtype=np.float64)
        if init.ndim != 2 or init.shape[1] != sol.gdim or init.shape[0] < 1:
            raise ValueError(
                f"the initial points must be an (N, {sol.gdim}) array, got shape {init.shape}"
            )
        if n is not None and n != init.shape[0]:
            raise ValueError(f"n = {n} differs from the {init.shape[0]} initial points")
        n = int(init.shape[0])
    if n is None:
        raise ValueError("give the number of samples or the initial points")
    if bins is not None:
        check_bins(bins, sol.gdim)  # before the transport, not after it
    comm = sol.comm
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    if velocity is not None and path != "linear":
        raise ValueError(f"a given velocity (--model) follows the linear path, not {path!r}")
    pf = None
    if velocity is None:
        pf = solve_path(sol, path, n_times=n_times, solver=solver_options(sol))
    if pf is not None:
        mc = MeshCells(sol.msh)
        ev: Any = FieldEvaluator(pf, mc)
    elif hasattr(velocity, "fast_values"):
        ev = velocity
        mc = ev.cells
    else:
        mc = MeshCells(sol.msh)
        ev = velocity(mc)
    timings["path"] = time.perf_counter() - t_start
    report: dict[str, Any] = {}
    if pf is not None and (path_report or method == "auto"):
        tic = time.perf_counter()
        report["path_energy"] = path_energy(pf, cells=mc)
        timings["path_report"] = time.perf_counter() - tic
    used, rule = method, "given"
    if method == "auto":
        h_min = _min_cell_size(mc, comm)
        if pf is None:
            used, rule = "rk4", "auto: a network velocity has no speed bound; RK4"
        else:
            vmax = float(report["path_energy"]["max_speed"])
            used = "rk45" if vmax / steps > h_min else "rk4"
            rule = (
                f"auto: max|v| / steps = {vmax:.4g} / {steps} "
                f"{'>' if used == 'rk45' else '<='} h_min = {h_min:.4g}"
            )
    src, dst = (sol.p1, sol.p0) if reverse else (sol.p0, sol.p1)
    t0, t1 = (1.0, 0.0) if reverse else (0.0, 1.0)
    tr = Transporter(ev)
    tic = time.perf_counter()
    init_projected = 0
    if init is not None:
        s = tr.relocate(_given_samples(init, comm))
        init_projected = tr.projected_samples()
        tr.reset_counts()
    else:
        s = tr.relocate(sample_density(src, n, seed, mc))
    timings["sample"] = time.perf_counter() - tic
    start = gather_samples(s, comm, root=None)
    dens = None
    if log_density:
        dens = PathDensity(sol.p0, sol.p1, pf.path if pf is not None else LinearPath(), mc)
    traj: list[FloatArray] = []
    traj_t: list[float] = []
    logp: list[FloatArray] = []

    def keep(t: float, cur: Samples) -> None:
        if save_every:
            g = gather_samples(cur, comm)
            if comm.rank == 0:
                traj.append(g)
        if dens is not None:
            lp = _log_density(dens, t, cur, comm)
            if comm.rank == 0:
                logp.append(lp)
        traj_t.append(float(t))

    keep(t0, s)
    tic = time.perf_counter()
    if used == "rk4":

        def every(step: int, t: float, cur: Samples) -> None:
            if step % save_every == 0 or step == steps:
                keep(t, cur)

        s = tr.rk4(s, t0, t1, steps, callback=every if save_every else None)
    else:
        h = (t1 - t0) / steps
        stops = [t0 + j * h for j in range(save_every, steps, save_every)] if save_every else []
        s = tr.rk45(
            s, t0, t1, rtol=rtol, stops=stops,
            callback=(lambda j, t, cur: keep(t, cur)) if save_every else None,
        )  # fmt: skip
    if not save_every:
        keep(t1, s)
    timings["transport"] = time.perf_counter() - tic
    final = gather_samples(s, comm, root=None)
    assert final is not None and start is not None
    # distances: against the bin masses of the target and an exact reference sample set
    tic = time.perf_counter()
    d = mc.d
    lo, hi = global_bbox(mc.vertices.reshape(-1, d), comm)
    span = hi - lo
    lo, hi = lo - 1e-9 * span, hi + 1e-9 * span
    nb = bins if bins is not None else max(4, round((n / 50.0) ** (1.0 / d)))
    masses = bin_masses(dst, lo, hi, nb, mc)
    exact = gather_samples(sample_density(dst, n, seed + 1_000_003, mc), comm, root=None)
    m = min(energy_points, n)
    ref = gather_samples(sample_density(dst, m, seed + 2_000_003, mc), comm, root=None)
    dist: dict[str, dict[str, float]] = {}
    if comm.rank == 0:
        assert ref is not None and exact is not None
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xE7E7]))
        sub = rng.choice(n, size=m, replace=False) if m < n else np.arange(n)
        yy = mean_distance(ref, ref)
        for name, pts in (("transported", final), ("exact", exact), ("untransported", start)):
            dist[name] = {
                "tv_histogram": histogram_tv(pts, masses, lo, hi),
                "energy": energy_distance(pts[sub], ref, yy),
            }
    report["distances"] = comm.bcast(dist, root=0)
    report["comparisons"] = {"distances": COMPARISONS["distances"]}
    timings["distances"] = time.perf_counter() - tic
    if reference is not None:
        tic = time.perf_counter()
        opts = dict(reference_options or {})
        report["reference"] = on_root(
            comm, lambda: compare_to_data(final, reference, lo, hi, seed=seed, **opts)
        )
        report["comparisons"]["reference"] = COMPARISONS["reference"]
        timings["reference"] = time.perf_counter() - tic
    if not path_report:
        report.pop("path_energy", None)
    projected = tr.projected_samples()
    stats = {k: int(comm.allreduce(v, op=MPI.SUM)) for k, v in tr.stats.items()}
    if "steps" in tr.stats:
        stats["steps"] = int(tr.stats["steps"])
    report.update(
        {
            "n": int(n),
            "initial_points": "given (--init)" if init is not None else "exact samples",
            "path": path,
            "method": used,
            "method_rule": rule,
            "steps": int(steps) if used == "rk4" else stats.get("steps"),
            "seed": int(seed),
            "reverse": bool(reverse),
            "ranks": comm.size,
            "grid_times": int(len(pf.times)) if pf is not None else 0,
            "bins_per_axis": int(nb),
            "energy_points": int(m),
            "sampling": s.info,
            "projected_samples": projected,
            "projection_events": stats["projection_events"],
            "stage_points_outside": stats["stage_outside"],
            "stats": stats,
            "timings": {k: float(comm.allreduce(v, op=MPI.MAX)) for k, v in timings.items()},
        }
    )
    if init is not None:
        report["initial_points_projected"] = init_projected
    return {
        "samples": final if comm.rank == 0 else None,
        "start": start if comm.rank == 0 else None,
        "trajectory": traj,
        "trajectory_times": traj_t,
        "log_density": np.stack(logp) if logp else None,
        "report": report,
    }
