"""Safe output folders: a manifest, a kind, and an atomic appearance under the final name.

Every folder beckmann writes (a run, a sweep store, a fitted model, a set of samples) carries a
manifest ``beckmann.json``::

    {"format": "beckmann-folder", "kind": "run", "version": 1,
     "config_hash": "3f9c...", "beckmann": "0.1.0", "created": "2026-12-02T10:40:00+00:00"}

The rules, enforced by :func:`staged_folder` on rank 0 **before** any computation (the outcome is
broadcast, so every rank raises the same ``ValueError``):

* a destination that is a file, lies below a file, or cannot be created is refused;
* a folder with a manifest of another kind is refused;
* a folder of the same kind is replaced only with ``overwrite=True`` (the CLI's
  ``--overwrite``), and then **whole**: nothing of the old folder survives beside the new one;
* a non-empty folder without a manifest (a foreign folder, or data of an older beckmann) is
  refused.

The work is written into a temporary sibling ``.<name>.part-<host>-<pid>`` and moved under the
final name only when complete: by an atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``) when
an old folder is replaced, else by a rename. ``kill -9`` at any moment leaves the previous
complete folder, or nothing under the final name; leftover ``.part`` siblings of dead processes
are removed by the next writer.

Use, for every command that writes a folder (all calls collective)::

    from beckmann.store.folder import staged_folder

    with staged_folder(out, "sweep", comm, overwrite=overwrite, config=cfg) as tmp:
        ...  # write everything below tmp (a Path, the same on every rank)
    # here ``out`` holds the complete folder and its manifest

and for every command that reads one, :func:`require_kind` (``load_run`` does this for runs).
A resumable writer (``sweep --resume``) that must add to an existing folder in place can use
:func:`check_destination` and :func:`write_manifest` directly.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from beckmann._dolfinx import MPI
from beckmann._mpi import on_root
from beckmann._version import __version__
from beckmann.store.jsonio import dumps_json, jsonable, read_json
from beckmann.store.writes import write_on_root

__all__ = [
    "FOLDER_KINDS",
    "FOLDER_VERSION",
    "MANIFEST",
    "check_destination",
    "check_parent_writable",
    "config_hash",
    "folder_kind",
    "read_manifest",
    "read_stamped_json",
    "require_kind",
    "staged_folder",
    "write_manifest",
]

MANIFEST = "beckmann.json"
FOLDER_VERSION = 1
FOLDER_KINDS = ("run", "sweep", "model", "samples")
_FORMAT = "beckmann-folder"


def config_hash(cfg: Any) -> str:
    """A short SHA-256 of the canonical JSON of a resolved config."""
    text = json.dumps(jsonable(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of ``folder``, or ``None`` when it has none. Not collective.

    Raises:
        RuntimeError: The manifest exists but is unreadable or not a beckmann manifest.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return read_stamped_json(path, _FORMAT, "a beckmann folder manifest")
    except ValueError as err:
        raise RuntimeError(str(err)) from err


def folder_kind(folder: str | Path) -> str | None:
    """The kind named by ``folder``'s manifest (``"damaged"``: unreadable; ``None``: none).

    Not collective.
    """
    try:
        manifest = read_manifest(folder)
    except RuntimeError:
        return "damaged"
    return None if manifest is None else str(manifest.get("kind"))


def read_stamped_json(path: Path, fmt: str, what: str) -> dict[str, Any]:
    """The JSON object in ``path`` whose ``"format"`` is ``fmt``. Not collective.

    Raises:
        ValueError: ``path`` is unreadable, not JSON, or not ``what`` (another ``"format"``).
    """
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ValueError(f"{str(path)!r} is not {what}")
    return data


def write_manifest(folder: str | Path, kind: str, config: Any = None) -> None:
    """Write ``folder``'s manifest (atomically). Not collective: call it on one rank."""
    if kind not in FOLDER_KINDS:
        raise ValueError(f"unknown folder kind {kind!r}; one of {', '.join(FOLDER_KINDS)}")
    manifest = {
        "format": _FORMAT,
        "kind": kind,
        "version": FOLDER_VERSION,
        "config_hash": None if config is None else config_hash(config),
        "beckmann": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = Path(folder) / MANIFEST
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(dumps_json(manifest) + "\n")
    os.replace(tmp, path)


def check_parent_writable(path: Path, action: str) -> None:
    """Raise ``ValueError`` (``"ACTION 'path': ..."``) unless ``path`` can be created.

    The nearest existing ancestor of ``path`` must be a folder this process may write. Serial.
    """
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{action} {str(path)!r}: {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{action} {str(path)!r}: {str(parent)!r} is not writable")


def check_destination(dest: str | Path, kind: str, *, overwrite: bool = False) -> None:
    """Refuse ``dest`` as the output folder of a ``kind`` unless the rules allow it. Serial.

    Raises:
        ValueError: With the reason (see the module docstring).
    """
    dest = Path(dest)
    where = str(dest)
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"output folder {where!r} exists and is not a folder")
    check_parent_writable(dest, "cannot create output folder")
    if not dest.is_dir():
        return
    manifest = read_manifest(dest)
    if manifest is None:
        if any(dest.iterdir()):
            raise ValueError(
                f"output folder {where!r} is not empty and not a beckmann folder; "
                "refusing to write into it (choose another folder)"
            )
        return
    if manifest.get("kind") != kind:
        raise ValueError(
            f"output folder {where!r} is a beckmann {manifest.get('kind')} folder, not a {kind} "
            "folder; refusing to replace it"
        )
    if not overwrite:
        raise ValueError(
            f"output folder {where!r} already holds a beckmann {kind}; pass --overwrite to "
            "replace it"
        )


def require_kind(folder: str | Path, kind: str, comm: MPI.Comm) -> dict[str, Any]:
    """Check on rank 0 that ``folder`` is a beckmann folder of ``kind``; collective.

    Returns:
        Its manifest (on every rank).

    Raises:
        ValueError: On every rank, when it is not (the message names what it is).
    """

    def check() -> dict[str, Any]:
        manifest = read_manifest(folder) if Path(folder).is_dir() else None
        if manifest is None:
            raise ValueError(f"{str(folder)!r} is not a beckmann {kind} folder (no {MANIFEST})")
        if manifest.get("kind") != kind:
            raise ValueError(
                f"{str(folder)!r} is a beckmann {manifest.get('kind')} folder, not a {kind} folder"
            )
        return manifest

    return on_root(comm, check)


def _prefix(dest: Path) -> str:
    return f".{dest.name}.part-"


def _remove_stale(dest: Path) -> None:
    """Remove ``.part`` siblings left by dead processes of this host."""
    host = socket.gethostname()
    for path in dest.parent.glob(_prefix(dest) + "*"):
        tail = path.name[len(_prefix(dest)) :]
        h, _, pid = tail.rpartition("-")
        if h != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where that is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _publish(tmp: Path, dest: Path) -> None:
    """Move the complete ``tmp`` to ``dest``, replacing an old ``dest`` whole."""
    if not dest.exists():
        os.rename(tmp, dest)
        return
    if _exchange(tmp, dest):
        shutil.rmtree(tmp)  # it now holds the old folder
        return
    old = tmp.with_name(tmp.name + "-old")
    os.rename(dest, old)  # for a moment nothing is under the final name, never a mix
    os.rename(tmp, dest)
    shutil.rmtree(old)


@contextlib.contextmanager
def staged_folder(
    dest: str | Path,
    kind: str,
    comm: MPI.Comm,
    *,
    overwrite: bool = False,
    config: Any = None,
) -> Iterator[Path]:
    """Check ``dest``, yield a temporary sibling to write into, publish it at the end; collective.

    On a normal exit the manifest (``kind``, hash of ``config``) is written into the temporary
    folder and it replaces ``dest`` whole. On an exception the temporary folder is removed and
    ``dest`` is left as it was.

    Raises:
        ValueError: On every rank, before anything is computed, when ``dest`` may not be
            written (see the module docstring).
        RuntimeError: On every rank, when the temporary folder cannot be created or published.
    """
    dest = Path(dest)

    def prepare() -> Path:
        check_destination(dest, kind, overwrite=overwrite)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(dest)
        tmp = dest.parent / f"{_prefix(dest)}{socket.gethostname()}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        return tmp

    tmp = write_on_root(comm, "folder", prepare)
    try:
        yield tmp
    except BaseException:
        if comm.rank == 0:  # not collective: the error may be this rank's alone
            shutil.rmtree(tmp, ignore_errors=True)
        raise

    def publish() -> None:
        write_manifest(tmp, kind, config)
        _publish(tmp, dest)

    try:
        write_on_root(comm, "folder", publish)
    except RuntimeError:
        if comm.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
