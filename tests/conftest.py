"""Shared fixtures: MPI-safe temporary folders, CLI runners, rank-aware output."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import beckmann._dolfinx  # noqa: F401 - loads MPI the wheel's way before mpi4py is used

# isort: split
from mpi4py import MPI

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MPIRUN = str(BIN / "mpirun") if (BIN / "mpirun").exists() else "mpirun"


_RANK_LOG: Path | None = None


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """Only rank 0 reports; other ranks write to a log that is shown if they fail."""
    global _RANK_LOG
    rank = MPI.COMM_WORLD.rank
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if rank > 0 and reporter is not None:
        from _pytest.config import create_terminal_writer

        _RANK_LOG = Path(tempfile.gettempdir()) / f"beckmann-pytest-rank{rank}-{os.getpid()}.log"
        config._beckmann_log = open(_RANK_LOG, "w")  # noqa: SIM115 - lives for the session
        reporter._tw = create_terminal_writer(config, config._beckmann_log)


def pytest_sessionfinish(session, exitstatus):
    session.config._beckmann_status = exitstatus


def pytest_unconfigure(config):
    status = getattr(config, "_beckmann_status", 0)
    if _RANK_LOG is not None:
        config._beckmann_log.close()
    if _RANK_LOG is not None and status not in (0, 5):
        sys.stderr.write(f"--- rank {MPI.COMM_WORLD.rank} report ---\n{_RANK_LOG.read_text()}")


def pytest_collection_modifyitems(config, items):
    if MPI.COMM_WORLD.size > 1:
        skip = pytest.mark.skip(reason="serial-only test (runs in the serial session)")
        for item in items:
            if "serial" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def comm():
    return MPI.COMM_WORLD


@contextlib.contextmanager
def shared_folder(prefix: str = "beckmann-test-"):
    """A temporary folder shared by all ranks: rank 0 creates it, broadcasts it, barrier."""
    comm = MPI.COMM_WORLD
    path = tempfile.mkdtemp(prefix=prefix) if comm.rank == 0 else None
    path = comm.bcast(path, root=0)
    comm.barrier()
    yield Path(path)
    comm.barrier()  # not reached when the body raises: no barrier a failed rank would miss
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def mpi_tmp_path():
    """A temporary folder shared by all ranks (see :func:`shared_folder`), one per test."""
    with shared_folder() as path:
        yield path


BUMP = "0.2 + exp(-((x - theta)**2 + (y - 0.5)**2) / 0.05)"


def sweep_toml(thetas, *, target: str = BUMP, extra: str = "") -> str:
    """A small P1 MUMPS sweep of ``target`` over θ in ``thetas`` (n = 6, no continuity report)."""
    return f"""
[mesh]
n = 6
[solver]
degree = 1
method = "mumps"
[target]
kind = "expression"
expr = "{target}"
[sweep.parameters]
theta = {list(thetas)}
[sweep]
continuity = false
{extra}"""


def run_cli(*args: str, ranks: int = 1, check: bool = True, timeout: float = 300, cwd=None):
    """Run ``beckmann ARGS`` in a subprocess (under ``mpirun -n ranks`` when ranks > 1)."""
    cmd = [str(BIN / "beckmann"), *args]
    if ranks > 1:
        cmd = [MPIRUN, "-n", str(ranks), *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd or ROOT
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="module")
def run8(tmp_path_factory):
    """A run folder of the built-in example at n = 8, solved once per test module (serial)."""
    out = tmp_path_factory.mktemp("run8") / "run"
    run_cli("solve", "--set", "mesh.n=8", "--out", str(out))
    return out


@pytest.fixture
def cli():
    return run_cli
