"""The sweep store is safe: entries verified on ``--resume``, one writer at a time, one kind.

Defect 3 of issue 10 (``--resume`` accepted a ``theta/*.h5`` that was a copy of another entry,
and ``probe --param`` then served the wrong fields) is
:func:`test_copied_entry_is_caught_by_probe_and_resume`: on the old code ``probe`` answered with
θ #2's fields for θ #0 and ``--resume`` solved nothing. The API tests run serially and under
``mpirun -n 2``; the ones that spawn ``beckmann`` are serial-only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import numpy as np
import pytest
from conftest import run_cli, sweep_toml

from beckmann import config, pipeline, sweep
from beckmann._dolfinx import MPI
from beckmann.store import folder as store_folder
from beckmann.store.lock import (
    acquire_lock,
    lock_owner_alive,
    process_start_time,
    release_lock,
)
from beckmann.sweep.writer import LOCK

THETAS = [0.3, 0.4, 0.5, 0.6, 0.7]
TARGET = "0.2 + exp(-((x - theta)**2 + (y - 0.5)**2) / 0.05)"

CONFIG = sweep_toml(THETAS[:3], target=TARGET)


def small_cfg(thetas=THETAS) -> dict:
    layer = {
        "mesh": {"kind": "unit_square", "n": 6},
        "solver": {"degree": 1, "method": "mumps"},
        "target": {"kind": "expression", "expr": TARGET},
        "sweep": {"parameters": {"theta": list(thetas)}, "continuity": False},
    }
    return config.merge(config.default_config(), layer, extra_sections=("sweep",))


def error_lines(proc) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("beckmann:")]


def _flip_bytes(path, dataset: str) -> None:
    """Overwrite 16 bytes in the middle of ``dataset``'s first chunk (not its metadata)."""
    import h5py

    with h5py.File(path, "r") as h5:
        ds = h5[dataset]
        info = ds.id.get_chunk_info(0)
        offset, size = info.byte_offset, info.size
    with open(path, "r+b") as f:
        f.seek(offset + size // 2)
        f.write(b"\x7f" * 16)


def test_resume_verifies_every_entry(mpi_tmp_path, comm):
    """A copied, truncated, corrupt and foreign-config entry are each solved again, and said so."""
    import h5py

    out = mpi_tmp_path / "s"
    cfg = small_cfg()
    sweep.run_sweep(cfg, comm, out=out)
    store = sweep.SweepStore(out, comm)
    before = [store.read(i) for i in range(len(THETAS))]
    assert not np.allclose(before[0], before[2])
    tdir = out / "theta"
    comm.barrier()  # every rank has read before rank 0 damages the files
    if comm.rank == 0:
        shutil.copyfile(tdir / "000002.h5", tdir / "000000.h5")  # defect 3
        size = (tdir / "000001.h5").stat().st_size
        os.truncate(tdir / "000001.h5", size // 2)
        _flip_bytes(tdir / "000003.h5", "potential")
        with h5py.File(tdir / "000004.h5", "a") as h5:
            h5.attrs["config_hash"] = "0123456789abcdef"
    comm.barrier()
    with pytest.raises(RuntimeError, match=r"000000.h5 is not θ #0 .*holds θ #2"):
        store.read(0)  # a reader is not fooled either
    summary = sweep.run_sweep(cfg, comm, out=out, resume=True)
    reasons = {r["index"]: r["reason"] for r in summary["rejected"]}
    assert sorted(reasons) == [0, 1, 3, 4], reasons
    assert "holds θ #2" in reasons[0] and "copy of another entry" in reasons[0]
    assert "truncated or corrupt" in reasons[1]
    assert "truncated or corrupt" in reasons[3]
    assert "another config" in reasons[4]
    assert summary["solved"] == 4 and summary["reused"] == 1
    after = sweep.SweepStore(out, comm)
    for i in range(len(THETAS)):
        assert np.allclose(after.read(i), before[i], rtol=1e-12, atol=1e-14), i
    # and a sound store resumes without solving anything
    again = sweep.run_sweep(cfg, comm, out=out, resume=True)
    assert again["solved"] == 0 and again["rejected"] == []
    comm.barrier()  # rank 0 releases the lock as run_sweep returns; the others may return first
    assert not (out / LOCK).exists()


@pytest.mark.serial
def test_copied_entry_is_caught_by_probe_and_resume(tmp_path):
    """Defect 3 from the command line: ``probe --param`` refuses, ``--resume`` names and fixes."""
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "s"
    sweep.run_sweep(config.resolve(cfg, extra_sections=("sweep",)), MPI.COMM_SELF, out=out)
    pts = np.array([[0.31, 0.52], [0.77, 0.23]])
    np.save(tmp_path / "pts.npy", pts)

    def probe(theta):
        store = sweep.SweepStore(out, MPI.COMM_SELF)
        return np.asarray(sweep.probe(store, {"theta": theta}, pts)["potential"])

    right, other = probe(THETAS[0]), probe(THETAS[2])
    assert not np.allclose(right, other)
    shutil.copyfile(out / "theta" / "000002.h5", out / "theta" / "000000.h5")
    proc = run_cli("probe", str(out), "--param", f"theta={THETAS[0]}", "--points",
                   str(tmp_path / "pts.npy"), check=False)
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert "theta/000000.h5 is not θ #0" in line and "--resume" in line, line
    proc = run_cli("sweep", str(cfg), "--out", str(out), "--resume")
    said = [ln for ln in proc.stderr.splitlines() if ln.startswith("sweep --resume")]
    assert len(said) == 1 and "θ #0 (theta=0.3)" in said[0] and "holds θ #2" in said[0], said
    assert json.loads(proc.stdout.strip().splitlines()[-1])["solved"] == 1
    assert np.allclose(probe(THETAS[0]), right, rtol=1e-12)


def _sleeper():
    return subprocess.Popen(["sleep", "60"])


@pytest.mark.serial
def test_lock_stops_a_second_writer_and_a_stale_one_is_taken_over(tmp_path, capsys):
    cfg_path = tmp_path / "sweep.toml"
    cfg_path.write_text(CONFIG)
    cfg = config.resolve(cfg_path, extra_sections=("sweep",))
    out = tmp_path / "s"
    sweep.run_sweep(cfg, MPI.COMM_SELF, out=out)
    assert not (out / LOCK).exists()  # released at the end
    other = _sleeper()
    try:
        start = process_start_time(other.pid)
        owner = {"host": socket.gethostname(), "pid": other.pid, "start": start}
        (out / LOCK).write_text(json.dumps(owner))
        proc = run_cli("sweep", str(cfg_path), "--out", str(out), "--resume", check=False)
        assert proc.returncode == 2
        (line,) = error_lines(proc)
        assert f"is being written by pid {other.pid} on host" in line, line
        assert str(out / LOCK) in line and "wait for it" in line, line
        # --overwrite does not get past the lock either, and leaves the store alone
        with pytest.raises(ValueError, match="being written by"):
            sweep.run_sweep(cfg, MPI.COMM_SELF, out=out, overwrite=True)
        assert len(list((out / "theta").glob("*.h5"))) == 3
    finally:
        other.kill()
        other.wait()
    # the writer is gone (as after kill -9): the lock is stale and taken over
    capsys.readouterr()
    assert sweep.run_sweep(cfg, MPI.COMM_SELF, out=out, resume=True)["solved"] == 0
    assert "took over the stale lock" in capsys.readouterr().err
    assert not (out / LOCK).exists()
    # a lock of another host cannot be checked: the message says how to remove it
    (out / LOCK).write_text(json.dumps({"host": "elsewhere.invalid", "pid": 1, "start": 1}))
    with pytest.raises(ValueError, match="pid 1 on host elsewhere.invalid.*delete the lock file"):
        sweep.run_sweep(cfg, MPI.COMM_SELF, out=out, resume=True)


def test_lock_owner_alive(tmp_path):
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    assert lock_owner_alive({**me, "start": process_start_time(os.getpid())}) is True
    assert lock_owner_alive({**me, "start": -5}) is False  # the pid was reused since
    gone = _sleeper()
    gone.kill()
    gone.wait()
    assert lock_owner_alive({**me, "pid": gone.pid}) is False
    assert lock_owner_alive({"host": "elsewhere.invalid", "pid": 1}) is None
    lock = tmp_path / "x.lock"
    assert acquire_lock(lock, "x") is False
    with pytest.raises(ValueError, match="x is being written by pid"):
        acquire_lock(lock, "x")
    release_lock(lock)
    assert not lock.exists()


def test_sweep_refuses_other_kinds_and_foreign_folders(mpi_tmp_path, comm):
    cfg = small_cfg(THETAS[:3])
    run = mpi_tmp_path / "run"
    solve_cfg = config.merge(config.default_config(), {"mesh": {"n": 4}})
    pipeline.run(solve_cfg, comm, out=run)
    for kw in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(ValueError, match="is a beckmann run folder, not a sweep folder"):
            sweep.run_sweep(cfg, comm, out=run, **kw)
    assert store_folder.read_manifest(run)["kind"] == "run" and not (run / LOCK).exists()
    foreign = mpi_tmp_path / "mine"
    if comm.rank == 0:
        foreign.mkdir()
        (foreign / "notes.txt").write_text("keep me")
    comm.barrier()
    with pytest.raises(ValueError, match="not empty and not a beckmann folder"):
        sweep.run_sweep(cfg, comm, out=foreign, resume=True)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    store = mpi_tmp_path / "s"
    sweep.run_sweep(cfg, comm, out=store)
    manifest = store_folder.read_manifest(store)
    assert manifest["kind"] == "sweep" and manifest["config_hash"]
    with pytest.raises(ValueError, match="--resume to continue it, --overwrite to replace it"):
        sweep.run_sweep(cfg, comm, out=store)
    # --overwrite replaces the store whole: nothing of the old one survives
    if comm.rank == 0:
        (store / "theta" / "000017.h5").write_bytes(b"left over")
    comm.barrier()
    cfg2 = small_cfg(THETAS[:2])
    sweep.run_sweep(cfg2, comm, out=store, overwrite=True)
    shares = [f"{i:06d}.r{r}.h5" for i in (0, 1) for r in range(1, comm.size)]  # one group
    assert sorted(p.name for p in (store / "theta").iterdir()) == sorted(
        ["000000.h5", "000001.h5", *shares])
    assert json.loads((store / "sweep.json").read_text())["grid"]["values"] == [[0.3], [0.4]]


@pytest.mark.serial
def test_solve_refuses_a_sweep_store(tmp_path):
    """Defect 2 with a real store: ``solve --out STORE`` fails and leaves the store as it was."""
    store = tmp_path / "s"
    sweep.run_sweep(small_cfg(THETAS[:2]), MPI.COMM_SELF, out=store)
    summary = (store / "summary.json").read_text()
    proc = run_cli("solve", "--set", "mesh.n=4", "--out", str(store), "--overwrite", check=False)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert "is a beckmann sweep folder, not a run folder" in line, line
    assert (store / "summary.json").read_text() == summary
    assert sorted(p.name for p in (store / "theta").iterdir()) == ["000000.h5", "000001.h5"]
