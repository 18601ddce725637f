"""A write failing on rank 0 or on rank 1 ends ``sweep``, ``sample`` and ``fit`` under ``mpirun``.

Each case injects the failure with ``BECKMANN_FAIL_WRITE`` (:mod:`beckmann.store.writes`) into
``mpirun -n 2 beckmann ...`` and requires: a non-zero exit within seconds (the subprocess has a
timeout, so a hang fails the test), exactly one ``beckmann: error:`` line naming the write and
the rank (a rank that failed alone would add a second line from the 10 s watchdog), and no
half-written output. ``solve`` has the same cases in ``test_run_folder.py``. Before the storage
layer, ``run_sweep`` with one group hung for ever when rank 0's write of a θ failed (defect 5).
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import run_cli, sweep_toml

from beckmann.store.writes import FAIL_ENV
from beckmann.sweep.writer import LOCK

pytestmark = pytest.mark.serial

SWEEP = sweep_toml([0.3, 0.5, 0.7, 0.4], extra="block = 1\n")


def error_lines(proc) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("beckmann:")]


def fails_at_once(monkeypatch, rank: str, what: str, *args: str):
    """Run ``mpirun -n 2 beckmann ARGS`` with the failure injected; check the one line."""
    monkeypatch.setenv(FAIL_ENV, f"{rank}:{what}")
    t0 = time.monotonic()
    proc = run_cli(*args, ranks=2, check=False, timeout=90)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    (line,) = error_lines(proc)
    assert line.startswith("beckmann: error: cannot write"), line
    assert f"{what} (rank {rank})" in line and "injected failure" in line, line
    assert elapsed < 45, elapsed  # the watchdog path would print a second line anyway
    return proc


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("wf") / "run"
    run_cli("solve", "--set", "mesh.n=6", "--set", "solver.degree=1", "--set",
            "output.times=[0.5]", "--out", str(run), "-q")  # fmt: skip
    return run


@pytest.mark.parametrize(
    ("rank", "what", "group_size", "resume"),
    [
        ("0", "theta/000001.h5", "0", True),  # defect 5: the old code hung here for ever
        ("1", "theta/000001.h5", "0", False),
        ("1", "theta/000002.h5", "1", True),  # rank 1 is its group's root, writes θ #2, #3
        ("0", "layout", "0", False),
        ("1", "layout", "0", False),
        ("0", "summary.json", "0", False),
    ],
)
def test_sweep(tmp_path, monkeypatch, rank, what, group_size, resume):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(SWEEP)
    out = tmp_path / "s"
    fails_at_once(monkeypatch, rank, what, "sweep", str(cfg), "--out", str(out), "--group-size",
                  group_size, "-q")  # fmt: skip
    # the store stays resumable: the lock is released, the entries written are complete
    assert (out / "beckmann.json").is_file() and not (out / LOCK).exists()
    assert not list((out / "theta").glob("*.part"))
    if not resume:
        return
    monkeypatch.delenv(FAIL_ENV)
    proc = run_cli("sweep", str(cfg), "--out", str(out), "--resume", "-q", ranks=2)
    assert proc.returncode == 0 and "sweep --resume: solving" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [r["index"] for r in summary["rows"]] == [0, 1, 2, 3]


@pytest.mark.parametrize("rank", ["0", "1"])
def test_sample(run_dir, tmp_path, monkeypatch, rank):
    out = tmp_path / "x.npy"
    fails_at_once(monkeypatch, rank, "samples", "sample", str(run_dir), "--n", "200", "--steps",
                  "4", "--save-every", "2", "--out", str(out))  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # neither a file nor a temporary one


@pytest.mark.parametrize("rank", ["0", "1"])
def test_fit(run_dir, tmp_path, monkeypatch, rank):
    pytest.importorskip("jax", reason="fit needs JAX (pip install 'beckmann[requ]')")
    out = tmp_path / "m"
    fails_at_once(monkeypatch, rank, "model", "fit", str(run_dir), "--field", "potential",
                  "--steps", "5", "--points", "64", "--test-points", "64", "--width", "4",
                  "--out", str(out))  # fmt: skip
    assert list(tmp_path.iterdir()) == []
