"""Run folders are safe: one kind, replaced whole, checked first, atomic, failures reach every rank.

The defects of issue 10 that concern ``solve`` (1, 2, 4, 5) each have a test here; each failed on
the code before the storage layer (the old ``solve`` wrote into any folder, kept stale files,
found a bad ``--out`` only after the solve and let rank-0 write failures go unreported).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import BIN, ROOT, run_cli

from beckmann.store import folder as store_folder
from beckmann.store.writes import FAIL_ENV

pytestmark = pytest.mark.serial

SMALL = ["--set", "mesh.n=6", "--set", "solver.degree=1", "--set", "output.times=[0.5]"]


def error_lines(proc) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("beckmann:")]


def no_leftovers(path) -> bool:
    return not list(path.parent.glob(f".{path.name}.part-*"))


def test_rerun_replaces_the_whole_folder(tmp_path):
    """Defect 1: a re-run without a checkpoint must not leave the old checkpoint/ and vtx/."""
    out = tmp_path / "run"
    run_cli("solve", *SMALL, "--set", "output.vtx=true", "--out", str(out))
    assert (out / "checkpoint").is_dir() and (out / "vtx").is_dir()
    again = [*SMALL, "--set", "output.checkpoint=false", "--set", "mesh.n=5", "--out", str(out)]
    proc = run_cli("solve", *again, check=False)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert "already holds a beckmann run" in line and "--overwrite" in line
    run_cli("solve", *again, "--overwrite")
    assert not (out / "checkpoint").exists() and not (out / "vtx").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["mesh"]["n"] == 5 and summary["ndofs"] == 36
    assert no_leftovers(out)
    # a reader now says so instead of serving the old solution
    np.save(tmp_path / "pts.npy", np.array([[0.5, 0.5]]))
    proc = run_cli("probe", str(out), "--points", str(tmp_path / "pts.npy"), check=False)
    assert proc.returncode == 2 and "has no checkpoint" in proc.stderr


@pytest.mark.parametrize("ranks", [1, 2])
def test_refuses_other_kinds_and_foreign_folders(tmp_path, ranks):
    """Defect 2: ``solve --out <a sweep store>`` must fail and leave the store alone."""
    sweep = tmp_path / "store"
    sweep.mkdir()
    store_folder.write_manifest(sweep, "sweep", {"x": 1})
    (sweep / "summary.json").write_text('{"rows": []}\n')
    for extra in ([], ["--overwrite"]):
        proc = run_cli("solve", *SMALL, "--out", str(sweep), *extra, ranks=ranks, check=False)
        assert proc.returncode == 2
        (line,) = error_lines(proc)
        assert "is a beckmann sweep folder, not a run folder" in line
    assert (sweep / "summary.json").read_text() == '{"rows": []}\n'
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    proc = run_cli("solve", *SMALL, "--out", str(foreign), "--overwrite", ranks=ranks,
                   check=False)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert "not empty and not a beckmann folder" in line
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    run_cli("solve", *SMALL, "--out", str(empty), ranks=ranks)  # an empty folder is fine
    assert (empty / "beckmann.json").is_file()


@pytest.mark.parametrize("ranks", [1, 2])
def test_bad_out_fails_before_the_solve(tmp_path, ranks):
    """Defect 4: a bad ``--out`` is found before the (here: hours long) solve starts."""
    afile = tmp_path / "file"
    afile.write_text("x")
    huge = ["--set", "mesh.n=4000", "--set", "solver.degree=3"]  # 144M dofs: never finishes
    for out, match in ((afile / "run", "is a file"), (afile, "exists and is not a folder")):
        t0 = time.monotonic()
        proc = run_cli("solve", *huge, "--out", str(out), ranks=ranks, check=False, timeout=120)
        assert time.monotonic() - t0 < 60
        assert proc.returncode == 2
        (line,) = error_lines(proc)
        assert match in line, line
    assert afile.read_text() == "x"


FAILURES = [
    ("0", "folder"),
    ("0", "solution.xdmf"),
    ("1", "solution.xdmf"),
    ("0", "checkpoint"),
    ("1", "checkpoint"),
    ("0", "summary.json"),
]


@pytest.mark.parametrize(("rank", "what"), FAILURES)
def test_a_write_failure_on_one_rank_ends_every_rank(tmp_path, monkeypatch, rank, what):
    """Defect 5: a write failing on rank 0 or on rank 1 ends both ranks, with one line, at once.

    And the destination is left as it was: the previous complete run stays.
    """
    out = tmp_path / "run"
    run_cli("solve", *SMALL, "--out", str(out))
    before = (out / "summary.json").read_text()
    monkeypatch.setenv(FAIL_ENV, f"{rank}:{what}")
    t0 = time.monotonic()
    proc = run_cli("solve", *SMALL, "--set", "mesh.n=7", "--out", str(out), "--overwrite",
                   ranks=2, check=False, timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    (line,) = error_lines(proc)
    assert f"cannot write {what} (rank {rank})" in line and "injected failure" in line, line
    assert elapsed < 60  # the old code waited for a watchdog, or forever
    assert (out / "summary.json").read_text() == before
    assert no_leftovers(out)


def test_kill_9_leaves_the_old_folder_or_nothing(tmp_path):
    """``kill -9`` during a re-run: the old complete run stays under the name."""
    out = tmp_path / "run"
    run_cli("solve", *SMALL, "--out", str(out))
    before = (out / "summary.json").read_text()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(BIN / "beckmann"), "solve", "--set", "mesh.n=160", "--set", "solver.degree=2",
           "--out", str(out), "--overwrite"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            parts = list(tmp_path.glob(".run.part-*"))
            if parts and (parts[0] / "solution.h5").exists():  # well into writing
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (out / "summary.json").read_text() == before
    assert json.loads((out / "beckmann.json").read_text())["kind"] == "run"
    run_cli("solve", *SMALL, "--out", str(out), "--overwrite")  # and the next writer cleans up
    assert no_leftovers(out)


def test_output_files_rules(tmp_path):
    """``sample``/``fit`` outputs: never a folder's own file or a foreign file; --overwrite."""
    import numpy as np

    from beckmann._dolfinx import MPI
    from beckmann.store.files import check_outputs, publish_arrays

    comm = MPI.COMM_SELF
    run = tmp_path / "run"
    run.mkdir()
    store_folder.write_manifest(run, "run", {"x": 1})
    (run / "checkpoint").mkdir()
    for bad in (run / "summary.json", run / "beckmann.json", run / "checkpoint" / "x.npy"):
        with pytest.raises(ValueError, match="would overwrite a file of the beckmann"):
            check_outputs(comm, "samples", [bad], overwrite=True)
    check_outputs(comm, "samples", [run / "samples.npy"])  # beside the run: fine
    with pytest.raises(ValueError, match="is a folder"):
        check_outputs(comm, "samples", [run / "checkpoint"])
    with pytest.raises(ValueError, match="is a file"):
        check_outputs(comm, "samples", [tmp_path / "run" / "beckmann.json" / "x.npy"])
    out = tmp_path / "x.npy"
    publish_arrays(comm, "samples", lambda: {out: np.ones((3, 2)), tmp_path / "t.npy": [1.0]})
    assert np.load(out).shape == (3, 2) and not list(tmp_path.glob(".*part*"))
    with pytest.raises(ValueError, match="exists; pass --overwrite"):
        check_outputs(comm, "samples", [out])
    check_outputs(comm, "samples", [out], overwrite=True)
    np.save(tmp_path / "labels.npy", np.arange(3))  # not samples: never replaced
    (tmp_path / "m.json").write_text('{"format": "something else"}')
    for kind, path in (("samples", tmp_path / "labels.npy"), ("model", tmp_path / "m.json")):
        with pytest.raises(ValueError, match=f"exists and is not beckmann {kind}"):
            check_outputs(comm, kind, [path], overwrite=True)


def test_output_files_failure_leaves_the_old_file(tmp_path, monkeypatch):
    import numpy as np

    from beckmann._dolfinx import MPI
    from beckmann.store.files import publish_arrays

    out = tmp_path / "x.npy"
    np.save(out, np.zeros(2))
    monkeypatch.setenv(FAIL_ENV, "0:samples")
    with pytest.raises(RuntimeError, match=r"cannot write samples \(rank 0\): injected"):
        publish_arrays(MPI.COMM_SELF, "samples", lambda: {out: np.ones(2)})
    assert np.load(out).tolist() == [0.0, 0.0] and [p.name for p in tmp_path.iterdir()] == ["x.npy"]

    def boom(p):
        raise OSError("disk full")

    from beckmann.store.files import publish_files

    monkeypatch.delenv(FAIL_ENV)
    with pytest.raises(RuntimeError, match="disk full"):
        publish_files(MPI.COMM_SELF, "samples", {out: lambda p: np.save(p, np.ones(2)),
                                                   tmp_path / "y.npy": boom})
    assert np.load(out).tolist() == [0.0, 0.0] and [p.name for p in tmp_path.iterdir()] == ["x.npy"]
