"""Hostile ``sample`` arguments (issue 12): one-line errors naming the option, on every rank."""

from __future__ import annotations

import pytest
from conftest import run_cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "run"
    run_cli("solve", "--set", "mesh.n=8", "--out", str(folder), "-q")
    return folder


@pytest.mark.serial
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "10", "--save-every", "0"], "--save-every must be a positive integer"),
        (["--n", "10", "--seed", "-1"], "--seed must be a non-negative integer"),
        (["--n", "1000000000000"], "lower --n"),
        (["--n", "1e12"], "lower --n"),
        (["--n", "-5"], "--n must be a positive integer"),
        (["--n", "10", "--steps", "0"], "--steps must be a positive integer"),
        (["--n", "10", "--steps", "1e8"], "--steps 100000000 is more than the 100000"),
        (["--n", "10", "--steps", "100001"], "lower --steps"),
        (["--n", "10", "--reference-points", "1"], "--reference-points"),
        (["--n", "10", "--mmd-bandwidth", "-1"], "--mmd-bandwidth must be positive"),
        (["--n", "10", "--rtol", "nan"], "--rtol must be positive"),
        ([], "--n is required"),
    ],
)
def test_hostile_arguments(run, tmp_path, args, message):
    proc = run_cli("sample", str(run), *args, "--out", str(tmp_path / "x.npy"), check=False,
                   ranks=2)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert sum("error:" in ln for ln in lines) == 1, proc.stderr  # one line, from one rank
    assert not (tmp_path / "x.npy").exists()
