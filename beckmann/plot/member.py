"""Pictures of one member of a sweep store: ``beckmann plot STORE --param NAME=VALUE ...``.

A sweep store holds φ for every grid point θ but no ParaView files. The member's solution is
rebuilt on the store's mesh: the stored φ, and p0 and p1 evaluated at θ from the stored config
(:func:`beckmann.sweep.probe.theta_solution`). It is written as a run folder without a checkpoint
into a temporary folder and drawn like any run. Collective.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from beckmann._mpi import on_root
from beckmann.pipeline import write_outputs
from beckmann.plot.run import render_run
from beckmann.sweep.probe import theta_solution
from beckmann.sweep.spec import parse_params
from beckmann.sweep.store import SweepStore

__all__ = ["member_label", "render_member"]


def member_label(theta: dict[str, float]) -> str:
    """A folder-safe name of θ, e.g. ``r=0.25,s=1``."""
    return ",".join(f"{k}={v:g}" for k, v in theta.items())


def render_member(
    store_dir: str | Path,
    theta: Mapping[str, float] | Sequence[str],
    out: str | Path | None = None,
    comm: Any = None,
    *,
    samples: str | Path | None = None,
    holder: list[str] | None = None,
    backend: str = "auto",
) -> tuple[list[Path], str]:
    """Draw the figures of the sweep member at grid point ``theta``; collective over ``comm``.

    Args:
        store_dir: A sweep store (``beckmann sweep CONFIG --out DIR``).
        theta: A value for every sweep parameter, as a mapping or as ``"NAME=VALUE"`` strings
            (``--param``); it must be a grid point (``probe --param`` interpolates between grid
            points, pictures do not).
        out: Folder for the PNGs (default ``store_dir/figures/<NAME=VALUE,...>``).
        comm: The communicator (default ``MPI.COMM_WORLD``).
        samples: ``.npy`` samples to draw over the member's target.
        holder: JSON files with Hölder moduli.
        backend: ``"auto"``, ``"pyvista"`` or ``"matplotlib"``.

    Returns:
        The PNG paths and the backend used.

    Raises:
        ValueError: Not a sweep store, a bad or missing parameter, θ not on the grid, or a
            density invalid at θ; on every rank.
    """
    if comm is None:
        from beckmann._dolfinx import MPI

        comm = MPI.COMM_WORLD
    store = SweepStore(store_dir, comm)
    names = list(store.grid.names)
    if isinstance(theta, Mapping):
        items = [f"{k}={v}" for k, v in theta.items()]
    else:
        items = [str(item) for item in theta]
    point = parse_params(items, names)
    i = store.index_of(point)
    if i is None:
        raise ValueError(
            f"θ ({member_label(point)}) is not a grid point of the sweep in {str(store_dir)!r}; "
            "plot draws stored members only (`beckmann probe --param` interpolates)"
        )
    target = Path(out) if out is not None else Path(store_dir) / "figures" / member_label(point)
    sol = theta_solution(store, i, point)
    cfg = dict(store.config)
    cfg["output"] = {**cfg["output"], "checkpoint": False, "vtx": False}
    tmp = Path(on_root(comm, lambda: tempfile.mkdtemp(prefix="beckmann-member-")))
    try:
        write_outputs(sol, tmp, cfg)
        return render_run(tmp, target, comm, samples=samples, holder=holder, backend=backend)
    finally:
        comm.barrier()
        if comm.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
