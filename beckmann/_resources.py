"""Guards against requests the machine cannot serve: memory estimates and bounded input files.

A user who asks for ``mesh.n = 100000`` or ``sample --n 1e12`` should get one line that says what
is too large and which option to change, not an out-of-memory kill minutes later. The checks here
are cheap and not collective; callers run them on every rank with the same arguments (so every
rank reaches the same verdict) or through :func:`beckmann._mpi.on_root`.
"""

from __future__ import annotations

import math
import os
import resource
import stat
from pathlib import Path
from typing import Any

__all__ = [
    "GIB",
    "MAX_INPUT_BYTES",
    "available_memory",
    "check_hdf5",
    "read_npy",
    "fit_bytes",
    "regular_file",
    "require_memory",
    "reuse_freed_memory",
    "solve_bytes",
]

GIB = 1024**3
#: Largest config / points / model file read into memory (bytes); larger ones are refused.
MAX_INPUT_BYTES = 2 * GIB


#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
#: Environment variables by which a user tunes glibc's malloc; any of them set: left alone.
_MALLOC_ENV = ("GLIBC_TUNABLES", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_",
               "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def reuse_freed_memory() -> bool:
    """Let the process reuse the memory it frees instead of returning it to the system (glibc).

    By default glibc serves every block above 128 kB to 32 MB by its own ``mmap`` and unmaps it
    on ``free``, so each large temporary array (NumPy, PETSc, DOLFINx) is faulted in page by
    page again: a 1M-dof ``beckmann solve`` took 329k page faults and 1.7-2.0 s of system time
    for 0.65 GB of peak memory. With ``mmap`` off and the heap not trimmed, freed blocks are
    reused: 142k faults (about one per page of the peak), 0.85 s of system time, the same peak
    (docs/performance.md). Called first thing by the ``beckmann`` command; not on other C
    libraries (``mallopt`` missing), not when the user tunes malloc through the environment
    (``GLIBC_TUNABLES``, ``MALLOC_*_``), not with ``BECKMANN_MALLOC=system``.

    Returns:
        Whether the setting was applied.
    """
    if os.environ.get("BECKMANN_MALLOC", "") == "system" or any(
        v in os.environ for v in _MALLOC_ENV
    ):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (or no C library symbols): nothing to do
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the trim threshold is an int: 2 GiB - 1, beyond which the heap's top is still returned
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


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


def _machine_available() -> int | None:
    """Bytes the machine can still give all processes together: free memory, cgroup limit."""
    limits = [v for v in (_meminfo_available(), _cgroup_limit()) if v is not None]
    return min(limits) if limits else None


def _process_available() -> int | None:
    """Bytes this process may still map under its own rlimits (``prlimit --as``), or None."""
    limits = []
    for lim in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft, _ = resource.getrlimit(lim)
        if soft != resource.RLIM_INFINITY:
            limits.append(max(0, soft - _current_vm()))
    return min(limits) if limits else None


def available_memory() -> int:
    """Bytes this process may still allocate: the least of free memory, cgroup and rlimit."""
    limits = [v for v in (_machine_available(), _process_available()) if v is not None]
    return min(limits) if limits else 1 << 62


def _current_vm() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.3g} GiB"


def require_memory(
    nbytes: float, what: str, hint: str, *, ranks: int = 1, hosts: int = 1, root: float = 0.0
) -> None:
    """Raise ``ValueError`` when ``what`` needs more memory than the machine has.

    The job's ``nbytes`` are shared evenly by ``ranks`` processes on ``hosts`` machines; rank 0
    needs ``root`` bytes more (e.g. a whole mesh before it is distributed). The total is
    compared with the machines' free memory, the share of one rank with the process's rlimit.

    Args:
        nbytes: Estimated bytes for the whole job (all ranks together).
        what: What is being asked for, e.g. ``"a unit_square mesh with mesh.n = 100000"``.
        hint: Which option to change, e.g. ``"lower mesh.n"``.
        ranks: Number of MPI ranks sharing the work.
        hosts: Number of machines the ranks run on.
        root: Extra bytes on rank 0 only.
    """
    ranks, hosts = max(int(ranks), 1), max(int(hosts), 1)
    nbytes, root = float(nbytes), float(root)
    machine, process = _machine_available(), _process_available()
    total = nbytes + root
    too_much = not (total == total)  # NaN
    limit = float("inf")
    if machine is not None:
        limit = machine * hosts
        too_much = too_much or total / hosts > machine
    if process is not None:
        per_rank = nbytes / ranks + root
        too_much = too_much or per_rank > process
        limit = min(limit, process * ranks)
    if too_much:
        avail = f"the {_gib(limit)} available" if math.isfinite(limit) else "what is available"
        raise ValueError(f"{what} needs about {_gib(total)} of memory, more than {avail}; {hint}")


# --------------------------------------------------------------------------------------------
# Estimates. They aim at the right order of magnitude (measured peaks are within about 1.5x),
# which is what is needed to refuse a request 10-1000x too large before it allocates anything.

#: Non-zeros per row of a Lagrange stiffness matrix, by (gdim, degree).
_NNZ_ROW = {(2, 1): 7, (2, 2): 14, (2, 3): 25, (3, 1): 15, (3, 2): 45, (3, 3): 100}


def solve_bytes(dofs: float, cells: float, gdim: int, degree: int) -> float:
    """Bytes of a mesh with ``cells`` cells and a Neumann solve with ``dofs`` unknowns.

    Matrix + GAMG hierarchy (about three copies of the matrix, 12 bytes a non-zero), some
    20 vectors, and about 600 bytes a cell for the mesh, its topology and its dofmaps.
    Measured (P1/P2, unit_square, n = 128..256): 0.9-1.2x of the peak resident memory.
    """
    nnz = _NNZ_ROW.get((int(gdim), int(degree)), 100)
    return float(dofs) * (160.0 + 36.0 * nnz) + float(cells) * 600.0


def fit_bytes(
    width: int, depth: int, points: int, batch: int | None, inputs: int = 4, outputs: int = 4
) -> float:
    """Bytes of fitting a ``depth x width`` network on ``points`` points, with derivatives.

    Parameters, gradients and the two Adam moments (float64 at initialisation: 8 bytes, x 5
    copies), and activations of a batch for the value and ``inputs`` directional derivatives
    (x 6 for the backward pass).
    """
    w, d = float(width), max(float(depth), 1.0)
    params = inputs * w + w + (d - 1.0) * (w * w + w) + w * outputs + outputs
    batch_pts = float(batch if batch else points)
    acts = batch_pts * w * d * (1.0 + inputs) * 8.0 * 6.0
    return params * 8.0 * 5.0 + acts + float(points) * (inputs + outputs * (1 + inputs)) * 8.0


def check_hdf5(path: str | Path, what: str) -> Path:
    """Check that ``path`` is a complete, readable HDF5 file before a C library opens it.

    DOLFINx's HDF5 reader prints the library's error stack (``HDF5-DIAG`` lines) and then a
    message without the file's name; h5py reports the same faults quietly, so the file is opened
    here first. Raises ``RuntimeError`` naming the file. Serial.
    """
    import h5py

    p = Path(path)
    shown = os.path.normpath(p)
    if not p.is_file():
        raise RuntimeError(f"{what} {shown!r} does not exist")
    if not h5py.is_hdf5(p):
        raise RuntimeError(f"{what} {shown!r} is not an HDF5 file")
    try:
        with h5py.File(p, "r") as h5:
            h5.visititems(lambda name, obj: obj.shape if hasattr(obj, "shape") else None)
    except Exception as err:  # h5py raises OSError, RuntimeError, KeyError, ... for damage
        reason = " ".join(str(err).split()) or type(err).__name__
        raise RuntimeError(f"{what} {shown!r} is damaged or truncated ({reason})") from err
    return p


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


def read_npy(path: str | Path, what: str) -> Any:
    """Load a ``.npy`` array of numbers after checking its header; never unpickles.

    The header is read first: a file that is not ``.npy`` (e.g. text), an array of Python
    objects or strings, or one declaring more elements than the memory holds is refused with a
    ``ValueError`` naming ``what`` and the file, before its data are read. Serial.
    """
    import numpy as np

    p = regular_file(path, what)
    shown = str(p)
    try:
        with open(p, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise ValueError(
            f"{what} {shown!r} is not a NumPy .npy file ({' '.join(str(err).split())})"
        ) from err
    if dtype.hasobject or dtype.kind not in "biuf":
        kind = "Python objects (pickled)" if dtype.hasobject else f"{dtype} values"
        raise ValueError(
            f"{what} {shown!r} holds {kind}; beckmann reads arrays of real numbers only"
        )
    nbytes = float(math.prod(shape)) * dtype.itemsize
    require_memory(nbytes, f"{what} {shown!r} (shape {tuple(shape)})", "use a smaller file")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(
            f"{what} {shown!r} is damaged or truncated ({' '.join(str(err).split())})"
        ) from err
