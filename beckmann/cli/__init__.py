"""Command line: argument parsing and error reporting only; the numerics live elsewhere.

One small module per command (:data:`COMMANDS`), each with ``register(subparsers)`` that adds its
subparser and sets ``func``, a handler ``handler(args, comm) -> int`` that turns the arguments
into typed calls of the library.

Errors: a ``ValueError`` (bad input) or ``RuntimeError`` (a failing file or solver) raised
collectively ends every rank with one line on rank 0 and exit code 2 (1 for runtime failures).
An exception raised on some ranks only would leave the others waiting in a collective call; the
handler then aborts the whole MPI job so ``mpirun`` never hangs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from typing import Any

__all__ = ["COMMANDS", "build_parser", "main"]

#: The interrupt watchdog of an MPI run (kept referenced for the life of the command).
_WATCHDOG: list[Any] = []

#: The subcommands, in the order ``beckmann --help`` lists them (modules of this package).
COMMANDS = (
    "solve",
    "probe",
    "sweep",
    "holder",
    "study",
    "sample",
    "paths",
    "fit",
    "export",
    "plot",
    "config",
)


#: Environment variables in which MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm) pass the rank.
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


def launcher_rank() -> int:
    """This process's MPI rank, known before MPI is initialised (0 when not launched by MPI).

    Argument parsing runs before DOLFINx is imported (``--help`` stays fast), so the rank comes
    from the launcher's environment; if MPI is already loaded, from ``COMM_WORLD``.
    """
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized():
        return int(mpi.COMM_WORLD.rank)
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser that prints usage, help and errors on rank 0 only.

    Every rank parses the same command line and exits with the same code; without this an
    ``mpirun -n 4`` usage error printed four usage blocks and four ``beckmann: error:`` lines.
    """

    def _print_message(self, message: str, file: Any = None) -> None:
        if launcher_rank() == 0:
            super()._print_message(message, file)


def build_parser() -> argparse.ArgumentParser:
    """The ``beckmann`` argument parser, with every available subcommand."""
    from beckmann._version import __version__

    parser = _Parser(
        prog="beckmann",
        description="Beckmann optimal transport with squared flux: solve, probe and analyse.",
    )
    parser.add_argument("--version", action="version", version=f"beckmann {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name in COMMANDS:
        importlib.import_module(f"beckmann.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``beckmann`` command."""
    from beckmann._resources import reuse_freed_memory

    reuse_freed_memory()  # before the first large array
    parser = build_parser()
    args = parser.parse_args(argv)
    from beckmann._dolfinx import MPI

    comm = MPI.COMM_WORLD
    if comm.size > 1:  # Ctrl-C ends the job however the ranks were interrupted
        from beckmann._interrupt import watch_interrupts

        _WATCHDOG.append(watch_interrupts(comm.rank))
    # _fail's own communicator: its Ibarrier can match only another rank's _fail, never an
    # Ibarrier the command itself is waiting in (requ's idle broadcast is one)
    watch = comm.Dup() if comm.size > 1 else comm
    try:
        _require_utf8(sys.argv[1:] if argv is None else argv)
        code = int(args.func(args, comm) or 0)
    except (ValueError, RuntimeError, OSError, KeyboardInterrupt) as err:
        return _fail(err, comm, args.verbose, watch)
    except Exception as err:  # a bug: never hang the other ranks
        if comm.rank == 0 or comm.size == 1:
            traceback.print_exc()
        if comm.size > 1:
            sys.stderr.write(f"beckmann: internal error on rank {comm.rank}: {err!r}\n")
            sys.stderr.flush()
            time.sleep(0.5)  # let the launcher forward the line before the job is killed
            comm.Abort(3)
        return 3
    return code


def _require_utf8(argv: list[str]) -> None:
    """Refuse arguments with bytes that are not UTF-8 (Python keeps them as surrogates).

    Paths and values end up in JSON, TOML and HDF5 attributes, which hold UTF-8 only; without
    this a run failed at its first write with a codec error.
    """
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raw = arg.encode("utf-8", "surrogateescape")
            raise ValueError(
                f"the argument {raw!r} is not valid UTF-8; beckmann takes UTF-8 paths and values"
            ) from None


#: Seconds a failing rank waits for the others to fail too before it aborts the job.
FAIL_DEADLINE = 10.0


def _fail(err: BaseException, comm: Any, verbose: bool, watch: Any = None) -> int:
    """Print the one-line error (rank 0) and return the exit code; abort if this rank is alone.

    Every rank that fails enters a barrier on ``watch`` (a duplicate of ``comm`` that nothing
    else uses). When the error was raised collectively, all ranks arrive and rank 0 prints one
    line. A rank that fails alone would leave the others blocked in a collective call: after
    :data:`FAIL_DEADLINE` seconds it prints its message with its rank and aborts the MPI job.
    """
    watch = comm if watch is None else watch
    code = 2 if isinstance(err, ValueError) else 1
    if isinstance(err, KeyboardInterrupt):
        code = 130
    if verbose and comm.rank == 0:
        traceback.print_exception(err)
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    if comm.size > 1:
        # Collectively raised errors reach every rank; if this rank alone failed the others may
        # be blocked in a collective call, so we check agreement and abort otherwise.
        from beckmann._dolfinx import MPI

        req = watch.Ibarrier()
        deadline = MPI.Wtime() + FAIL_DEADLINE
        while not req.Test():
            time.sleep(0.01)
            if MPI.Wtime() > deadline:
                sys.stderr.write(f"beckmann: error: {msg} (rank {comm.rank})\n")
                sys.stderr.flush()
                time.sleep(0.5)  # let the launcher forward the line before the job is killed
                comm.Abort(code)
    if comm.rank == 0:
        sys.stderr.write(f"beckmann: error: {msg}\n")
        sys.stderr.flush()
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
