"""A lock file that stops a second writer of a folder (a resumable sweep store).

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on a local file system) that holds
the writer's host, pid and process start time::

    {"host": "node1", "pid": 4242, "start": 123456789, "created": "2026-12-02T18:00:00+0000"}

A second writer that finds it is refused with one line naming the lock file and its owner. A lock
is *stale* when its owner is gone, e.g. after ``kill -9`` of the writer: on the same host that is
checked exactly (no process with that pid, or one that started at another time, i.e. a pid reused
since), and a stale lock is taken over. A lock of another host cannot be checked from here; the
message then says how to remove it by hand. Nothing here is collective: take the lock on one rank
(through :func:`beckmann.store.writes.write_on_root`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from beckmann.store.jsonio import dumps_json

__all__ = [
    "LockedError",
    "acquire_lock",
    "lock_owner_alive",
    "process_start_time",
    "release_lock",
]


class LockedError(ValueError):
    """The folder is locked by a live writer (a user error: exit code 2)."""


def process_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot; Linux ``/proc``), or ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    fields = stat[stat.rindex(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def _me() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "start": process_start_time(pid),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def lock_owner_alive(owner: dict[str, Any]) -> bool | None:
    """Whether the lock's owner still runs: ``None`` when that cannot be known (another host)."""
    if owner.get("host") != socket.gethostname():
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user: alive
        pass
    start = owner.get("start")
    now = process_start_time(pid)
    if start is not None and now is not None and now != start:
        return False  # the pid was reused by a younger process
    return True


def _read_owner(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable or half written: treated as a lock of unknown owner
    return data if isinstance(data, dict) else {}


def acquire_lock(path: str | Path, what: str) -> bool:
    """Create the lock file ``path`` for the folder ``what``; not collective.

    Returns:
        ``True`` when a stale lock (of a dead process of this host) was taken over.

    Raises:
        LockedError: A live process (or one of another host, or of unknown owner) holds it.
        OSError: The lock file cannot be created.
    """
    path = Path(path)
    stale = False
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _read_owner(path)
            if owner is None:
                continue  # released meanwhile: try again
            alive = lock_owner_alive(owner) if owner else None
            if alive is False:
                path.unlink(missing_ok=True)
                stale = True
                continue
            who = (
                f"pid {owner.get('pid')} on host {owner.get('host')!s}"
                if owner
                else "an unknown writer"
            )
            hint = (
                "wait for it to finish"
                if alive
                else "if no beckmann process writes there any more, delete the lock file"
            )
            raise LockedError(
                f"{what} is being written by {who} (lock file {str(path)!r}); {hint}"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(dumps_json(_me()) + "\n")
        return stale
    raise LockedError(f"cannot take the lock {str(path)!r} of {what}: it keeps changing")


def release_lock(path: str | Path) -> None:
    """Remove the lock file when it is this process's; not collective, never raises."""
    path = Path(path)
    owner = _read_owner(path)
    me = _me()
    if owner and owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
        try:
            path.unlink()
        except OSError:
            pass
