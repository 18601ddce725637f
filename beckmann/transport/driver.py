r"""The transport experiment: sample the source, move the samples, measure the result.

:func:`sample_transport` draws :math:`X_0 \sim p_0` exactly, integrates
:math:`dX/dt = v_t(X)` from :math:`t = 0` to :math:`1` with the velocity of a
:class:`~beckmann.paths.PathFlux` (or a velocity object given by the caller, e.g. a network) and
compares the end points with the target: histogram TV against quadrature bin masses, and the
energy distance to exact samples of the target, beside the same distances of an exact sample
set (the noise floor) and of the untransported samples.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann._mpi import global_bbox
from beckmann.fields import Solution
from beckmann.locate import MeshCells
from beckmann.paths import path_energy, solve_path, solver_options
from beckmann.transport.evaluate import FieldEvaluator
from beckmann.transport.integrate import Transporter
from beckmann.transport.sampling import Samples, gather_samples, sample_density
from beckmann.transport.stats import bin_masses, energy_distance, histogram_tv, mean_distance

__all__ = ["sample_transport"]

FloatArray = npt.NDArray[np.float64]


def sample_transport(
    sol: Solution,
    n: int,
    *,
    path: str = "linear",
    steps: int = 50,
    seed: int = 0,
    method: str = "rk4",
    rtol: float = 1e-5,
    n_times: int = 21,
    reverse: bool = False,
    save_every: int = 0,
    bins: int | None = None,
    energy_points: int = 3000,
    path_report: bool = True,
    velocity: Any = None,
) -> dict[str, Any]:
    """Sample the source, transport to the target and measure the result; collective.

    Args:
        sol: A solved run.
        n: Number of samples.
        path: ``linear`` or ``fisher-rao``.
        steps: RK4 steps (also the number of saved intervals for ``save_every``).
        seed: Seed; the samples do not depend on the number of ranks.
        method: ``rk4`` (fixed steps) or ``rk45`` (adaptive, global step).
        rtol: RK45 tolerance relative to the domain diameter.
        n_times: Time grid of a time-dependent path.
        reverse: Sample the target and integrate from ``t = 1`` back to ``0``.
        save_every: Keep the samples every this many RK4 steps (0: only start and end).
        bins: Histogram bins per axis (default about 50 samples per bin).
        energy_points: Subsample size for the O(m²) energy distance.
        path_report: Also compute the path's kinetic energy and maximum speed.
        velocity: A velocity used instead of the FE one (linear path only, no path report): an
            object with ``cells`` (:class:`~beckmann.locate.MeshCells` of ``sol.msh``),
            ``fast_values`` and ``values`` like :class:`FieldEvaluator` (e.g. a network's
            velocity from :mod:`beckmann.requ`), or a factory ``velocity(cells)`` returning one.

    Returns:
        ``{"samples": (n, d) array on rank 0 else None, "start": ..., "trajectory": list,
        "report": dict}``.
    """
    if method not in ("rk4", "rk45"):
        raise ValueError(f"method must be 'rk4' or 'rk45', got {method!r}")
    if not isinstance(save_every, int) or save_every < 0:
        raise ValueError(f"save_every must be a non-negative integer, got {save_every!r}")
    if not isinstance(energy_points, int) or energy_points < 2:
        raise ValueError(f"energy_points must be an integer >= 2, got {energy_points!r}")
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
    src, dst = (sol.p1, sol.p0) if reverse else (sol.p0, sol.p1)
    t0, t1 = (1.0, 0.0) if reverse else (0.0, 1.0)
    tic = time.perf_counter()
    s = sample_density(src, n, seed, mc)
    timings["sample"] = time.perf_counter() - tic
    start = gather_samples(s, comm, root=None)
    traj: list[FloatArray] = []
    traj_t: list[float] = []
    if save_every and comm.rank == 0:
        traj.append(start.copy())
        traj_t.append(t0)

    def keep(step: int, t: float, cur: Samples) -> None:
        if save_every and (step % save_every == 0 or step == steps):
            g = gather_samples(cur, comm)
            if comm.rank == 0:
                traj.append(g)
                traj_t.append(t)

    tr = Transporter(ev)
    tic = time.perf_counter()
    if method == "rk4":
        s = tr.rk4(s, t0, t1, steps, callback=keep if save_every else None)
    else:
        s = tr.rk45(s, t0, t1, rtol=rtol)
    timings["transport"] = time.perf_counter() - tic
    final = gather_samples(s, comm, root=None)
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
    report: dict[str, Any] = {}
    if comm.rank == 0:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xE7E7]))
        sub = rng.choice(n, size=m, replace=False) if m < n else np.arange(n)
        dist: dict[str, dict[str, float]] = {}
        yy = mean_distance(ref, ref)
        for name, pts in (("transported", final), ("exact", exact), ("untransported", start)):
            dist[name] = {
                "tv_histogram": histogram_tv(pts, masses, lo, hi),
                "energy": energy_distance(pts[sub], ref, yy),
            }
        report["distances"] = dist
    report = comm.bcast(report, root=0)
    timings["distances"] = time.perf_counter() - tic
    if path_report and pf is not None:
        tic = time.perf_counter()
        report["path_energy"] = path_energy(pf, cells=mc)
        timings["path_report"] = time.perf_counter() - tic
    stats = {k: int(comm.allreduce(v, op=MPI.SUM)) for k, v in tr.stats.items()}
    if "steps" in tr.stats:
        stats["steps"] = int(tr.stats["steps"])
    report.update(
        {
            "n": int(n),
            "path": path,
            "method": method,
            "steps": int(steps) if method == "rk4" else stats.get("steps"),
            "seed": int(seed),
            "reverse": bool(reverse),
            "ranks": comm.size,
            "grid_times": int(len(pf.times)) if pf is not None else 0,
            "bins_per_axis": int(nb),
            "energy_points": int(m),
            "sampling": s.info,
            "projected": stats["projected"],
            "stage_outside": stats["stage_outside"],
            "stats": stats,
            "timings": {k: float(comm.allreduce(v, op=MPI.MAX)) for k, v in timings.items()},
        }
    )
    return {
        "samples": final if comm.rank == 0 else None,
        "start": start if comm.rank == 0 else None,
        "trajectory": traj,
        "trajectory_times": traj_t,
        "report": report,
    }
