"""Ctrl-C under MPI: the ranks stop together, or the watchdog ends a rank that does not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import BIN, MPIRUN, ROOT

pytestmark = pytest.mark.serial

# a "rank" that arms the watchdog, says so, and then reacts to SIGINT as told
CHILD = """\
import sys, time
from beckmann._interrupt import watch_interrupts
proc = watch_interrupts(rank=3, deadline=float(sys.argv[2]))
print(proc.pid, flush=True)
mode = sys.argv[1]
if mode == "exit":
    sys.exit(0)
while True:
    try:
        time.sleep(100)
    except KeyboardInterrupt:
        if mode == "stop":
            sys.exit(130)
        # mode "stuck": the interrupt is lost, as in a GC callback or a collective clean-up
"""


def start(mode: str, deadline: float = 1.0) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(deadline)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def gone(pid: int, within: float = 5.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_rank_that_does_not_stop_is_killed_after_the_deadline():
    proc, watchdog = start("stuck", deadline=1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert 1.0 <= time.monotonic() - t0 < 10.0
    assert "beckmann: error: interrupted; rank 3 did not stop within 1 s, ending the job" in err
    assert gone(watchdog)


def test_a_rank_that_stops_or_exits_leaves_no_watchdog_and_no_message():
    proc, watchdog = start("stop", deadline=1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "did not stop" not in err
    assert gone(watchdog)
    proc, watchdog = start("exit", deadline=1.0)
    assert proc.wait(timeout=30) == 0
    assert gone(watchdog)


def test_ctrl_c_ends_an_mpi_sweep(tmp_path):
    """SIGINT to mpirun while the θ are solved: every rank ends, the command fails at once."""
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('[mesh]\nn = 64\n[target]\nkind = "expression"\n'
                   'expr = "0.2 + exp(-((x - theta)**2 + (y - 0.5)**2) / 0.02)"\n'
                   "[sweep.parameters]\ntheta = { linspace = [0.3, 0.7, 400] }\n")
    out = tmp_path / "st"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BECKMANN_NO_PROGRESS": "1"}
    proc = subprocess.Popen([MPIRUN, "-n", "2", str(BIN / "beckmann"), "sweep", str(cfg),
                             "--out", str(out), "-q"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    while time.monotonic() < end and proc.poll() is None:
        parts = list(tmp_path.glob(".st.part*/theta/*")) + list(out.glob("theta/*"))
        if len(parts) >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)  # a hang fails here
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 30.0
    assert "beckmann: error:" in err and "Traceback" not in err, err
