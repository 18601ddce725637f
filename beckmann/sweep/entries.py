"""The θ entries of a sweep store: one HDF5 file per θ, self-describing and verified.

``theta/000017.h5`` holds

* attributes ``format`` (``"beckmann-sweep-entry"``), ``index`` (17), ``names`` and ``theta``
  (the parameter names and values of θ #17), ``config_hash`` (the store's, see
  :func:`beckmann.store.folder.config_hash`) and ``row`` (the summary row, JSON);
* datasets ``potential`` and, with ``sweep.store_flux``, ``flux``, in layout order, with HDF5's
  Fletcher-32 checksum on every chunk, so that a damaged file fails to read instead of serving
  wrong numbers.

An entry is written as ``000017.h5.part`` and renamed into place (``os.replace`` is atomic):
after ``kill -9`` a file under the final name is complete. :func:`verify_entry` checks what a
rename cannot guarantee (a file copied over another one, a truncated or corrupt file, an entry of
another config), for ``sweep --resume``; :func:`check_identity` is its cheap part (attributes
only), done by every read. Nothing here is collective.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann.sweep.grid import Grid

__all__ = [
    "ENTRY_FORMAT",
    "check_identity",
    "completed",
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


def write_entry_file(
    path: Path,
    index: int,
    grid: Grid,
    chash: str,
    row: dict[str, Any],
    datasets: dict[str, FloatArray],
) -> None:
    """Write one entry atomically (``.part`` file, then ``os.replace``)."""
    import h5py

    tmp = path.with_name(path.name + ".part")
    with h5py.File(tmp, "w") as h5:
        h5.attrs["format"] = ENTRY_FORMAT
        h5.attrs["index"] = int(index)
        h5.attrs["names"] = json.dumps(list(grid.names))
        h5.attrs["theta"] = np.asarray(grid.values[index], dtype=np.float64)
        h5.attrs["config_hash"] = chash
        h5.attrs["row"] = json.dumps(row)
        for k, v in datasets.items():
            h5.create_dataset(k, data=v, fletcher32=True, chunks=_chunks(np.shape(v)))
    os.replace(tmp, path)  # atomic: the entry appears complete or not at all


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


def check_identity(h5: Any, i: int, grid: Grid, chash: str | None) -> str | None:
    """Why the open entry file ``h5`` is not θ #``i`` of ``grid`` (``None`` when it is).

    Compares the stored format, index, parameter names and values (exactly: both come from the
    same ``sweep.json``) and, when ``chash`` is given, the config hash.
    """
    attrs = h5.attrs
    if attrs.get("format") != ENTRY_FORMAT or "index" not in attrs or "theta" not in attrs:
        return "it carries no index and θ (not an entry of this beckmann version)"
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
    return None


def verify_entry(path: Path, i: int, grid: Grid, chash: str, sizes: dict[str, int]) -> str | None:
    """Why the entry file ``path`` is not a sound θ #``i`` (``None`` when it is).

    Besides :func:`check_identity`: the file opens (not truncated), each dataset of ``sizes``
    is there with that many values, reads in full (every chunk's checksum) and is finite.
    """
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            why = check_identity(h5, i, grid, chash)
            if why is not None:
                return why
            for name, n in sizes.items():
                if name not in h5:
                    return f"it has no {name}"
                if h5[name].shape[:1] != (n,):
                    return f"its {name} has shape {h5[name].shape}, the layout {n} values"
                values = h5[name][...]
                if not np.isfinite(values).all():
                    return f"its {name} holds non-finite values"
            json.loads(h5.attrs["row"])
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        text = " ".join(str(err).split()) or type(err).__name__
        return f"the file is truncated or corrupt ({text})"
    return None
