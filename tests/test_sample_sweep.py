"""``sample STORE --param θ``: the finite-element field of a sweep member drives the samples.

Reference: ``beckmann solve`` of the same config at that θ, sampled with the same seed (same
mesh and densities, so the same samples up to the solver tolerance); between grid values the
interpolated potential against a solve at θ (interpolation error only). Serial: spawns the CLI.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

CONFIG = """
[mesh]
n = 12
[solver]
method = "mumps"
rtol = 1e-12
[target]
kind = "expression"
expr = "0.3 + exp(-((x - theta)**2 + (y - 0.5)**2) / 0.05)"
[sweep]
continuity = false
[sweep.parameters]
theta = { linspace = [0.3, 0.7, 5] }
"""


@pytest.mark.serial
def test_sample_sweep_member(tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(CONFIG)
    store = tmp_path / "store"
    run_cli("sweep", str(cfg), "--out", str(store), "-q")
    single = CONFIG.split("[sweep]")[0]
    common = ["--n", "2000", "--seed", "4", "--method", "rk4", "--steps", "20"]

    def solved(theta):
        c = tmp_path / f"single{theta}.toml"
        c.write_text(single.replace("theta", str(theta)))
        run = tmp_path / f"run{theta}"
        run_cli("solve", str(c), "--out", str(run), "-q")
        out = tmp_path / f"ref{theta}.npy"
        run_cli("sample", str(run), *common, "--out", str(out))
        return np.load(out)

    member = tmp_path / "m.npy"
    run_cli("sample", str(store), "--param", "theta=0.4", *common, "--out", str(member))
    np.testing.assert_allclose(np.load(member), solved(0.4), atol=1e-7)
    # between grid values: --interpolate, the quadratic interpolant of the stored potentials
    proc = run_cli("sample", str(store), "--param", "theta=0.45", *common,
                   "--out", str(tmp_path / "x.npy"), check=False)  # fmt: skip
    assert proc.returncode == 2 and "--interpolate" in proc.stderr
    off = tmp_path / "off.npy"
    run_cli("sample", str(store), "--param", "theta=0.45", "--interpolate", *common,
            "--out", str(off))  # fmt: skip
    ref = solved(0.45)
    err = np.linalg.norm(np.load(off) - ref, axis=1)
    moved = np.linalg.norm(ref - np.load(member), axis=1)
    assert np.median(err) < 0.05 * np.median(moved), (np.median(err), np.median(moved))
    # outside the grid: refused, also with --extrapolate (no field to extrapolate from)
    for extra in ([], ["--extrapolate"]):
        proc = run_cli("sample", str(store), "--param", "theta=0.8", "--interpolate", *extra,
                       *common, "--out", str(tmp_path / "y.npy"), check=False)  # fmt: skip
        assert proc.returncode == 2 and "outside the grid" in proc.stderr
    proc = run_cli("sample", str(store), *common, "--out", str(tmp_path / "z.npy"), check=False)
    assert proc.returncode == 2 and "theta=VALUE" in proc.stderr
