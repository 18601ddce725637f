"""The vertex flux of the ParaView output: direct (geometry + reference gradients) = DG route."""

from __future__ import annotations

import numpy as np
import pytest

from beckmann._dolfinx import MPI, dmesh, fem
from beckmann.fields import gradient, vertex_gradient
from beckmann.mesh import create_mesh
from beckmann.store import to_vertex_function


def _meshes(comm):
    yield "square", dmesh.create_unit_square(comm, 7, 5, dmesh.CellType.triangle)
    yield "disk", create_mesh({"kind": "disk", "h": 0.3}, comm)  # unstructured, curved boundary
    yield "cube", dmesh.create_unit_cube(comm, 3, 2, 3, dmesh.CellType.tetrahedron)


def _phi(msh, k):
    V = fem.functionspace(msh, ("Lagrange", k))
    phi = fem.Function(V)
    phi.interpolate(lambda x: np.sin(3 * x[0] + x[1]) * np.cos(2 * x[1]) + x[0] ** 3 - x[2])
    phi.x.scatter_forward()
    return phi


@pytest.mark.parametrize("k", [1, 2, 3])
def test_vertex_gradient_equals_the_vertex_average_of_the_dg_flux(comm, k):
    for name, msh in _meshes(comm):
        phi = _phi(msh, k)
        ref = to_vertex_function(gradient(phi))  # the previous route: DG_{k-1}, averaged
        got = vertex_gradient(phi)
        scale = np.abs(ref.x.array).max()
        assert scale > 0.5, name
        assert got.function_space.dofmap.index_map.size_local == (
            ref.function_space.dofmap.index_map.size_local
        )
        err = np.abs(got.x.array - ref.x.array).max() / scale
        assert err < 1e-12, (name, k, err)


def test_vertex_gradient_of_an_affine_field_is_exact(comm):
    """∇(a·x + c) = a at every vertex, owned or ghost, on every rank count."""
    a = np.array([0.3, -1.7, 2.5])
    for name, msh in _meshes(comm):
        gdim = msh.geometry.dim
        V = fem.functionspace(msh, ("Lagrange", 1))
        phi = fem.Function(V)
        phi.interpolate(lambda x, g=gdim: a[:g] @ x[:g] + 4.0)
        got = vertex_gradient(phi).x.array.reshape(-1, gdim)
        assert np.allclose(got, a[:gdim], rtol=0, atol=1e-12), name


@pytest.mark.parametrize("formulation", ["primal", "mixed"])
def test_run_writes_the_same_flux_as_the_dg_route(mpi_tmp_path, formulation):
    """solution.h5's flux = the vertex average of the solution's DG flux (∇φ; mixed: RT)."""
    from beckmann import config, pipeline

    comm = MPI.COMM_WORLD
    cfg = config.resolve(sets=["mesh.n=8", "solver.degree=2", "output.times=[0.5]",
                               "target.kind='expression'", "target.expr='1 + x*y**2'",
                               f"solver.formulation='{formulation}'"])
    sol = pipeline.run(cfg, comm, out=mpi_tmp_path / "run")
    ref = to_vertex_function(sol.flux())
    Q = ref.function_space
    n = Q.dofmap.index_map.size_local
    x = np.concatenate(comm.allgather(Q.tabulate_dof_coordinates()[:n, :2]))
    v = np.concatenate(comm.allgather(ref.x.array.reshape(-1, 2)[:n]))
    if comm.rank == 0:
        import h5py

        with h5py.File(mpi_tmp_path / "run" / "solution.h5", "r") as h5:
            geo = h5["Mesh/mesh/geometry"][:, :2]
            key = next(iter(h5["Function/flux"].keys()))
            got = h5["Function/flux"][key][:, :2]
        a = np.lexsort(np.round(geo, 12).T[::-1])
        b = np.lexsort(np.round(x, 12).T[::-1])
        assert np.allclose(geo[a], x[b], atol=1e-13)
        assert np.abs(v).max() > 1e-3
        assert np.allclose(got[a], v[b], rtol=1e-12, atol=1e-13)
    comm.barrier()


def test_vertex_vector_space_is_the_one_dolfinx_builds(comm):
    """V's dofmap blocked by gdim = fem.functionspace's P1 vector space: dofs, ghosts, values."""
    from beckmann.fields import vertex_vector_space

    for name, msh in _meshes(comm):
        gdim = msh.geometry.dim
        V = fem.functionspace(msh, ("Lagrange", 1))
        got = vertex_vector_space(V)
        ref = fem.functionspace(msh, ("Lagrange", 1, (gdim,)))
        assert got.dofmap.bs == ref.dofmap.bs == gdim, name
        assert np.array_equal(got.dofmap.list, ref.dofmap.list), name
        a, b = got.dofmap.index_map, ref.dofmap.index_map
        assert (a.size_local, a.size_global) == (b.size_local, b.size_global), name
        assert np.array_equal(a.ghosts, b.ghosts), name
        assert got.ufl_element() == ref.ufl_element(), name
        np.testing.assert_array_equal(got.tabulate_dof_coordinates(),
                                      ref.tabulate_dof_coordinates())  # fmt: skip
        phi = _phi(msh, 1)
        u, w = vertex_gradient(phi, got), vertex_gradient(phi, ref)
        u.x.scatter_forward()
        np.testing.assert_array_equal(u.x.array, w.x.array)
        # a P2 space is not reused: the usual P1 vector space
        other = vertex_vector_space(fem.functionspace(msh, ("Lagrange", 2)))
        assert np.array_equal(other.dofmap.list, ref.dofmap.list), name
