"""DOLFINx XDMF mesh files.

DOLFINx reads the file (in parallel); rank 0 only picks the grid and checks what the reader would
otherwise report as a crash or as a screenful of HDF5 error stack, and every rank raises the same
error. :mod:`beckmann.mesh` calls :func:`read_xdmf` for ``mesh.kind = "file"`` with ``.xdmf``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from beckmann._dolfinx import MPI, basix, dmesh, dolfinx, ufl
from beckmann._mpi import on_root

__all__ = ["read_xdmf"]

_XDMF_CELLS = {"triangle": 2, "tetrahedron": 3}



def _inspect_xdmf(path: str) -> tuple[str, int]:
    """The mesh grid's name and cell dimension, after a small check of the file. Serial."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise RuntimeError(f"cannot parse XDMF file '{path}': {err}") from err
    domain = root.find("Domain")
    grids = [
        g
        for g in ([] if domain is None else domain.iter("Grid"))
        if g.find("Topology") is not None and g.find("Geometry") is not None
    ]
    if not grids:
        raise RuntimeError(f"XDMF file '{path}' has no mesh grid under /Xdmf/Domain")
    names = [g.get("Name", "") for g in grids]
    grid = grids[names.index("mesh")] if "mesh" in names else grids[0]
    name = grid.get("Name", "")
    topology = grid.find("Topology")
    assert topology is not None
    cell = (topology.get("TopologyType") or topology.get("Type") or "").lower()
    if cell not in _XDMF_CELLS:
        raise ValueError(
            f"XDMF mesh {name!r} in '{path}' has cells of type {cell!r}; only linear "
            "Triangle (2D) or Tetrahedron (3D) meshes are supported"
        )
    import h5py

    # DOLFINx opens <stem>.h5 beside the file even when all data are inline, and reads every
    # HDF5 DataItem from it, whatever file name the item gives.
    h5path = Path(path).with_suffix(".h5")
    try:
        if not h5path.is_file():
            raise RuntimeError(f"its HDF5 file '{h5path}' does not exist")
        if not h5py.is_hdf5(h5path):
            raise RuntimeError(f"'{h5path}' is not an HDF5 file")
        with h5py.File(h5path, "r") as h5:
            for item in grid.iter("DataItem"):
                dataset = (item.text or "").strip().partition(":")[2]
                if (item.get("Format") or "XML").upper() == "HDF" and dataset not in h5:
                    raise RuntimeError(f"dataset {dataset!r} is missing from '{h5path}'")
    except (OSError, RuntimeError) as err:
        raise RuntimeError(f"corrupt XDMF file '{path}': {err}") from err
    return name, _XDMF_CELLS[cell]


def read_xdmf(
    path: str, comm: MPI.Comm, *, ghost_mode: dmesh.GhostMode
) -> dolfinx.mesh.Mesh:
    """Read the mesh grid of a DOLFINx XDMF file. Collective.

    The grid named ``mesh`` if there is one, else the first grid of the domain; triangles
    stored with ``XYZ`` coordinates (all ``z = 0``) get geometric dimension 2.

    Raises:
        ValueError: On every rank, for cells other than linear triangles/tetrahedra or a 2D
            mesh off ``z = 0``.
        RuntimeError: On every rank, for a file that cannot be parsed, a missing or damaged
            HDF5 file, or a reader failure.
    """
    name, tdim = on_root(comm, lambda: _inspect_xdmf(path))
    try:
        with dolfinx.io.XDMFFile(comm, path, "r") as xdmf:
            msh = xdmf.read_mesh(ghost_mode=ghost_mode, name=name)
    except RuntimeError as err:  # the same file on every rank: every rank raises
        raise RuntimeError(f"corrupt XDMF file '{path}': {err}") from err
    if tdim == 2 and msh.geometry.dim == 3:
        x = msh.geometry.x
        z = comm.allreduce(float(np.abs(x[:, 2]).max(initial=0.0)), op=MPI.MAX)
        scale = comm.allreduce(float(np.abs(x).max(initial=0.0)), op=MPI.MAX)
        if z > 1e-12 * max(1.0, scale):
            raise ValueError(
                f"XDMF mesh {name!r} in '{path}' is a surface mesh in 3D (|z| up to {z:g}); "
                "a 2D mesh must lie in the plane z = 0"
            )
        msh = _drop_z(msh, ghost_mode)
    return msh


def _drop_z(msh: dolfinx.mesh.Mesh, ghost_mode: dmesh.GhostMode) -> dolfinx.mesh.Mesh:
    """Rebuild a triangle mesh stored with x, y, z (z = 0) with geometric dimension 2.

    Collective. Each rank passes its owned nodes (whose global numbers are contiguous per rank,
    as ``create_mesh`` expects) and its owned cells in global node numbers.
    """
    tdim = msh.topology.dim
    imap = msh.geometry.index_map()
    x = np.ascontiguousarray(msh.geometry.x[: imap.size_local, :2])
    num_cells = msh.topology.index_map(tdim).size_local
    dofmap = msh.geometry.dofmaps[0][:num_cells]
    cells = imap.local_to_global(dofmap.reshape(-1)).reshape(dofmap.shape).astype(np.int64)
    element = ufl.Mesh(basix.ufl.element("Lagrange", "triangle", 1, shape=(2,)))
    partitioner = dmesh.create_cell_partitioner(ghost_mode, 2)
    return dmesh.create_mesh(msh.comm, cells, element, x, partitioner=partitioner)
