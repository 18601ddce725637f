"""Collective helpers: one place for "check on one rank, agree on all" and global reductions.

Every rank-local check or rank-0 write in beckmann reports its outcome through these, so that no
rank can sit in a collective call while another has raised. All functions are collective over
``comm`` unless stated otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI

__all__ = [
    "agree",
    "allreduce_array",
    "collective",
    "format_point",
    "global_bbox",
    "on_root",
    "point_quantum",
]

FloatArray = npt.NDArray[np.float64]


def _message(err: BaseException) -> str:
    """The error's text on one line (what the CLI prints)."""
    return " ".join((str(err) or type(err).__name__).split())


def on_root[T](comm: MPI.Comm, fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 and broadcast its result, or raise its error on every rank.

    A ``ValueError`` stays a ``ValueError``; any other exception becomes a ``RuntimeError``.
    Every rank raises a new exception with the same one-line message; on rank 0 it is chained to
    the original one. Use it for every rank-0 read or write.
    """
    result: Any = None
    error: tuple[type[Exception], str] | None = None
    original: BaseException | None = None
    if comm.rank == 0:
        try:
            result = fn()
        except Exception as err:  # any failure must reach every rank, or the others hang
            original = err
            kind = ValueError if isinstance(err, ValueError) else RuntimeError
            error = (kind, _message(err))
    result, error = comm.bcast((result, error), root=0)
    if error is not None:
        raise error[0](error[1]) from original
    return result


def agree(comm: MPI.Comm, message: str | None, exc: type[Exception] = ValueError) -> None:
    """Raise ``exc`` on every rank when any rank has a ``message`` (the lowest rank's wins)."""
    messages = comm.allgather(message)
    first = next((m for m in messages if m), None)
    if first:
        raise exc(first)


@contextmanager
def collective(comm: MPI.Comm) -> Iterator[None]:
    """Run a block on every rank, then agree on its outcome.

    An exception on any rank is re-raised on every rank with the lowest failing rank's message
    (``ValueError`` stays ``ValueError``, anything else becomes ``RuntimeError``). The block
    itself must not make collective calls that a failing rank would skip.
    """
    outcome: tuple[str, str] | None = None
    original: BaseException | None = None
    try:
        yield
    except Exception as err:
        original = err
        outcome = ("value" if isinstance(err, ValueError) else "runtime", _message(err))
    outcomes = comm.allgather(outcome)
    first = next((o for o in outcomes if o is not None), None)
    if first is not None:
        kind = ValueError if first[0] == "value" else RuntimeError
        raise kind(first[1]) from original


def allreduce_array(a: npt.ArrayLike, op: MPI.Op, comm: MPI.Comm) -> FloatArray:
    """Elementwise ``Allreduce`` of a float64 array."""
    send = np.ascontiguousarray(a, dtype=np.float64)
    recv = np.empty_like(send)
    comm.Allreduce(send, recv, op=op)
    return recv


def global_bbox(points: npt.ArrayLike, comm: MPI.Comm) -> tuple[FloatArray, FloatArray]:
    """Bounding box ``(lo, hi)`` of rank-local ``(n, d)`` points over all ranks.

    Ranks with no points are allowed (they contribute ``+inf`` / ``-inf``).
    """
    X = np.asarray(points, dtype=np.float64)
    d = X.shape[1]
    lo = X.min(axis=0) if X.shape[0] else np.full(d, np.inf)
    hi = X.max(axis=0) if X.shape[0] else np.full(d, -np.inf)
    return allreduce_array(lo, MPI.MIN, comm), allreduce_array(hi, MPI.MAX, comm)


def point_quantum(scale: float) -> float:
    """The rounding step of points in messages: a power of ten near ``1e-9 * scale``."""
    scale = float(scale) if math.isfinite(scale) and scale > 0 else 1.0
    return float(10.0 ** math.floor(math.log10(1e-9 * scale)))


def format_point(point: Sequence[float] | npt.ArrayLike, scale: float = 1.0) -> str:
    """A point for a message, to a precision relative to the domain's size ``scale``.

    Coordinates are rounded to :func:`point_quantum` (about ``1e-9 * scale``), so round-off at the
    origin prints as ``0`` and a point just outside the unit square (``x = 1.0000005``) is not
    shown as ``1``. Not collective.
    """
    quantum = point_quantum(scale)
    digits = max(0, -round(math.log10(quantum)))
    parts = []
    for c in np.asarray(point, dtype=np.float64).ravel():
        if not math.isfinite(c) or abs(c) > 1e6 / 1e-9 * quantum:
            parts.append(f"{c:.6g}")  # far outside the domain: its size, not its last digits
            continue
        text = f"{round(c / quantum) * quantum:.{digits}f}".rstrip("0").rstrip(".")
        parts.append("0" if text in ("-0", "") else text)
    return "(" + ", ".join(parts) + ")"
