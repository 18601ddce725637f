"""Guards against requests the machine cannot serve: memory estimates and bounded input files.

A user who asks for ``mesh.n = 100000`` or ``sample --n 1e12`` should get one line that says what
is too large and which option to change, not an out-of-memory kill minutes later. The checks here
are cheap and not collective; callers run them on every rank with the same arguments (so every
rank reaches the same verdict) or through :func:`beckmann._mpi.on_root`.
"""

from __future__ import annotations

import os
import resource
import stat
from pathlib import Path

__all__ = [
    "GIB",
    "MAX_INPUT_BYTES",
    "available_memory",
    "regular_file",
    "require_memory",
]

GIB = 1024**3
#: Largest config / points / model file read into memory (bytes); larger ones are refused.
MAX_INPUT_BYTES = 2 * GIB


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def available_memory() -> int:
    """Bytes this process may still allocate: the least of free memory, cgroup and rlimit."""
    limits = [v for v in (_meminfo_available(), _cgroup_limit()) if v is not None]
    for lim in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft, _ = resource.getrlimit(lim)
        if soft != resource.RLIM_INFINITY:
            limits.append(max(0, soft - _current_vm()))
    return min(limits) if limits else 1 << 62


def _current_vm() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def require_memory(nbytes: float, what: str, hint: str, *, ranks: int = 1) -> None:
    """Raise ``ValueError`` when ``what`` needs more memory than the machine has.

    Args:
        nbytes: Estimated bytes for the whole job (all ranks together).
        what: What is being asked for, e.g. ``"a unit_square mesh with n = 100000"``.
        hint: Which option to change, e.g. ``"lower mesh.n"``.
        ranks: Number of MPI ranks sharing the work on this machine.
    """
    avail = available_memory()
    per_rank = float(nbytes) / max(ranks, 1)
    if per_rank > avail or not per_rank == per_rank:  # NaN-safe
        raise ValueError(
            f"{what} needs about {float(nbytes) / GIB:.3g} GiB of memory, more than the "
            f"{avail * max(ranks, 1) / GIB:.3g} GiB available; {hint}"
        )


def regular_file(path: str | Path, what: str, *, max_bytes: int = MAX_INPUT_BYTES) -> Path:
    """Check that ``path`` is an existing regular file of bounded size; return it as a Path.

    Devices (``/dev/zero``), FIFOs and folders are refused before anything opens them, so a read
    can neither block forever nor exhaust memory.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ValueError(f"{what} {str(p)!r} does not exist") from None
    except OSError as err:
        raise ValueError(f"cannot read {what} {str(p)!r}: {err.strerror}") from err
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{what} {str(p)!r} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {str(p)!r} is not a regular file (a device, FIFO or socket)")
    if st.st_size > max_bytes:
        raise ValueError(
            f"{what} {str(p)!r} is {st.st_size / GIB:.3g} GiB, larger than the "
            f"{max_bytes / GIB:.3g} GiB beckmann reads"
        )
    return p
