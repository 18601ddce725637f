"""The one collective helper every write of beckmann goes through.

A write done on one rank (rank 0's JSON, a per-rank checkpoint file) can fail on that rank only.
If the other ranks did not learn of it they would walk into the next collective call and wait
forever. So every write runs inside one of these helpers, which broadcast (or agree on) its
outcome: afterwards either every rank has succeeded or every rank raises the same one-line
``RuntimeError``.

* :func:`write_on_root`: rank 0 writes, the outcome (or the error) is broadcast.
* :func:`write_on_each`: every rank writes its own file, then all ranks agree.
* :func:`before_collective_write`: for DOLFINx's collective writers (XDMF, VTX), which every
  rank must enter together; checks the injected failures first so that tests can make one rank
  fail before the collective call starts.

Testing hook: the environment variable ``BECKMANN_FAIL_WRITE=RANK:WHAT[,RANK:WHAT...]`` makes
the write called ``WHAT`` fail on rank ``RANK`` of ``MPI.COMM_WORLD`` with an ``OSError``, as a
full disk or a permission error would. A write done on rank 0 alone (:func:`write_on_root`) can
be made to fail on another rank too: that rank then raises as the write starts, as if it had
failed just then, which checks that the others do not wait for it. ``WHAT`` names are the
``what`` arguments below, e.g. ``summary.json``, ``checkpoint``, ``solution.xdmf``, ``folder``,
``layout``, ``theta/000003.h5``, ``model``, ``samples``; shell-style patterns match several
(``theta/*``, ``*`` for every write).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable

from beckmann._dolfinx import MPI
from beckmann._mpi import collective, on_root

__all__ = [
    "FAIL_ENV",
    "before_collective_write",
    "described_write",
    "injected_failure",
    "write_on_each",
    "write_on_root",
]

FAIL_ENV = "BECKMANN_FAIL_WRITE"


def injected_failure(what: str, rank: int | None = None) -> None:
    """Raise ``OSError`` when ``BECKMANN_FAIL_WRITE`` asks ``rank`` to fail writing ``what``.

    ``rank`` defaults to this process's rank in ``MPI.COMM_WORLD`` (a sweep group's root is
    rank 0 of its group but not of the world). Not collective.
    """
    spec = os.environ.get(FAIL_ENV, "")
    if not spec:
        return
    rank = MPI.COMM_WORLD.rank if rank is None else rank
    for item in spec.split(","):
        r, _, w = item.partition(":")
        if r.strip() == str(rank) and fnmatch.fnmatchcase(what, w.strip()):
            raise OSError(f"injected failure ({FAIL_ENV}={spec})")


def described_write[T](what: str, fn: Callable[[], T]) -> T:
    """Run the write ``fn`` here; an ``OSError`` becomes ``RuntimeError`` naming ``what``.

    Not collective: for a write that already runs inside :func:`beckmann._mpi.on_root` (whose
    error reaches every rank). Honours ``BECKMANN_FAIL_WRITE``.
    """
    rank = MPI.COMM_WORLD.rank
    try:
        injected_failure(what, rank)
        return fn()
    except OSError as err:
        raise RuntimeError(f"cannot write {what} (rank {rank}): {err}") from err


def write_on_root[T](comm: MPI.Comm, what: str, fn: Callable[[], T]) -> T:
    """Run the write ``fn`` on rank 0 and broadcast its result; collective.

    Raises:
        RuntimeError: On every rank, when the write failed (``ValueError`` stays one).
    """
    if os.environ.get(FAIL_ENV) and comm.size > 1:
        # testing hook: a failure injected on another rank is agreed on before rank 0 writes
        # (the variable is the same on every rank, so every rank takes this branch)
        with collective(comm):
            if comm.rank != 0:
                described_write(what, lambda: None)
    return on_root(comm, lambda: described_write(what, fn))


def write_on_each[T](comm: MPI.Comm, what: str, fn: Callable[[], T]) -> T:
    """Run the rank-local write ``fn`` on every rank, then agree on the outcome; collective.

    ``fn`` must not make collective calls (a failing rank would skip them).

    Raises:
        RuntimeError: On every rank, with the lowest failing rank's message.
    """
    result: T | None = None
    with collective(comm):
        result = described_write(what, fn)
    return result  # type: ignore[return-value]


def before_collective_write(comm: MPI.Comm, what: str) -> None:
    """Agree, before a collective writer starts, that no rank is set up to fail; collective."""
    with collective(comm):
        described_write(what, lambda: None)
