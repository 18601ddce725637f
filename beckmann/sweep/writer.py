"""Writing a sweep store: lock it, create it or check it for ``--resume``, write its entries.

See :mod:`beckmann.sweep.store` for the layout and for why a store is written in place rather
than staged whole. :func:`prepare_store` runs on rank 0 before any solve and broadcasts its
outcome; the caller releases the lock with :func:`unlock_store` (also on an error path).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann._version import __version__
from beckmann.store.folder import (
    check_destination,
    config_hash,
    read_manifest,
    read_stamped_json,
    write_manifest,
)
from beckmann.store.jsonio import dumps_json, write_text_atomic
from beckmann.store.lock import acquire_lock, release_lock
from beckmann.store.writes import described_write, write_on_each, write_on_root
from beckmann.sweep.entries import (
    completed,
    share_path,
    theta_path,
    verify_entry,
    write_entry_file,
)
from beckmann.sweep.grid import Grid
from beckmann.sweep.layout import LAYOUT, layout_dir, read_index

__all__ = [
    "LOCK",
    "STORE_FORMAT",
    "STORE_VERSION",
    "check_version",
    "comparable",
    "layout_sizes",
    "prepare_store",
    "store_hash",
    "unlock_store",
    "write_entry",
]

FloatArray = npt.NDArray[np.float64]

#: The lock file of a store being written.
LOCK = "sweep.lock"
STORE_FORMAT = "beckmann-sweep"
#: 2: per-rank, exactly keyed shares (beckmann.sweep.layout); 1: gathered, coordinate-keyed
STORE_VERSION = 2
#: ``[sweep]`` keys that do not change the stored results (reports, grouping).
_REPORT_KEYS = (
    "group_size",
    "continuity",
    "joint_points",
    "continuity_holder",
    "holder_k",
    "holder_alpha",
    "holder_pairs",
)


def comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The parts of a config that determine the stored results (not output or reports)."""
    keep = {s: v for s, v in cfg.items() if s != "output"}
    keep["sweep"] = {k: v for k, v in keep.get("sweep", {}).items() if k not in _REPORT_KEYS}
    return dict(json.loads(dumps_json(keep)))


def write_entry(
    folder: Path,
    row: dict[str, Any],
    grid: Grid,
    chash: str,
    data: dict[str, FloatArray],
    gcomm: MPI.Comm,
    layout: int,
) -> None:
    """Write one finished θ (``row["index"]``): every rank of ``gcomm`` its own share.

    ``data``: this rank's owned values (the order of ``layout``'s dofmaps); ``row`` is the same
    on every rank, rank 0's share carries it. The shares of ranks > 0 are renamed into place
    first, rank 0's last (:mod:`beckmann.sweep.entries`). Collective on ``gcomm``.

    Raises:
        RuntimeError: On every rank of ``gcomm``, when a rank's write fails.
    """
    index = int(row["index"])
    r, size = gcomm.rank, gcomm.size
    path = share_path(folder, index, r)
    what = f"theta/{index:06d}.h5"

    def write() -> None:
        write_entry_file(path, index, grid, chash, row if r == 0 else None, data,
                         layout=layout, rank=r, ranks=size, rename=r > 0)  # fmt: skip

    tmp = path.with_name(path.name + ".part")
    try:
        write_on_each(gcomm, what, write)
        if size == 1:
            described_write(what, lambda: os.replace(tmp, path))  # one rank: nothing to agree
        else:
            write_on_root(gcomm, what, lambda: os.replace(tmp, path))
    except RuntimeError:
        # every rank raises here together: leave no half entry (a share without rank 0's)
        tmp.unlink(missing_ok=True)
        if r > 0:
            path.unlink(missing_ok=True)
        raise


def check_version(meta: dict[str, Any], folder: Path) -> None:
    """Refuse a store of another format version (one line: what to do).

    Raises:
        ValueError: ``meta`` (``sweep.json``) is of another version.
    """
    version = meta.get("version")
    if version != STORE_VERSION:
        raise ValueError(
            f"{str(folder)!r} is a sweep store of format version {version} (beckmann "
            f"{meta.get('beckmann', '?')}); this beckmann reads version {STORE_VERSION}: run the "
            "sweep again with --overwrite"
        )


def store_hash(cfg: dict[str, Any]) -> str:
    """The config hash of a store: of the parts that determine its results (:func:`comparable`)."""
    return config_hash(comparable(cfg))


def layout_sizes(folder: Path, store_flux: bool) -> Callable[[int], list[dict[str, int]] | None]:
    """``sizes(d)``: per writer rank of distribution ``d`` the rows of each stored dataset."""
    cache: dict[int, list[dict[str, int]] | None] = {}

    def sizes(d: int) -> list[dict[str, int]] | None:
        if d not in cache:
            try:
                index = read_index(folder, d)
                names = ["potential"] + (["flux"] if store_flux else [])
                offs = {n: index["spaces"][n]["dof_offsets"] for n in names}
                cache[d] = [{n: int(o[r + 1] - o[r]) for n, o in offs.items()}
                            for r in range(int(index["ranks"]))]  # fmt: skip
            except (RuntimeError, KeyError, TypeError, ValueError):
                cache[d] = None
        return cache[d]

    return sizes


def _refuse_other(folder: Path) -> dict[str, Any] | None:
    """The manifest of the sweep in ``folder`` (``{}`` for one without), or ``None`` if none.

    Raises:
        ValueError: ``folder`` may not hold a sweep store (a file, another kind, foreign files).
    """
    if folder.is_dir():
        manifest = read_manifest(folder)
        if manifest is not None:
            if manifest.get("kind") == "sweep":
                return manifest
            check_destination(folder, "sweep")  # raises: another kind
        if (folder / "sweep.json").is_file():
            return {}  # a store of an older beckmann, without a manifest
        if any(p.name != LOCK for p in folder.iterdir()):
            check_destination(folder, "sweep")  # raises: a foreign folder
        return None
    check_destination(folder, "sweep")  # a file, below a file, unwritable
    return None


def _clear(folder: Path) -> None:
    """Remove everything in ``folder`` but the lock."""
    for p in folder.iterdir():
        if p.name == LOCK:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def prepare_store(
    folder: Path,
    cfg: dict[str, Any],
    grid: Grid,
    resume: bool,
    comm: MPI.Comm,
    *,
    overwrite: bool = False,
    store_flux: bool = True,
) -> dict[str, Any]:
    """Lock, create or check the store on rank 0 before any solve; collective.

    A new store gets its manifest (kind ``"sweep"``) and ``sweep.json`` at once. ``--resume``
    checks the config and grid against ``sweep.json`` and every stored entry with
    :func:`~beckmann.sweep.entries.verify_entry`; entries that fail are deleted and solved
    again. ``overwrite`` empties an old store first (never a mix of two sweeps).

    Returns:
        ``{"pending": [...], "rejected": [[i, reason], ...], "stale_lock": bool}`` (every rank).
        The caller holds the lock (:data:`LOCK`) and releases it with :func:`unlock_store`.

    Raises:
        ValueError: The folder holds a sweep and neither ``resume`` nor ``overwrite`` is given,
            holds another config or grid, is locked by another writer, or may not be written
            (a file, another kind, a non-empty foreign folder); on every rank.
        RuntimeError: The folder cannot be written (on every rank).
    """
    chash = store_hash(cfg)

    def prepare() -> dict[str, Any]:
        manifest = _refuse_other(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stale = acquire_lock(folder / LOCK, f"sweep store {str(folder)!r}")
        try:
            manifest = _refuse_other(folder)  # again, now that no one else writes
            if manifest is not None and overwrite:
                _clear(folder)
                manifest = None
            rejected: list[list[Any]] = []
            if manifest is not None:
                if not resume:
                    raise ValueError(
                        f"{str(folder)!r} already holds a sweep; pass --resume to continue it, "
                        "--overwrite to replace it, or choose another --out"
                    )
                rejected = _check_resume(folder, cfg, grid, chash, store_flux)
                if not manifest:
                    write_manifest(folder, "sweep", comparable(cfg))
            else:
                meta = {
                    "format": STORE_FORMAT,
                    "version": STORE_VERSION,
                    "beckmann": __version__,
                    "config_hash": chash,
                    "config": cfg,
                    "grid": grid.to_json(),
                }
                write_manifest(folder, "sweep", comparable(cfg))
                write_text_atomic(folder / "sweep.json", dumps_json(meta) + "\n")
            (folder / "theta").mkdir(exist_ok=True)
            done = set(completed(folder, len(grid)))
            pending = [i for i in range(len(grid)) if i not in done]
            return {"pending": pending, "rejected": rejected, "stale_lock": stale}
        except BaseException:
            release_lock(folder / LOCK)
            raise

    return dict(write_on_root(comm, "folder", prepare))


def _check_resume(
    folder: Path, cfg: dict[str, Any], grid: Grid, chash: str, store_flux: bool
) -> list[list[Any]]:
    """Check ``sweep.json``, drop interrupted writes and entries that fail; the rejected ones."""
    meta_path = folder / "sweep.json"
    try:
        old = read_stamped_json(meta_path, STORE_FORMAT, "a beckmann sweep store")
    except ValueError as e:
        raise ValueError(f"{e}; cannot --resume") from e
    check_version(old, folder)
    if comparable(old["config"]) != comparable(cfg):
        raise ValueError(
            f"--resume: the config differs from the one the sweep in {str(folder)!r} "
            "was started with"
        )
    if not np.array_equal(Grid.from_json(old["grid"]).values, grid.values):
        raise ValueError(f"--resume: the grid differs from the one in {str(folder)!r}")
    (folder / "summary.json").unlink(missing_ok=True)  # the store is incomplete until the end
    tdir = folder / "theta"
    tdir.mkdir(exist_ok=True)
    done = completed(folder, len(grid))
    for name in os.listdir(tdir):
        # interrupted writes, and shares of entries whose rank-0 share never appeared
        stem = name.split(".")[0]
        if name.endswith(".part") or (".r" in name and (not stem.isdigit()
                                                         or int(stem) not in done)):  # fmt: skip
            os.remove(tdir / name)
    base = folder / LAYOUT
    if base.is_dir():
        for p in base.iterdir():
            if p.name.endswith(".part"):
                shutil.rmtree(p)  # an interrupted layout
    sizes = layout_sizes(folder, store_flux)
    # without d0 (the mesh) no entry can be read: every one is solved again
    mesh = sizes(0) is not None and (layout_dir(folder, 0) / "mesh.xdmf").is_file()
    rejected: list[list[Any]] = []
    for i in done:
        path = theta_path(folder, i)
        why = None if mesh else "the store's layout d0 (its mesh) is missing or unreadable"
        why = why or verify_entry(path, i, grid, chash, sizes)
        if why is not None:
            for p in tdir.glob(f"{i:06d}.*h5"):
                p.unlink()
            rejected.append([i, f"theta/{path.name}: {why}"])
    return rejected


def unlock_store(folder: Path, comm: MPI.Comm) -> None:
    """Release the store's lock on rank 0. Not collective (safe on an error path)."""
    if comm.rank == 0:
        release_lock(Path(folder) / LOCK)
