"""The sweep store's entries are per-rank shares, exactly keyed, and reload on any rank count.

Issue 10: "A sweep store's θ entries use the same format" as a run's checkpoint: every rank of a
group writes its own share (nothing gathered), the values are keyed by (cell, position in the
cell) through a layout written once per store, and a reload on any number of ranks reads only the
rows its cells need. Run serially and under ``mpirun -n 2`` (there the stores are written on 2
ranks, in one group of 2 or in 2 groups of 1, and reloaded on 2 ranks and on each rank alone).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from beckmann import config, sweep
from beckmann._dolfinx import MPI
from beckmann.sweep.entries import share_path

TARGET = "0.2 + exp(-((x - theta)**2 + (y - 0.5)**2) / 0.05)"
THETAS = [0.3, 0.45, 0.6, 0.75]


def cfg_of(degree: int = 1, **sweep_opts) -> dict:
    layer = {
        "mesh": {"kind": "unit_square", "n": 8},
        "solver": {"degree": degree, "method": "mumps"},
        "target": {"kind": "expression", "expr": TARGET},
        "sweep": {"parameters": {"theta": THETAS}, "continuity": False, **sweep_opts},
    }
    return config.merge(config.default_config(), layer, extra_sections=("sweep",))


def table(u, comm) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, values)`` of a reloaded field, sorted by the exact key (cell, position, comp).

    The cell is the store mesh's original index (its row in the mesh file), the same whatever
    the number of reading ranks; only owned cells are listed, so each key appears once.
    """
    V = u.function_space
    msh = V.mesh
    n = msh.topology.index_map(msh.topology.dim).size_local
    cells = np.asarray(msh.topology.original_cell_index[:n], dtype=np.int64)
    dofs = np.asarray(V.dofmap.list[:n])
    bs = V.dofmap.index_map_bs
    per = dofs.shape[1] * bs
    keys = (np.repeat(cells, per) * per + np.tile(np.arange(per), n)).astype(np.int64)
    vals = u.x.array.reshape(-1, bs)[dofs.ravel()].ravel()
    keys = np.concatenate(comm.allgather(keys))
    vals = np.concatenate(comm.allgather(vals))
    order = np.argsort(keys)
    assert np.unique(keys).size == keys.size
    return keys[order], vals[order]


def reloads(out, comm, indices) -> list[dict[int, tuple]]:
    """Tables of potential and flux of every θ, reloaded on ``comm`` and on this rank alone."""
    res = []
    for c in (comm, MPI.COMM_SELF):
        store = sweep.SweepStore(out, c)
        res.append({i: (table(store.potential(i), c), table(store.flux(i), c)) for i in indices})
    return res


def assert_identical(a, b) -> None:
    for i in a:
        for (ka, va), (kb, vb) in zip(a[i], b[i], strict=True):
            assert np.array_equal(ka, kb) and np.array_equal(va, vb), i


@pytest.mark.parametrize("group_size", [0, 1])
def test_store_reloads_identically_on_any_rank_count(mpi_tmp_path, comm, group_size):
    """Written on ``comm`` (one group, or groups of one rank), reloaded on ``comm`` and on 1
    rank: bit-identical values; nothing gathered (one share per writer rank); the potential
    agrees with the stored flux (its gradient) and the dofmaps are written once."""
    out = mpi_tmp_path / "s"
    sweep.run_sweep(cfg_of(degree=2, group_size=group_size), comm, out=out)
    writers = comm.size if group_size == 0 else 1
    tdir = out / "theta"
    for i in range(len(THETAS)):
        assert all(share_path(out, i, r).is_file() for r in range(writers))
        assert not share_path(out, i, writers).exists()
    assert sorted(p.name for p in (out / "layout").iterdir()) == ["d0"]  # one distribution
    import h5py

    with h5py.File(tdir / "000000.h5", "r") as h5:
        assert set(h5) == {"potential", "flux"}  # values only: no dofmap, no coordinates
        assert int(h5.attrs["ranks"]) == writers and int(h5.attrs["layout"]) == 0
    on_comm, alone = reloads(out, comm, range(len(THETAS)))
    assert_identical(on_comm, alone)
    # the reloaded fields are the solved ones: F = grad φ (DG_1 of P2, the engine's sign)
    store = sweep.SweepStore(out, comm)
    phi, F = store.potential(2), store.flux(2)
    from beckmann._dolfinx import fem

    G = fem.Function(F.function_space)
    G.interpolate(fem.Expression(__import__("ufl").grad(phi),
                                 F.function_space.element.interpolation_points))
    err = np.abs(G.x.array - F.x.array).max(initial=0.0)
    scale = np.abs(F.x.array).max(initial=0.0)
    err, scale = comm.allreduce(err, op=MPI.MAX), comm.allreduce(scale, op=MPI.MAX)
    assert err <= 1e-10 * scale, (err, scale)
    # both fields through one open of each share, and the indexed fill where the plain copy
    # (a reader in the writer's dof order) was used: the same values
    both = store.functions(2, ["potential", "flux"])
    store.layouts._in_order = dict.fromkeys(store.layouts._in_order, False)
    for u, v in ((both["potential"], phi), (both["flux"], F), (store.potential(2), phi),
                 (store.flux(2), F)):
        assert np.array_equal(u.x.array, v.x.array)


def test_resume_with_another_group_size_adds_a_distribution(mpi_tmp_path, comm):
    """Entries solved again on a resume with another group size name a second layout (when
    the partition differs, i.e. on 2 ranks) and every entry still reloads exactly; the store
    pass of the continuity report reads across both."""
    out = mpi_tmp_path / "s"
    cfg = cfg_of()
    sweep.run_sweep(cfg, comm, out=out, group_size=0)
    before = reloads(out, comm, range(len(THETAS)))[0]
    comm.barrier()
    if comm.rank == 0:
        for i in (1, 3):
            for p in (out / "theta").glob(f"{i:06d}.*h5"):
                p.unlink()
    comm.barrier()
    cfg_c = cfg_of(continuity=True)
    summary = sweep.run_sweep(cfg_c, comm, out=out, group_size=1, resume=True)
    assert summary["solved"] == 2 and summary["reused"] == 2
    assert summary["continuity"]["phi"]["lipschitz"] > 0
    layouts = sorted(p.name for p in (out / "layout").iterdir())
    assert layouts == (["d0", "d1"] if comm.size > 1 else ["d0"])
    import h5py

    for i in range(len(THETAS)):
        with h5py.File(out / "theta" / f"{i:06d}.h5", "r") as h5:
            assert int(h5.attrs["layout"]) == (1 if i in (1, 3) and comm.size > 1 else 0)
    on_comm, alone = reloads(out, comm, range(len(THETAS)))
    assert_identical(on_comm, alone)
    for i in range(len(THETAS)):
        for (kb, vb), (ka, va) in zip(before[i], on_comm[i], strict=True):
            assert np.array_equal(kb, ka)
            if i in (0, 2):
                assert np.array_equal(vb, va), i  # not solved again
            else:  # solved again, on another partition: the same solution
                assert np.abs(va - vb).max() <= 1e-9 * np.abs(vb).max(), i
    # the brute-force sup over pairs of the stored potentials equals the report's
    store = sweep.SweepStore(out, comm)
    th = np.array(THETAS)
    P = {i: on_comm[i][0][1] for i in range(len(THETAS))}
    from beckmann.sweep.modulus import stream_pairs

    pairs = stream_pairs(len(THETAS), 4)
    lip = max(np.abs(P[a] - P[b]).max() / abs(th[a] - th[b]) for a, b in pairs)
    assert summary["continuity"]["phi"]["lipschitz"] == pytest.approx(lip, rel=1e-12)
    assert store.completed() == list(range(len(THETAS)))


def test_old_store_format_is_refused_in_one_line(mpi_tmp_path, comm):
    out = mpi_tmp_path / "s"
    cfg = cfg_of()
    sweep.run_sweep(cfg, comm, out=out)
    comm.barrier()
    if comm.rank == 0:
        meta = json.loads((out / "sweep.json").read_text())
        meta["version"] = 1
        (out / "sweep.json").write_text(json.dumps(meta))
    comm.barrier()
    for call in (lambda: sweep.SweepStore(out, comm),
                 lambda: sweep.run_sweep(cfg, comm, out=out, resume=True)):  # fmt: skip
        with pytest.raises(ValueError) as info:
            call()
        text = str(info.value)
        assert "format version 1" in text and "reads version 2" in text, text
        assert "--overwrite" in text and "\n" not in text, text
    # --overwrite replaces it
    assert sweep.run_sweep(cfg, comm, out=out, overwrite=True)["solved"] == len(THETAS)


def test_a_mesh_of_another_numbering_is_refused_not_misread(mpi_tmp_path, comm):
    """A space on a mesh built from the config reloads exactly (its original cell index is the
    generator's); one on a mesh read from a store's file (whose original index is that file's
    row) is refused with a clear error instead of being filled with other cells' values."""
    from beckmann import mesh as bmesh
    from beckmann._dolfinx import fem

    out = mpi_tmp_path / "s"
    cfg = cfg_of(degree=2)
    sweep.run_sweep(cfg, comm, out=out)
    store = sweep.SweepStore(out, comm)
    V = fem.functionspace(bmesh.create_mesh(cfg["mesh"], comm), ("Lagrange", 2))
    got = store.potential(1, V)
    pts = np.array([[0.21, 0.33], [0.68, 0.52]])
    from beckmann.fields import Solution

    own = store.potential(1)
    a = Solution(V.mesh, got, got, got).evaluate(pts, what=("potential",))["potential"]
    b = Solution(own.function_space.mesh, own, own, own).evaluate(pts, what=("potential",))
    assert np.allclose(a, b["potential"], rtol=1e-12, atol=1e-15)
    other = sweep.SweepStore(out, comm).space()  # the same file, another mesh object
    msh = other.mesh
    n = msh.topology.index_map(2).size_local
    gen = np.asarray(V.mesh.topology.original_cell_index[:n])
    if np.array_equal(np.sort(gen), np.arange(gen.size)) and comm.size == 1 and np.array_equal(
            gen, np.asarray(msh.topology.original_cell_index[:n])):  # fmt: skip
        pytest.skip("the file's row order is the generator's here: nothing to refuse")
    with pytest.raises(ValueError, match="mesh is not the (store|one written)"):
        store.potential(1, other)


def test_a_share_of_another_entry_or_a_lost_layout_is_caught(mpi_tmp_path, comm):
    """A share copied from another entry (rank > 0's file when there is one) is refused by a
    reader and solved again by --resume; a store whose layout d0 (the mesh) is gone has every
    entry solved again, and the result is the same solution."""
    import shutil

    out = mpi_tmp_path / "s"
    cfg = cfg_of()
    sweep.run_sweep(cfg, comm, out=out)
    before = reloads(out, comm, range(len(THETAS)))[0]
    r = comm.size - 1  # the last writer rank's share (rank 0's on one rank)
    comm.barrier()
    if comm.rank == 0:
        shutil.copyfile(share_path(out, 2, r), share_path(out, 0, r))
    comm.barrier()
    store = sweep.SweepStore(out, comm)
    with pytest.raises(RuntimeError, match=r"is not θ #0 .*holds θ #2"):
        store.potential(0)
    summary = sweep.run_sweep(cfg, comm, out=out, resume=True)
    assert [r["index"] for r in summary["rejected"]] == [0] and summary["solved"] == 1
    comm.barrier()
    if comm.rank == 0:
        shutil.rmtree(out / "layout" / "d0")
    comm.barrier()
    summary = sweep.run_sweep(cfg, comm, out=out, resume=True)
    assert summary["solved"] == len(THETAS), summary["rejected"]
    assert all("layout d0" in r["reason"] for r in summary["rejected"])
    after = reloads(out, comm, range(len(THETAS)))[0]
    for i in range(len(THETAS)):
        (kb, vb), (ka, va) = before[i][0], after[i][0]
        assert np.array_equal(kb, ka) and np.abs(va - vb).max() <= 1e-12 * np.abs(vb).max(), i
