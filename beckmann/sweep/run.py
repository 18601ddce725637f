"""``run_sweep``: solve every θ of a grid into a resumable store, over rank groups.

The world communicator is split (``comm.Split``) into groups of ``group_size`` ranks; each group
builds its own :class:`~beckmann.sweep.engine.Engine` on its sub-communicator and solves a
contiguous share of the pending θ. Each finished θ is written at once, every rank of the group
its own share (nothing is gathered, :mod:`beckmann.sweep.entries`), and the group agrees on the
outcome of every write, so a failing write ends all ranks instead of leaving some in the next
θ's collectives.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann._mpi import agree, collective
from beckmann._version import __version__
from beckmann.progress import progress as progress_bar
from beckmann.store.jsonio import write_json
from beckmann.sweep.continuity import ContinuityStream, continuity_report, joint_pick
from beckmann.sweep.engine import Engine, split_groups
from beckmann.sweep.holder_norms import holder_report
from beckmann.sweep.layout import register_layout
from beckmann.sweep.spec import SweepSpec, parse_sweep
from beckmann.sweep.store import SweepStore
from beckmann.sweep.writer import prepare_store, store_hash, unlock_store, write_entry

__all__ = ["run_sweep"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _spec(cfg: dict[str, Any], comm: MPI.Comm, group_size: int | None) -> SweepSpec:
    """The validated spec, with ``group_size`` overridden; collective (every rank agrees)."""
    err, spec = None, None
    try:
        spec = parse_sweep(cfg)
        if group_size is not None:
            if group_size < 0:
                raise ValueError(f"--group-size must be >= 0, got {group_size}")
            spec.options["group_size"] = group_size
    except ValueError as e:
        err = str(e)
    agree(comm, err)
    assert spec is not None
    return spec


def _setup(
    cfg: dict[str, Any],
    spec: SweepSpec,
    gcomm: MPI.Comm,
    comm: MPI.Comm,
    mine: list[int],
    auto_method: int | None,
) -> Engine:
    """Each group's engine, with the densities of its θ checked; collective over the world."""
    eng: Engine | None = None
    with collective(comm):  # a failing group must not leave the others waiting
        eng = Engine(
            cfg,
            spec.grid,
            gcomm,
            block=spec.options["block"],
            warm_start=spec.options["warm_start"],
            affine=True,
            auto_method=auto_method,
        )
        for i in mine:
            eng.check(i)
    assert eng is not None
    return eng


def _layout(folder: Path, eng: Engine, gcomm: MPI.Comm, color: int, comm: MPI.Comm) -> int:
    """This group's distribution in the store's layouts, written once if new; collective."""
    spaces = {"potential": eng.V, "flux": eng.W}
    return register_layout(folder, spaces, eng.x[:, : eng.gdim], gcomm, color, comm)


def _solve_all(
    eng: Engine,
    mine: list[int],
    folder: Path,
    layout: int,
    spec: SweepSpec,
    color: int,
    ngroups: int,
    comm: MPI.Comm,
    show: bool,
    stream: tuple[ContinuityStream, IntArray, FloatArray] | None = None,
    phases: dict[str, float] | None = None,
) -> int:
    """Solve this group's θ block by block, storing each at once; the number stored.

    With ``stream`` (the stream and this rank's joint dofs), every θ is also pushed to the
    continuity report, in index order, from memory. ``phases`` gets the seconds spent in the
    store writes (every rank its own share, :func:`write_entry`) and in the pushes, part of the
    solve phase.
    """
    phases = {} if phases is None else phases
    phases.update(store_write=0.0, continuity_stream=0.0)
    gcomm = eng.comm
    grid = spec.grid
    store_flux = spec.options["store_flux"]
    chash = store_hash(eng.cfg)  # the store's (prepare_store wrote it into the manifest)
    solved = 0
    with progress_bar(len(mine) * ngroups, "sweep", comm, disable=not show) as bar:
        for start in range(0, len(mine), eng.block):
            for phi, flux, row in eng.solve_block(mine[start : start + eng.block]):
                tw = time.perf_counter()
                row = {**row, "group": color, "group_size": gcomm.size}
                data = {"potential": phi, "flux": flux} if store_flux else {"potential": phi}
                # collective on the group: every rank learns how every share's write went
                write_entry(folder, row, grid, chash, data, gcomm, layout)
                tc = time.perf_counter()
                phases["store_write"] += tc - tw
                if stream is not None:
                    values = {"potential": phi, "flux": flux}
                    stream[0].push(values, phi[stream[1]])
                    phases["continuity_stream"] += time.perf_counter() - tc
                solved += 1
                bar.update(n=ngroups, postfix=grid.label(row["index"]))
    return solved


def _memory_stream(
    eng: Engine, spec: SweepSpec, pending: list[int], ngroups: int, comm: MPI.Comm
) -> tuple[ContinuityStream, IntArray, FloatArray] | None:
    """The continuity stream fed from memory while solving, when the sweep allows it.

    That is when one group solves every θ of the grid, in index order (a fresh store). The
    pass is then the store pass's (:func:`~beckmann.sweep.continuity.continuity_report`)
    without reading the store back: each rank pushes its owned values, and the joint dofs
    are picked among the group's global dofs, the order of the store's layout d0 (as the store
    pass picks them, :func:`~beckmann.sweep.continuity.continuity_report`). Otherwise ``None``.
    """
    k = len(spec.grid)
    if ngroups != 1 or list(pending) != list(range(k)) or k < 2:
        return None
    names = ["potential"] + (["flux"] if spec.options["store_flux"] else [])
    # one group: its ranks are the world's, which outlives the group's communicator
    stream = ContinuityStream(np.asarray(spec.grid.values, dtype=np.float64), names, comm)
    im = eng.V.dofmap.index_map
    lo, hi = im.local_range
    pick = joint_pick(im.size_global, k, spec.options["joint_points"])
    mine = pick[(pick >= lo) & (pick < hi)] - lo
    return stream, mine, eng.x[mine, : eng.gdim]


def run_sweep(
    cfg: dict[str, Any],
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    group_size: int | None = None,
    progress: bool = False,
    auto_method: bool = False,
) -> dict[str, Any]:
    """Solve every θ of the sweep in ``cfg`` and store it in ``out``; collective on ``comm``.

    The store is locked, created or checked before any solve (:func:`prepare_store`); with
    ``resume`` every stored entry is verified and those that fail are solved again, each named
    on rank 0's stderr.

    Args:
        cfg: Resolved config with a ``[sweep]`` section (:func:`~beckmann.sweep.parse_sweep`).
        comm: World communicator; split into groups of ``group_size`` ranks.
        out: Store folder.
        resume: Continue the sweep stored in ``out`` (same config); only missing θ and θ whose
            entries fail verification are solved.
        overwrite: Replace a sweep stored in ``out`` (whole).
        group_size: Overrides ``sweep.group_size``.
        progress: Show progress on rank 0's stderr (when it is a terminal).
        auto_method: The user did not choose ``solver.method`` (the CLI knows): the sweep
            picks it (:func:`~beckmann.sweep.engine.choose_method`: MUMPS, factorised once,
            for many right-hand sides up to a size limit; GAMG otherwise). ``summary.json``
            states the method used.

    Returns:
        The summary written to ``out/summary.json`` (rows of all θ, timings, continuity, the
        entries ``rejected`` by ``--resume``).

    Raises:
        ValueError: A bad spec, a store that may not be written (another kind, a foreign
            folder, locked by another writer), or a θ whose density is invalid (the message
            names the θ); on every rank, before any solve.
        RuntimeError: A failing solver or file, on every rank.
    """
    folder = Path(out)
    spec = _spec(cfg, comm, group_size)
    if spec.options["method"] == "reduced":  # docs/reduced.md
        from beckmann.sweep.reduced_run import run_reduced

        return run_reduced(cfg, spec, comm, out=folder, resume=resume, progress=progress)
    grid = spec.grid
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    state = prepare_store(
        folder, cfg, grid, resume, comm, overwrite=overwrite, store_flux=spec.options["store_flux"]
    )
    try:
        _report_resume(folder, state, grid, comm)
        return _run(cfg, comm, folder, spec, state, timings, t0, progress, auto_method)
    finally:
        unlock_store(folder, comm)


def _report_resume(folder: Path, state: dict[str, Any], grid: Any, comm: MPI.Comm) -> None:
    """One line per entry ``--resume`` rejected (at most 10, then a count) on rank 0's stderr."""
    if comm.rank != 0:
        return
    lines = []
    if state["stale_lock"]:
        lines.append(f"sweep: took over the stale lock of a writer that is gone in {str(folder)!r}")
    rejected = state["rejected"]
    for i, why in rejected[:10]:
        lines.append(f"sweep --resume: solving {grid.label(i)} again: {why}")
    if len(rejected) > 10:
        lines.append(
            f"sweep --resume: and {len(rejected) - 10} more entries solved again "
            "(all listed under 'rejected' in summary.json)"
        )
    if lines:
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()


def _run(
    cfg: dict[str, Any],
    comm: MPI.Comm,
    folder: Path,
    spec: SweepSpec,
    state: dict[str, Any],
    timings: dict[str, float],
    t0: float,
    progress: bool,
    auto_method: bool,
) -> dict[str, Any]:
    """The sweep proper, once the store is locked and checked; collective."""
    grid = spec.grid
    pending = state["pending"]
    gcomm, color, ngroups = split_groups(comm, spec.options["group_size"])
    stream = None
    try:
        share = [list(map(int, s)) for s in np.array_split(np.array(pending, dtype=int), ngroups)]
        mine = share[color]
        # every group decides on the same count, so all groups use the same method
        per_group = -(-len(pending) // ngroups) if auto_method else None
        eng = _setup(cfg, spec, gcomm, comm, mine, per_group)
        method, affine = eng.poisson.method, bool(eng.forms)
        timings["setup"] = time.perf_counter() - t0
        try:
            layout = _layout(folder, eng, gcomm, color, comm)
            stream = None
            if spec.options["continuity"]:
                stream = _memory_stream(eng, spec, pending, ngroups, comm)
            t1 = time.perf_counter()
            solved = 0
            phases: dict[str, float] = {}
            with collective(comm):  # one group's failure reaches every group
                solved = _solve_all(
                    eng, mine, folder, layout, spec, color, ngroups, comm, progress, stream, phases
                )
            timings["solve"] = time.perf_counter() - t1
            timings.update(phases)  # parts of "solve"
        finally:
            eng.destroy()
        group_root = gcomm.rank == 0
    finally:
        gcomm.Free()
    timings = {k: float(comm.allreduce(v, op=MPI.MAX)) for k, v in timings.items()}
    n_solved = int(comm.allreduce(solved if group_root else 0, op=MPI.SUM))

    t2 = time.perf_counter()
    store = SweepStore(folder, comm)
    report: dict[str, Any] = {}
    if spec.options["continuity"]:
        holder = None
        if spec.options["continuity_holder"]:
            holder = {k: spec.options[f"holder_{k}"] for k in ("k", "alpha", "pairs")}
        if stream is not None:  # every θ was pushed while solving: no store pass
            report = stream[0].finish(stream[2], joint=spec.options["joint_points"] > 0)
            if holder is not None:
                done = list(range(len(grid)))
                report["holder"] = holder_report(store, comm, done, grid.values, **holder)
        else:
            report = continuity_report(
                store, comm, joint_points=spec.options["joint_points"], holder=holder
            )
    timings["continuity"] = float(comm.allreduce(time.perf_counter() - t2, op=MPI.MAX))
    summary = {
        "version": __version__,
        "ranks": comm.size,
        "groups": ngroups,
        "group_size": comm.size // ngroups,
        "thetas": len(grid),
        "solved": n_solved,
        "reused": len(grid) - len(pending),
        "rejected": [{"index": i, "reason": why} for i, why in state["rejected"]],
        "method": comm.bcast(method),
        "method_chosen": "auto" if auto_method else "config",
        "affine": bool(comm.bcast(affine)),
        "block": spec.options["block"],
        "timings": timings,
        "seconds_per_theta": timings["solve"] / max(n_solved, 1),
        "rows": store.rows(),
        "continuity": report,
    }
    write_json(folder / "summary.json", summary, comm)
    return summary
