"""Checkpoints reload on any number of ranks with exactly the values that were written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from beckmann import config, pipeline, store
from beckmann._dolfinx import MPI, fem

PTS = np.array([[0.1, 0.2], [0.5, 0.5], [0.93, 0.77], [0.0, 1.0]])
SETS = ["mesh.n=10", "solver.degree=3", "output.times=[0.5]"]


def dof_table(u: fem.Function, comm) -> tuple[np.ndarray, np.ndarray]:
    """Every owned dof's coordinates and value over all ranks, sorted by coordinates.

    Test-only matching (P3 dof coordinates are unique); the checkpoint itself keys by cell.
    """
    V = u.function_space
    n = V.dofmap.index_map.size_local
    x = np.concatenate(comm.allgather(V.tabulate_dof_coordinates()[:n]))
    v = np.concatenate(comm.allgather(u.x.array[:n].copy()))
    order = np.lexsort(np.round(x, 12).T[::-1])
    return x[order], v[order]


def assert_identical(a: store.Checkpoint | pipeline.Solution, b, comm_a, comm_b) -> None:
    for name in ("phi", "p0", "p1"):
        xa, va = dof_table(getattr(a, name), comm_a)
        xb, vb = dof_table(getattr(b, name), comm_b)
        assert np.allclose(xa, xb, atol=1e-12), name
        assert np.array_equal(va, vb), name  # exactly: no interpolation, no tolerance


@pytest.mark.parametrize("degree", [3, 1])  # rank files; P1: solution.h5's vertex fields
def test_roundtrip_same_and_single_rank(mpi_tmp_path, degree):
    """Write on all ranks; reload on all ranks and on rank 0 alone (N -> N and N -> 1)."""
    comm = MPI.COMM_WORLD
    sets = [*SETS, f"solver.degree={degree}"]
    cfg = config.resolve(sets=sets, base=pipeline.BUILTIN_EXAMPLE)
    sol = pipeline.run(cfg, comm, out=mpi_tmp_path / "run")
    ref = sol.evaluate(PTS, t=0.5)
    back = store.load_run(mpi_tmp_path / "run", comm)
    assert_identical(sol, back, comm, comm)
    got = back.evaluate(PTS, t=0.5)
    for k in ref:  # another partition: point evaluation differs by round-off only
        assert np.allclose(got[k], ref[k], rtol=1e-13, atol=1e-15), k
    assert back.degree == degree
    assert back.info["summary"]["ndofs"] == sol.info["ndofs"]
    self_comm = comm.Split(0 if comm.rank == 0 else MPI.UNDEFINED, 0) if comm.size > 1 else None
    if comm.rank == 0 and self_comm is not None:
        alone = store.load_run(mpi_tmp_path / "run", self_comm)
        res = alone.evaluate(PTS, t=0.5)
        for k in ref:
            assert np.allclose(res[k], ref[k], rtol=1e-13, atol=1e-15), k
        self_comm.Free()
    if comm.size > 1:
        alone = store.load_run(mpi_tmp_path / "run", MPI.COMM_SELF)
        assert_identical(sol, alone, comm, MPI.COMM_SELF)
    comm.barrier()


@pytest.mark.serial
def test_written_on_two_ranks_reloads_identically_on_one_and_two(tmp_path):
    run_cli("solve", *sum((["--set", s] for s in SETS), []), "--out", str(tmp_path / "p2"),
            ranks=2)
    index = json.loads((tmp_path / "p2" / "checkpoint" / "checkpoint.json").read_text())
    assert index["ranks"] == 2 and sorted(p.name for p in (tmp_path / "p2" / "checkpoint")
                                          .glob("rank*.h5")) == ["rank0.h5", "rank1.h5"]
    run_cli("solve", *sum((["--set", s] for s in SETS), []), "--out", str(tmp_path / "p1"))
    comm = MPI.COMM_SELF
    two = store.load_run(tmp_path / "p2", comm)
    one = store.load_run(tmp_path / "p1", comm)
    a, b = two.evaluate(PTS, t=0.5), one.evaluate(PTS, t=0.5)
    for k in a:  # same answer from 2 ranks as from 1 (to solver tolerance)
        assert np.allclose(a[k], b[k], rtol=1e-7, atol=1e-9), k
    # the 2-rank checkpoint probed on 1 and on 2 ranks: the same numbers up to the round-off of
    # point evaluation (the dof values themselves are compared bit for bit in the test above)
    np.save(tmp_path / "pts.npy", PTS)
    for ranks in (1, 2):
        out = run_cli("probe", str(tmp_path / "p2"), "--points", str(tmp_path / "pts.npy"),
                      "--time", "0.5", ranks=ranks)
        probed = json.loads(out.stdout)
        for k in a:
            assert np.allclose(np.array(probed[k]), a[k], rtol=1e-13, atol=1e-15), (ranks, k)


def test_not_a_run_folder(mpi_tmp_path):
    with pytest.raises(ValueError, match="not a beckmann run folder"):
        store.load_run(mpi_tmp_path / "missing", MPI.COMM_WORLD)


def test_corrupt_or_incomplete_checkpoint(mpi_tmp_path):
    comm = MPI.COMM_WORLD
    cfg = config.resolve(sets=["mesh.n=4", "solver.degree=2"])
    pipeline.run(cfg, comm, out=mpi_tmp_path / "run")
    ck = mpi_tmp_path / "run" / "checkpoint"
    assert json.loads((ck / "checkpoint.json").read_text()).get("layout") is None  # rank files
    if comm.rank == 0:
        (ck / "rank0.h5").write_bytes(b"not hdf5")
    comm.barrier()
    with pytest.raises(RuntimeError, match=r"rank0.h5' is not an HDF5 file"):
        store.load_run(mpi_tmp_path / "run", comm)
    if comm.rank == 0:
        (ck / "rank0.h5").unlink()
    comm.barrier()
    with pytest.raises(RuntimeError, match="missing rank0.h5"):
        store.load_run(mpi_tmp_path / "run", comm)


@pytest.mark.serial
@pytest.mark.parametrize("ranks", [1, 2])
def test_p1_checkpoint_refers_to_solution_h5(tmp_path, ranks):
    """P1: the checkpoint writes no values; written on 1 or 2 ranks it reloads exactly on 1 and 2.

    The reference is a second route: every vertex's values read from solution.h5 by the
    vertex's coordinates (h5py), against the reloaded dofs at their coordinates.
    """
    import h5py

    sets = ["mesh.n=12", "solver.degree=1", "output.times=[0.5]"]
    out = tmp_path / "run"
    run_cli("solve", *sum((["--set", s] for s in sets), []), "--out", str(out), ranks=ranks)
    ck = out / "checkpoint"
    index = json.loads((ck / "checkpoint.json").read_text())
    assert index["layout"] == "vertex" and sorted(p.name for p in ck.iterdir()) == [
        "checkpoint.json"]
    with h5py.File(out / "solution.h5", "r") as h5:
        geo = h5["Mesh/mesh/geometry"][:, :2]
        stored = {k: h5[f"Function/{k}/0"][:, 0] for k in ("potential", "source", "target")}
    order = np.lexsort(np.round(geo, 12).T[::-1])
    back = store.load_run(out, MPI.COMM_SELF)
    for name, attr in (("potential", "phi"), ("source", "p0"), ("target", "p1")):
        x, v = dof_table(getattr(back, attr), MPI.COMM_SELF)
        assert np.allclose(x[:, :2], geo[order], atol=1e-13)
        assert np.array_equal(v, stored[name][order]), name  # bit for bit
    np.save(tmp_path / "pts.npy", PTS)
    ref = back.evaluate(PTS, t=0.5)
    for r in (1, 2):  # reload on 1 and on 2 ranks
        probed = json.loads(run_cli("probe", str(out), "--points", str(tmp_path / "pts.npy"),
                                    "--time", "0.5", ranks=r).stdout)
        for k in ref:
            assert np.allclose(np.array(probed[k]), ref[k], rtol=1e-13, atol=1e-15), (r, k)


def test_no_checkpoint_is_a_clear_error(mpi_tmp_path):
    comm = MPI.COMM_WORLD
    cfg = config.resolve(sets=["mesh.n=4", "solver.degree=1", "output.checkpoint=false"])
    pipeline.run(cfg, comm, out=mpi_tmp_path / "run")
    with pytest.raises(ValueError, match="has no checkpoint"):
        store.load_run(mpi_tmp_path / "run", comm)


def test_vector_field_and_own_mesh(mpi_tmp_path):
    """The generic API: a vector P2 field with its own mesh file, values exact after reload."""
    from beckmann.mesh import create_mesh

    comm = MPI.COMM_WORLD
    msh = create_mesh({"kind": "disk", "h": 0.3}, comm)
    V = fem.functionspace(msh, ("Lagrange", 2, (2,)))
    u = fem.Function(V)
    u.interpolate(lambda x: np.vstack([np.sin(3 * x[0]) * x[1], np.exp(x[0] * x[1])]))
    store.write_checkpoint(mpi_tmp_path / "ck", {"u": u}, {"what": "test"})
    back = store.read_checkpoint(mpi_tmp_path / "ck", comm)
    assert back.meta == {"what": "test"}
    w = back.functions["u"]
    W = w.function_space
    n = W.dofmap.index_map.size_local
    x = W.tabulate_dof_coordinates()[:n]
    vals = w.x.array.reshape(-1, 2)[:n]
    # P2 interpolation is exact at its dofs: the reloaded values are the function's values there
    assert np.allclose(vals[:, 0], np.sin(3 * x[:, 0]) * x[:, 1], rtol=0, atol=1e-15)
    assert np.allclose(vals[:, 1], np.exp(x[:, 0] * x[:, 1]), rtol=0, atol=1e-15)


def test_vtx_and_paraview_files(mpi_tmp_path):
    """XDMF for ParaView 5.11 always; VTX (.bp) in native degree on request."""
    comm = MPI.COMM_WORLD
    cfg = config.resolve(sets=["mesh.n=6", "output.vtx=true", "output.times=[0.0, 0.5, 1.0]"])
    sol = pipeline.run(cfg, comm, out=mpi_tmp_path / "v")
    # No ADIOS2 reader is installed here (the wheel's ADIOS2 has no Python module), so the .bp
    # values cannot be read back; their count can: every series must hold at least its float64
    # values (global dofs x block size x steps), which an empty or truncated series does not.
    scalar = sol.V.dofmap.index_map.size_global
    flux = sol.flux().function_space
    vector = flux.dofmap.index_map.size_global * flux.dofmap.index_map_bs
    values = {"source": scalar, "target": scalar, "potential": scalar, "flux": vector}
    values["velocity"] = 3 * vector  # three output times
    if comm.rank == 0:
        for name, count in values.items():
            bp = mpi_tmp_path / "v" / "vtx" / f"{name}.bp"
            assert bp.is_dir(), name
            size = sum(f.stat().st_size for f in bp.rglob("*") if f.is_file())
            assert size >= 8 * count, (name, size, count)
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
    sol = store.load_run(mpi_tmp_path / "r", comm)  # fresh: flux not yet built
    res = sol.evaluate(np.array([[0.01, 0.01]]))
    ref = pipeline.solve(cfg, comm).evaluate(np.array([[0.01, 0.01]]))
    assert np.allclose(res["flux"], ref["flux"], rtol=1e-6, atol=1e-10)


def test_xdmf_velocity_is_the_vertex_average_of_the_dg_velocity(mpi_tmp_path):
    """velocity.xdmf (vertex flux / p_t) equals the vertex average of the DG_k velocity."""
    comm = MPI.COMM_WORLD
    cfg = config.resolve(sets=["mesh.n=6", "solver.degree=2", "output.times=[0.3, 1.0]"])
    sol = pipeline.run(cfg, comm, out=mpi_tmp_path / "run")
    for step, t in enumerate((0.3, 1.0)):
        ref = store.to_vertex_function(sol.velocity(t))  # the second route: average DG_2
        Q = ref.function_space
        n = Q.dofmap.index_map.size_local
        x = np.concatenate(comm.allgather(Q.tabulate_dof_coordinates()[:n, :2]))
        v = np.concatenate(comm.allgather(ref.x.array.reshape(-1, 2)[:n]))
        if comm.rank == 0:
            import h5py

            with h5py.File(mpi_tmp_path / "run" / "solution.h5", "r") as h5:
                geo = h5["Mesh/mesh/geometry"][:, :2]  # the mesh is written once, here
            with h5py.File(mpi_tmp_path / "run" / "velocity.h5", "r") as h5:
                assert "Mesh" not in h5
                keys = sorted(h5["Function/velocity"].keys(), key=float)
                got = h5["Function/velocity"][keys[step]][:, :2]
            a = np.lexsort(np.round(geo, 12).T[::-1])
            b = np.lexsort(np.round(x, 12).T[::-1])
            assert np.allclose(geo[a], x[b], atol=1e-13)
            assert np.allclose(got[a], v[b], rtol=1e-12, atol=1e-13)
    comm.barrier()


def test_vertex_average_of_dg0_equals_the_dg1_route(comm):
    """DG0's vertex average (its cell values, no kernel) = the same field as DG1, averaged."""
    from beckmann.mesh import create_mesh

    msh = create_mesh({"kind": "disk", "h": 0.3}, comm)
    W0 = fem.functionspace(msh, ("DG", 0, (2,)))
    W1 = fem.functionspace(msh, ("DG", 1, (2,)))
    u0 = fem.Function(W0)
    u0.interpolate(lambda x: np.vstack([np.sin(5 * x[0] + x[1]), np.cos(3 * x[1])]))
    u1 = fem.Function(W1)
    u1.interpolate(u0)  # exact: constant on each cell
    a, b = store.to_vertex_function(u0), store.to_vertex_function(u1)
    assert np.abs(a.x.array).max() > 0.1
    assert np.allclose(a.x.array, b.x.array, rtol=1e-14, atol=1e-14)


def test_writer_dofs_of_the_readers_own_numbering_is_the_general_fill():
    """Rows equal to the reader's own cell dofs take a shortcut (no sort): the same
    ``(need, loc, src)`` as the general path, which a permuted numbering exercises."""
    from beckmann.store.checkpoint import writer_dofs

    rng = np.random.default_rng(3)
    ref = rng.permutation(np.repeat(np.arange(50), 3)).reshape(-1, 3)  # every dof in a cell
    need, loc, src = writer_dofs(ref, ref)
    n, first = np.unique(ref.ravel(), return_index=True)
    assert np.array_equal(need, n) and np.array_equal(loc, n)
    assert np.array_equal(src, np.searchsorted(n, ref.ravel()[first]))
    perm = rng.permutation(50)  # another writer numbering: general path, u[loc] = vals[src]
    need, loc, src = writer_dofs(perm[ref], ref)
    vals = np.arange(50.0)[need]  # writer dof w holds value w
    u = np.empty(50)
    u[loc] = vals[src]
    assert np.array_equal(u, perm.astype(float))
    with pytest.raises(RuntimeError, match="does not fit"):
        bad = ref.copy()
        bad[0, 0] = ref[1, 0] if ref[1, 0] != ref[0, 0] else ref[1, 1]
        writer_dofs(perm[bad], ref)
