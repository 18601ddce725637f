"""Reading a run folder (written by :func:`beckmann.pipeline.run`) back as a solution.

A run folder holds::

    beckmann.json       the manifest: kind "run", format version, config hash
    summary.json        scalars, timings, version and the full resolved config
    config.toml         the resolved config, re-runnable with ``beckmann solve config.toml``
    solution.xdmf/.h5   the mesh (once) and source, target, potential, flux at its vertices
    velocity.xdmf/.h5   the velocity at each requested time (XDMF time series)
    checkpoint/         potential, source and target exactly, reloading on any rank count
                        (:mod:`beckmann.store.checkpoint`; its mesh is solution.xdmf's;
                        at P1 it holds only checkpoint.json, naming solution.h5's fields)
    vtx/*.bp            opt-in (``output.vtx = true``): the fields in their own spaces (VTX)
"""

from __future__ import annotations

from pathlib import Path

from beckmann._dolfinx import MPI
from beckmann._mpi import on_root
from beckmann.fields import Solution
from beckmann.store.checkpoint import read_checkpoint
from beckmann.store.folder import read_manifest
from beckmann.store.jsonio import read_json

__all__ = ["load_run"]


def load_run(run_dir: str | Path, comm: MPI.Comm) -> Solution:
    """Reload the solution of a run folder on any number of ranks; collective.

    ``info`` of the returned solution holds ``degree``, ``config``, ``info`` (the solve's
    scalars) and ``summary`` (``summary.json``).

    Raises:
        ValueError: ``run_dir`` is not a beckmann run folder, or has no checkpoint (on every
            rank).
        RuntimeError: The checkpoint is incomplete or corrupt (on every rank).
    """
    run = Path(run_dir)

    def check() -> dict | None:
        manifest = read_manifest(run) if run.is_dir() else None
        if manifest is None or manifest.get("kind") != "run":
            what = "" if manifest is None else f" (it is a {manifest.get('kind')} folder)"
            raise ValueError(
                f"{str(run)!r} is not a beckmann run folder{what}; "
                "create one with `beckmann solve --out DIR`"
            )
        if not (run / "checkpoint").is_dir():
            raise ValueError(
                f"run folder {str(run)!r} has no checkpoint (it was solved with "
                "output.checkpoint = false)"
            )
        summary = run / "summary.json"
        if not summary.is_file():
            return None
        data = read_json(summary)
        if not isinstance(data, dict):
            raise ValueError(
                f"{str(summary)!r} is damaged: it holds a JSON {type(data).__name__}, not the "
                "object `beckmann solve` writes; solve again with --overwrite"
            )
        return data

    summary = on_root(comm, check)
    ck = read_checkpoint(run / "checkpoint", comm)
    f = ck.functions
    info = {**ck.meta, "summary": summary}
    if ck.meta.get("formulation") == "mixed":  # RT flux, DG potential (beckmann.store.mixed)
        from beckmann.store.mixed import load_mixed

        return load_mixed(run / "checkpoint", ck, info)
    return Solution(ck.msh, f["potential"], f["source"], f["target"], info=info)
