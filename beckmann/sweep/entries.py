"""The θ entries of a sweep store: per writer rank one HDF5 file per θ, self-describing, verified.

θ #17 written by a group of ``R`` ranks is ``theta/000017.h5`` (writer rank 0's share) and
``theta/000017.r<r>.h5`` for ``r = 1 .. R-1``. Each share holds

* attributes ``format`` (``"beckmann-sweep-entry"``), ``index`` (17), ``names`` and ``theta``
  (the parameter names and values of θ #17), ``config_hash`` (the store's, see
  :func:`beckmann.store.folder.config_hash`), ``layout`` (the distribution, see
  :mod:`beckmann.sweep.layout`), ``rank`` and ``ranks``; rank 0's also ``row`` (the summary
  row, JSON);
* datasets ``potential`` and, with ``sweep.store_flux``, ``flux``: the writer rank's owned
  values, in its local order (what the layout's dofmaps name), with HDF5's Fletcher-32
  checksum on every chunk, so that a damaged file fails to read instead of serving wrong
  numbers. Nothing is gathered: every rank writes its own share with serial h5py.

Each share is written as ``*.part`` and renamed into place (``os.replace`` is atomic); the shares
of ranks ``r > 0`` are renamed first and rank 0's last, after the group agreed that all are in
place. So ``000017.h5`` marks a complete entry: after ``kill -9`` an entry is complete or not
listed (orphaned ``.r<r>.h5`` shares are removed by ``--resume``). :func:`verify_entry` checks
what a rename cannot guarantee (a file copied over another one, a truncated or corrupt file, an
entry of another config), for ``sweep --resume``; :func:`check_identity` is its cheap part
(attributes only), done by every read of every share. Nothing here is collective.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann.sweep.grid import Grid

__all__ = [
    "ENTRY_FORMAT",
    "check_identity",
    "completed",
    "entry_share",
    "share_path",
    "theta_path",
    "verify_entry",
    "write_entry_file",
]

FloatArray = npt.NDArray[np.float64]

ENTRY_FORMAT = "beckmann-sweep-entry"


def theta_path(folder: Path, i: int) -> Path:
    """The entry of θ number ``i``."""
    return Path(folder) / "theta" / f"{i:06d}.h5"


def completed(folder: Path, k: int) -> list[int]:
    """Indices below ``k`` of the files under ``theta/`` (renamed, so complete when written)."""
    tdir = Path(folder) / "theta"
    if not tdir.is_dir():
        return []
    done = []
    for name in os.listdir(tdir):
        if name.endswith(".h5") and name[:-3].isdigit() and int(name[:-3]) < k:
            done.append(int(name[:-3]))
    return sorted(done)


def share_path(folder: Path, i: int, r: int) -> Path:
    """Writer rank ``r``'s share of θ number ``i`` (rank 0's is :func:`theta_path`)."""
    return theta_path(folder, i) if r == 0 else Path(folder) / "theta" / f"{i:06d}.r{r}.h5"


def write_entry_file(
    path: Path,
    index: int,
    grid: Grid,
    chash: str,
    row: dict[str, Any] | None,
    datasets: dict[str, FloatArray],
    *,
    layout: int = 0,
    rank: int = 0,
    ranks: int = 1,
    rename: bool = True,
) -> None:
    """Write one share into ``path.part``, renamed to ``path`` when ``rename`` (atomic)."""
    import h5py

    tmp = path.with_name(path.name + ".part")
    with h5py.File(tmp, "w") as h5:
        h5.attrs["format"] = ENTRY_FORMAT
        h5.attrs["index"] = int(index)
        h5.attrs["names"] = json.dumps(list(grid.names))
        h5.attrs["theta"] = np.asarray(grid.values[index], dtype=np.float64)
        h5.attrs["config_hash"] = chash
        h5.attrs["layout"] = int(layout)
        h5.attrs["rank"] = int(rank)
        h5.attrs["ranks"] = int(ranks)
        if row is not None:
            h5.attrs["row"] = json.dumps(row)
        for k, v in datasets.items():
            h5.create_dataset(k, data=v, fletcher32=True, chunks=_chunks(np.shape(v)))
    if rename:
        os.replace(tmp, path)  # atomic: the share appears complete or not at all


#: Values per HDF5 chunk of an entry's datasets (512 KB): whole rows, so a rank's slice reads
#: few chunks; h5py's default for a (524k, 2) flux is (4096, 1), and its Fletcher-32 filter then
#: costs about twice as much (writing 40-75 ms against 35-50 ms per θ at 263k P1 dofs).
CHUNK_VALUES = 1 << 16


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...] | bool:
    if not shape or 0 in shape:
        return True  # h5py's own choice
    width = int(np.prod(shape[1:], dtype=np.int64))
    return (max(1, min(shape[0], CHUNK_VALUES // width)), *shape[1:])


def _theta_text(names: list[str], values: Any) -> str:
    vals = np.asarray(values, dtype=np.float64).ravel()
    return "(" + ", ".join(f"{n}={v:.6g}" for n, v in zip(names, vals, strict=False)) + ")"


def check_identity(
    h5: Any, i: int, grid: Grid, chash: str | None, share: tuple[int, int, int] | None = None
) -> str | None:
    """Why the open share ``h5`` is not θ #``i`` of ``grid`` (``None`` when it is).

    Compares the stored format, index, parameter names and values (exactly: both come from the
    same ``sweep.json``), when ``chash`` is given the config hash, and when ``share = (layout,
    rank, ranks)`` is given, those attributes (a share of another entry's writer).
    """
    attrs = h5.attrs
    if (attrs.get("format") != ENTRY_FORMAT or "index" not in attrs or "theta" not in attrs
            or "layout" not in attrs):  # fmt: skip
        return "it carries no index, θ and layout (not an entry of this beckmann version)"
    index = int(attrs["index"])
    try:
        names = json.loads(attrs.get("names", "[]"))
    except ValueError:
        names = []
    theta = np.asarray(attrs["theta"], dtype=np.float64).ravel()
    if index != i:
        return f"it holds θ #{index} {_theta_text(names, theta)} (a copy of another entry?)"
    if names != list(grid.names) or not np.array_equal(theta, grid.values[i]):
        return f"it holds θ {_theta_text(names, theta)}, not the grid's"
    if chash is not None and attrs.get("config_hash") != chash:
        return (
            f"it was computed with another config (hash {attrs.get('config_hash')!s}, "
            f"the store's is {chash})"
        )
    if share is not None:
        got = (int(attrs["layout"]), int(attrs.get("rank", -1)), int(attrs.get("ranks", -1)))
        if got != tuple(share):
            return f"it is share {got[1]} of {got[2]} (layout d{got[0]}), expected {share[1]} " \
                   f"of {share[2]} (layout d{share[0]})"
    return None


def entry_share(h5: Any) -> tuple[int, int]:
    """``(layout, ranks)`` of the entry whose rank-0 share ``h5`` is open (identity checked)."""
    return int(h5.attrs["layout"]), int(h5.attrs.get("ranks", 1))


def verify_entry(
    path: Path, i: int, grid: Grid, chash: str, sizes: Callable[[int], list[dict[str, int]] | None]
) -> str | None:
    """Why the entry whose rank-0 share is ``path`` is not a sound θ #``i`` (``None`` when it is).

    Besides :func:`check_identity` of every share: each file opens (not truncated), each dataset
    of ``sizes(layout)[r]`` (``{name: rows}`` per writer rank of that distribution, ``None``
    when the distribution is unreadable) is there with that many values, reads in full (every
    chunk's checksum) and is finite; rank 0's summary row is JSON.
    """
    import h5py

    folder = path.parent.parent
    try:
        with h5py.File(path, "r") as h5:
            why = check_identity(h5, i, grid, chash)
            if why is not None:
                return why
            layout, ranks = entry_share(h5)
            json.loads(h5.attrs["row"])
        per_rank = sizes(layout)
        if per_rank is None:
            return f"its layout d{layout} is missing or unreadable"
        if len(per_rank) != ranks:
            return f"it has {ranks} shares, its layout d{layout} {len(per_rank)} writer ranks"
        for r in range(ranks):
            share = share_path(folder, i, r)
            if not share.is_file():
                return f"its share {share.name} is missing"
            with h5py.File(share, "r") as h5:
                why = check_identity(h5, i, grid, chash, (layout, r, ranks))
                if why is not None:
                    return f"{share.name}: {why}"
                for name, n in per_rank[r].items():
                    if name not in h5:
                        return f"{share.name} has no {name}"
                    if h5[name].shape[:1] != (n,):
                        shape = h5[name].shape
                        return f"{share.name}: {name} has shape {shape}, the layout {n} rows"
                    if not np.isfinite(h5[name][...]).all():
                        return f"{share.name}: {name} holds non-finite values"
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        text = " ".join(str(err).split()) or type(err).__name__
        return f"the file is truncated or corrupt ({text})"
    return None
