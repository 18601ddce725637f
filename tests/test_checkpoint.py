"""Checkpoints reload on any number of ranks with the same values."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

from beckmann import config, io, pipeline
from beckmann._dolfinx import MPI

PTS = np.array([[0.1, 0.2], [0.5, 0.5], [0.93, 0.77], [0.0, 1.0]])
SETS = ["mesh.n=10", "solver.degree=3", "output.times=[0.5]"]


def test_roundtrip_same_and_single_rank(mpi_tmp_path):
    """Write on all ranks; reload on all ranks and on rank 0 alone (N -> N and N -> 1)."""
    comm = MPI.COMM_WORLD
    cfg = config.resolve(sets=SETS, base=pipeline.BUILTIN_EXAMPLE)
    sol = pipeline.run(cfg, comm, out=mpi_tmp_path / "run")
    ref = sol.evaluate(PTS, t=0.5)
    back = io.load_run(mpi_tmp_path / "run", comm)
    got = back.evaluate(PTS, t=0.5)
    for k in ref:
        assert np.allclose(got[k], ref[k], rtol=1e-12, atol=1e-14), k
    assert back.degree == 3
    self_comm = comm.Split(0 if comm.rank == 0 else MPI.UNDEFINED, 0) if comm.size > 1 else None
    if comm.rank == 0 and self_comm is not None:
        alone = io.load_run(mpi_tmp_path / "run", self_comm).evaluate(PTS, t=0.5)
        for k in ref:
            assert np.allclose(alone[k], ref[k], rtol=1e-12, atol=1e-14), k
        self_comm.Free()
    comm.barrier()


@pytest.mark.serial
def test_two_ranks_to_one_and_back(tmp_path):
    run_cli("solve", *sum((["--set", s] for s in SETS), []), "--out", str(tmp_path / "p2"),
            ranks=2)
    run_cli("solve", *sum((["--set", s] for s in SETS), []), "--out", str(tmp_path / "p1"))
    comm = MPI.COMM_SELF
    a = io.load_run(tmp_path / "p2", comm).evaluate(PTS, t=0.5)
    b = io.load_run(tmp_path / "p1", comm).evaluate(PTS, t=0.5)
    for k in a:  # same answer from 2 ranks as from 1 (to solver tolerance)
        assert np.allclose(a[k], b[k], rtol=1e-7, atol=1e-9), k
    # written on 1 rank, probed on 2
    np.save(tmp_path / "pts.npy", PTS)
    import json

    out = run_cli("probe", str(tmp_path / "p1"), "--points", str(tmp_path / "pts.npy"),
                  "--time", "0.5", ranks=2)
    probed = json.loads(out.stdout)
    for k in b:
        assert np.allclose(np.array(probed[k]), b[k], rtol=1e-12, atol=1e-14), k


def test_not_a_run_folder(mpi_tmp_path):
    with pytest.raises(ValueError, match="not a beckmann run folder"):
        io.load_run(mpi_tmp_path / "missing", MPI.COMM_WORLD)


def test_corrupt_checkpoint(mpi_tmp_path):
    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        (mpi_tmp_path / "run" / "checkpoint").mkdir(parents=True)
        (mpi_tmp_path / "run" / "checkpoint" / "fields.h5").write_bytes(b"not hdf5")
    comm.barrier()
    with pytest.raises(RuntimeError, match="cannot read the checkpoint"):
        io.load_run(mpi_tmp_path / "run", comm)


def test_vtx_and_paraview_files(mpi_tmp_path):
    """XDMF for ParaView 5.11 always; VTX (.bp) in native degree on request."""
    comm = MPI.COMM_WORLD
    cfg = config.resolve(sets=["mesh.n=6", "output.vtx=true", "output.times=[0.0, 0.5, 1.0]"])
    pipeline.run(cfg, comm, out=mpi_tmp_path / "v")
    if comm.rank == 0:
        for name in ("source", "target", "potential", "flux"):
            assert (mpi_tmp_path / "v" / "vtx" / f"{name}.bp").is_dir(), name
        import h5py

        with h5py.File(mpi_tmp_path / "v" / "velocity.h5", "r") as h5:
            steps = list(h5["Function"]["velocity"].keys())
        assert len(steps) == 3
    comm.barrier()


def test_probe_points_on_one_rank_only(mpi_tmp_path):
    """A point set that lies inside one rank's cells only must not hang the others."""
    comm = MPI.COMM_WORLD
    cfg = config.resolve(sets=["mesh.n=8"])
    pipeline.run(cfg, comm, out=mpi_tmp_path / "r")
    sol = io.load_run(mpi_tmp_path / "r", comm)  # fresh: flux not yet built
    res = sol.evaluate(np.array([[0.01, 0.01]]))
    ref = pipeline.solve(cfg, comm).evaluate(np.array([[0.01, 0.01]]))
    assert np.allclose(res["flux"], ref["flux"], rtol=1e-6, atol=1e-10)
