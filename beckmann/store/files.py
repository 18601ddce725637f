"""Output *files* (not folders): the samples of ``sample``, the model of ``fit``.

A run or a sweep is a folder (:mod:`beckmann.store.folder`); ``sample`` writes ``OUT.npy`` (and
``OUT.traj.npy``, ...) and ``fit`` writes ``MODEL.json`` + ``MODEL.npz``, often *into* a run
folder (``runs/a/samples.npy``; re-solving ``runs/a`` with ``--overwrite`` then removes them with
the old solution, so samples never outlive the solution they came from). The same rules as for
folders, for files, checked by :func:`check_outputs` on rank 0 **before** any computation, the
outcome broadcast:

* an output may not be a folder, lie below a file, or sit in a folder that cannot be written;
* an output may not be a file that belongs to a beckmann folder: its manifest, the files that
  folder's kind writes itself (``summary.json``, ``config.toml``, ``solution.h5``, ``sweep.json``,
  ...), or anything in its subfolders (``checkpoint/``, ``theta/``, ``layout/``, ...);
* an existing file is replaced only with ``overwrite=True`` (the CLI's ``--overwrite``), and only
  when it is of the same kind (its *manifest* is the file's own header: a model's JSON says
  ``"format": "beckmann-network"``, samples are a ``.npy`` of floats); a foreign file is
  never replaced.

:func:`publish_files` writes every file into a hidden temporary sibling
(``.NAME.part-HOST-PID.SUFFIX``) and renames them into place at the end, the first (main) file
last, so that ``kill -9`` leaves old files or new ones, never half a file. It is collective and
reports its outcome to every rank (:func:`beckmann.store.writes.write_on_root`, ``what`` is the
name of the write for ``BECKMANN_FAIL_WRITE``). :func:`described_write` is the non-collective form
for a write already running on rank 0 inside :func:`beckmann._mpi.on_root`.
"""

from __future__ import annotations

import json
import os
import socket
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann._mpi import on_root
from beckmann.store.folder import MANIFEST, check_parent_writable, read_manifest
from beckmann.store.writes import described_write, write_on_root

__all__ = [
    "FILE_KINDS",
    "check_outputs",
    "check_report",
    "described_write",
    "folder_owning",
    "publish_arrays",
    "publish_files",
    "write_files_here",
]

#: Files that a folder of each kind writes itself (beside its manifest and subfolders).
OWN_FILES = {
    "run": (
        "summary.json",
        "config.toml",
        "solution.xdmf",
        "solution.h5",
        "velocity.xdmf",
        "velocity.h5",
    ),  # fmt: skip
    "sweep": ("summary.json", "sweep.json", "sweep.lock"),
}


def _is_samples(path: Path) -> bool:
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)  # the header only
    except (OSError, ValueError, EOFError):
        return False
    return bool(isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.ndim >= 1)


def _is_model_json(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(64 * 2**20))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == "beckmann-network"


def _is_npz(path: Path) -> bool:
    return zipfile.is_zipfile(path)


#: Per kind: the test that an existing file is of that kind (by suffix).
FILE_KINDS: dict[str, dict[str, Callable[[Path], bool]]] = {
    "samples": {".npy": _is_samples},
    "model": {".json": _is_model_json, ".npz": _is_npz},
}


def folder_owning(path: str | Path) -> tuple[Path, str] | None:
    """The beckmann folder whose own file ``path`` would be, and its kind; else ``None``.

    Serial. ``path`` is such a file when it is the manifest of its folder, one of the files
    :data:`OWN_FILES` lists for that folder's kind, or lies in a subfolder of a beckmann folder.
    """
    p = Path(os.path.abspath(path))
    if p.name == MANIFEST:
        return p.parent, "beckmann"
    for depth, folder in enumerate(p.parents):
        try:
            manifest = read_manifest(folder)
        except RuntimeError:
            manifest = {"kind": "unknown"}
        if manifest is None:
            continue
        kind = str(manifest.get("kind"))
        if depth > 0 or p.name in OWN_FILES.get(kind, ()):
            return folder, kind
        return None
    return None


def _check_writable_file(path: Path, what: str) -> None:
    """``path`` is not a folder, can be created, and is no file of a beckmann folder."""
    where = str(path)
    if path.is_dir():
        raise ValueError(f"{what} {where!r} is a folder")
    check_parent_writable(path, f"cannot write {what}")
    owner = folder_owning(path)
    if owner is not None:
        raise ValueError(
            f"{what} {where!r} would overwrite a file of the beckmann {owner[1]} folder "
            f"{str(owner[0])!r}; choose another name"
        )


def _check_one(path: Path, kind: str, overwrite: bool, what: str) -> None:
    where = str(path)
    _check_writable_file(path, what)
    if not path.exists():
        return
    test = FILE_KINDS[kind].get(path.suffix)
    if test is None or not test(path):
        raise ValueError(
            f"{what} {where!r} exists and is not beckmann {kind}; refusing to replace it"
        )
    if not overwrite:
        raise ValueError(f"{what} {where!r} exists; pass --overwrite to replace it")


def check_outputs(
    comm: MPI.Comm,
    kind: str,
    paths: Sequence[str | Path],
    *,
    overwrite: bool = False,
    what: str = "output",
) -> None:
    """Check on rank 0 that the files ``paths`` of ``kind`` may be written; collective.

    Call it before any computation. ``kind`` is a key of :data:`FILE_KINDS`.

    Raises:
        ValueError: On every rank, naming the file and the reason (see the module docstring).
    """
    if kind not in FILE_KINDS:
        raise ValueError(f"unknown file kind {kind!r}; one of {', '.join(FILE_KINDS)}")
    seen: set[str] = set()

    def check() -> None:
        for p in paths:
            key = os.path.abspath(p)
            if key in seen:
                raise ValueError(f"{what} {str(p)!r} is named twice")
            seen.add(key)
            _check_one(Path(p), kind, overwrite, what)

    on_root(comm, check)


def _is_report(path: Path) -> bool:
    """An existing file that a JSON report may replace: strict JSON, not a model's header."""
    try:
        with open(path, "rb") as f:
            raw = f.read(256 * 2**20 + 1)
        data = json.loads(raw)
    except (OSError, ValueError):
        return False
    return len(raw) <= 256 * 2**20 and not (
        isinstance(data, dict) and data.get("format") == "beckmann-network"
    )


def check_report(comm: MPI.Comm, path: str | Path | None, what: str = "--json-out") -> None:
    """Check on rank 0 that the JSON report ``path`` may be written; collective.

    Call it before any computation. ``None`` (no report asked for) passes. A report replaces an
    earlier report (any strict-JSON file that is not a model's header) without ``--overwrite``,
    as a re-run would expect; it never replaces a file of a beckmann folder (``summary.json``, a
    manifest, anything in ``checkpoint/`` or ``theta/``, ...), a model or a file that is not
    JSON, and its folder must exist and be writable.

    Raises:
        ValueError: On every rank, naming the file and the reason.
    """
    if path is None or str(path) == "":
        return

    def check() -> None:
        p = Path(path)
        where = str(p)
        _check_writable_file(p, what)
        if p.exists() and not (p.is_file() and _is_report(p)):
            raise ValueError(
                f"{what} {where!r} exists and is not a JSON report; refusing to replace it"
            )

    on_root(comm, check)


def _temp(path: Path) -> Path:
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f".{stem}.part-{socket.gethostname()}-{os.getpid()}{path.suffix}")


def write_files_here(writers: dict[Path, Callable[[Path], None]]) -> None:
    """Write each file through its temporary sibling, then rename all, the first last. Serial.

    Each writer gets the temporary path (with the final suffix, so ``np.save`` adds none).
    On a failure every temporary file is removed and no final file was touched.
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for path, write in writers.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = _temp(path)
            temps.append((tmp, path))
            write(tmp)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in reversed(temps):  # the first (main) file last
        os.replace(tmp, path)


def publish_files(comm: MPI.Comm, what: str, writers: dict[Path, Callable[[Path], None]]) -> None:
    """Write the files on rank 0 (:func:`write_files_here`), outcome on every rank; collective.

    Raises:
        RuntimeError: On every rank, when a write fails (``cannot write WHAT (rank 0): ...``).
    """
    write_on_root(comm, what, lambda: write_files_here(writers))


def publish_arrays(
    comm: MPI.Comm, what: str, arrays: Callable[[], dict[Path, npt.ArrayLike]]
) -> None:
    """Save the ``.npy`` files ``arrays()`` returns (called on rank 0 only); collective.

    The first file is the main one (renamed last). See :func:`publish_files`.

    Raises:
        RuntimeError: On every rank, when a write fails.
    """

    def write() -> None:
        writers: dict[Path, Callable[[Path], None]] = {}
        for path, a in arrays().items():
            writers[Path(path)] = lambda p, a=a: np.save(p, np.asarray(a))
        write_files_here(writers)

    write_on_root(comm, what, write)
