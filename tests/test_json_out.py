"""``--json-out`` of every command: checked before any work, never a beckmann folder's own file.

A report may replace an earlier report (a re-run), but never ``summary.json`` or another file of
a run folder (that would corrupt the run for every later reader), a model or a file that is not
JSON; and a folder that cannot be written fails at once, not after the computation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

pytestmark = pytest.mark.serial


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("jsonout") / "run"
    run_cli("solve", "--set", "mesh.n=6", "--set", "solver.degree=1", "--out", str(out))
    return out


def command(name: str, run, tmp) -> list[str]:
    pts = tmp / "pts.npy"
    np.save(pts, np.array([[0.3, 0.4], [0.7, 0.2]]))
    return {
        "probe": ["probe", str(run), "--points", str(pts)],
        "holder": ["holder", str(run), "--field", "potential"],
        "paths": ["paths", str(run), "--grid", "3"],
        "sample": ["sample", str(run), "--n", "20", "--out", str(tmp / "s.npy")],
        "fit": ["fit", str(run), "--out", str(tmp / "net"), "--steps", "2"],
    }[name]


def one_error(proc) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("beckmann")]
    assert lines and all(ln == lines[0] for ln in lines), proc.stderr
    return lines[0]


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("name", ["probe", "holder", "paths", "sample", "fit"])
def test_json_out_never_replaces_a_run_file(run_dir, tmp_path, name, ranks):
    summary = run_dir / "summary.json"
    before = summary.read_bytes()
    proc = run_cli(*command(name, run_dir, tmp_path), "--json-out", str(summary),
                   ranks=ranks, check=False, timeout=120)
    line = one_error(proc)
    assert "--json-out" in line and "summary.json" in line and "run folder" in line, line
    assert summary.read_bytes() == before
    assert not (tmp_path / "s.npy").exists() and not (tmp_path / "net.json").exists()


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("name", ["probe", "sample"])
def test_json_out_below_a_file_fails_before_the_work(run_dir, tmp_path, name, ranks):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    proc = run_cli(*command(name, run_dir, tmp_path), "--json-out", str(blocker / "r.json"),
                   ranks=ranks, check=False)
    line = one_error(proc)
    assert "--json-out" in line and "file.txt" in line, line
    assert not (tmp_path / "s.npy").exists()  # refused before sampling


def test_json_out_creates_missing_folders(run_dir, tmp_path):
    report = tmp_path / "new" / "dir" / "r.json"
    run_cli(*command("probe", run_dir, tmp_path), "--json-out", str(report))
    assert np.asarray(json.loads(report.read_text())["flux"]).shape == (2, 2)


def test_json_out_replaces_a_report_but_not_other_files(run_dir, tmp_path):
    report = tmp_path / "r.json"
    for _ in range(2):  # a re-run replaces its own earlier report
        run_cli(*command("probe", run_dir, tmp_path), "--json-out", str(report))
        data = json.loads(report.read_text())
        assert np.asarray(data["potential"]).shape == (2,)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not JSON\n")
    proc = run_cli(*command("probe", run_dir, tmp_path), "--json-out", str(notes), check=False)
    assert "not a JSON report" in one_error(proc)
    assert notes.read_text() == "my notes, not JSON\n"
