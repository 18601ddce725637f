"""The command line, serially and under mpirun -n 2 (subprocesses; run from the serial session)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import run_cli

pytestmark = pytest.mark.serial

EXACT = [
    "--set", "mesh.n=12", "--set", "solver.degree=2", "--set", "target.kind=expression",
    "--set", "target.expr=1 + 0.5*cos(pi*x)*cos(pi*y)", "--set", "output.times=[0.0, 1.0]",
]


@pytest.mark.parametrize("ranks", [1, 2])
def test_solve_outputs_and_probe(tmp_path, ranks):
    out = tmp_path / "run"
    proc = run_cli("solve", *EXACT, "--out", str(out), ranks=ranks)
    brief = json.loads(proc.stdout.strip().splitlines()[-1])
    assert brief["ranks"] == ranks
    summary = json.loads((out / "summary.json").read_text())
    for key in ("ndofs", "ranks", "degree", "iterations", "beckmann_cost", "mass_source",
                "mass_target", "residual", "hmax", "timings", "version", "config"):
        assert key in summary, key
    assert summary["ndofs"] == 25 * 25
    assert summary["config"]["mesh"]["n"] == 12
    assert summary["beckmann_cost"] == pytest.approx(0.5 * (np.pi**2 / 2) / (4 * np.pi**2) ** 2,
                                                     rel=1e-3)
    # ParaView files, fields named as in the issue
    xdmf = (out / "solution.xdmf").read_text()
    for name in ("source", "target", "potential", "flux"):
        assert re.search(rf'Name="{name}"', xdmf), name
    vel = (out / "velocity.xdmf").read_text()
    assert vel.count('<Attribute Name="velocity"') == 2
    # lean binary output: HDF5 data, no ASCII VTK, no native-degree files unless asked for
    assert 'Format="HDF"' in xdmf and 'Format="XML"' not in xdmf
    assert not (out / "pvd").exists() and not (out / "vtx").exists()
    assert not list(out.rglob("*.vt*")) and not list(out.rglob("*.pvd"))
    assert json.loads((out / "beckmann.json").read_text())["kind"] == "run"
    pts = np.array([[0.25, 0.5], [0.6, 0.1]])
    np.savetxt(tmp_path / "pts.csv", pts, delimiter=",")
    probe = run_cli("probe", str(out), "--points", str(tmp_path / "pts.csv"), "--time", "1.0",
                    "--json-out", str(tmp_path / "p.json"), ranks=ranks)
    res = json.loads(probe.stdout)
    assert json.loads((tmp_path / "p.json").read_text()) == res
    x, y = pts.T
    phi = np.cos(np.pi * x) * np.cos(np.pi * y) / (4 * np.pi**2)
    assert np.allclose(res["potential"], phi, atol=5e-5)
    F = np.array(res["flux"])
    p1 = 1 + 0.5 * np.cos(np.pi * x) * np.cos(np.pi * y)
    assert np.allclose(np.array(res["velocity"]), F / p1[:, None], atol=1e-4)


def test_builtin_example_runs(tmp_path):
    proc = run_cli("solve", "--set", "mesh.n=16", "--out", str(tmp_path / "ex"))
    brief = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = json.loads((tmp_path / "ex" / "summary.json").read_text())
    # solver.rtol = "auto": 1e-3 / 16 > 1e-6, so the cap (poisson.matched_rtol)
    assert summary["rtol"] == 1e-6
    assert brief["beckmann_cost"] > 0 and brief["residual"] < summary["rtol"]


BAD = [
    (["--set", "target.kind=expression", "--set", "target.expr=x - 0.5"],
     r"target density has minimum -0\.5.* at \(0, "),
    (["--set", "target.kind=expression", "--set", "target.expr=sqrt(x - 0.5)"],
     "target density has NaN"),
    (["--set", "source.kind=expression", "--set", "source.expr=0",
      "--set", "source.min_density=0.0"], "source density has non-positive total mass"),
    (["--set", "mesh.kind=file", "--set", "mesh.path=/nonexistent/m.msh"], "does not exist"),
    (["--set", "mesh.nn=3"], "unknown config key mesh.nn"),
    (["--set", "target.kind=expression", "--set", "target.expr=1 + (x"],
     "malformed expression"),
    (["--set", "target.kind=expression", "--set", "target.expr=__import__('os')"],
     "expression"),
    (["--set", "solver.degree=5"], "solver.degree must be 1, 2 or 3"),
]


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize(("args", "match"), BAD)
def test_bad_input_one_line_every_rank(tmp_path, ranks, args, match):
    proc = run_cli("solve", "--set", "mesh.n=4", *args, "--out", str(tmp_path / "r"),
                   ranks=ranks, check=False, timeout=120)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("beckmann:")]
    assert len(lines) == 1, proc.stderr
    assert re.search(match, lines[0]), lines[0]
    assert "Traceback" not in proc.stderr


def test_corrupt_mesh_file(tmp_path):
    bad = tmp_path / "bad.msh"
    bad.write_text("$MeshFormat\ngarbage\n")
    for ranks in (1, 2):
        proc = run_cli("solve", "--set", "mesh.kind=file", "--set", f"mesh.path={bad}",
                       "--out", str(tmp_path / "r"), ranks=ranks, check=False, timeout=120)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        assert "bad.msh" in proc.stderr


def test_probe_errors(tmp_path):
    run_cli("solve", "--set", "mesh.n=4", "--set", "solver.degree=1", "--out",
            str(tmp_path / "r"))
    np.save(tmp_path / "out.npy", np.array([[0.5, 0.5], [1.5, 0.5]]))
    for ranks in (1, 2):
        proc = run_cli("probe", str(tmp_path / "r"), "--points", str(tmp_path / "out.npy"),
                       ranks=ranks, check=False, timeout=120)
        assert proc.returncode == 2
        assert "outside the domain" in proc.stderr and "(1.5, 0.5)" in proc.stderr
    np.save(tmp_path / "bad.npy", np.zeros((3, 3)))
    proc = run_cli("probe", str(tmp_path / "r"), "--points", str(tmp_path / "bad.npy"),
                   check=False)
    assert proc.returncode == 2 and "shape (N, 2)" in proc.stderr
    proc = run_cli("probe", str(tmp_path / "nope"), "--points", str(tmp_path / "out.npy"),
                   check=False)
    assert proc.returncode == 2 and "not a beckmann run folder" in proc.stderr


def test_config_file_and_unknown_section(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[mesh]\nn = 6\n[solver]\ndegree = 1\n[bogus]\nx = 1\n')
    proc = run_cli("solve", str(cfg), "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "unknown config section [bogus]" in proc.stderr
    cfg.write_text('[mesh]\nn = 6\n[solver]\ndegree = 1\n')
    run_cli("solve", str(cfg), "--out", str(tmp_path / "r"))
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["degree"] == 1 and summary["config"]["mesh"]["n"] == 6
    # the resolved config written to the run folder re-runs to the same answer
    run_cli("solve", str(tmp_path / "r" / "config.toml"), "--out", str(tmp_path / "r2"))
    again = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert again["beckmann_cost"] == pytest.approx(summary["beckmann_cost"], rel=1e-9)
