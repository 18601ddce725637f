r"""Built-in and file meshes, distributed over an MPI communicator.

Every mesh :func:`create_mesh` returns is a linear (degree-1) simplex mesh: triangles with
geometric dimension 2 for planar domains, tetrahedra with geometric dimension 3 for solids. It is
distributed over the communicator with one layer of ghost cells across shared facets
(``GhostMode.shared_facet``), the same for every kind, so interior-facet integrals work.

Built-in domains:

* ``unit_square``: :math:`[0,1]^2`, ``n`` x ``n`` squares each cut into two triangles along the
  diagonal from bottom-left to top-right (DOLFINx ``DiagonalType.right``); ``2 n^2`` cells.
* ``unit_cube``: :math:`[0,1]^3`, ``n`` x ``n`` x ``n`` cubes each cut into six tetrahedra;
  ``6 n^3`` cells.
* ``disk``: the disk of radius 1 centred at the origin, meshed by gmsh with element size ``h``.
  The boundary is the inscribed polygon, so the area is below :math:`\pi` by
  :math:`O(h^2)`.
* ``lshape``: :math:`[-1,1]^2 \setminus [0,1]\times[-1,0]`, meshed by gmsh with element size
  ``h``; the re-entrant corner (interior angle :math:`3\pi/2`) is the mesh vertex at the origin.

Files (``kind = "file"``):

* Gmsh ``.msh`` (any version gmsh reads). The domain is made of triangles (2D) or tetrahedra
  (3D). ``mesh.cells = [tags]`` takes the cells of those physical groups (tags or names); by
  default, as gmsh does when it saves a mesh, a file with physical groups of the cells'
  dimension contributes only the cells in some group, and a file without them all its cells.
  :func:`describe` lists the groups used (``physical_groups``). Second-order elements are
  reduced to first order (their vertices are kept). A 2D mesh must lie in the plane ``z = 0``;
  it gets geometric dimension 2.
* DOLFINx ``.xdmf``: the grid named ``mesh`` if there is one, else the first grid of the domain.
  Triangles stored with ``XYZ`` coordinates (all ``z = 0``) get geometric dimension 2.

Gmsh runs on rank 0 only, and the mesh is then distributed. All errors are collective: the check
runs on rank 0, the outcome is broadcast, and every rank raises the same ``ValueError`` (bad
argument or unsupported file content) or ``RuntimeError`` (unreadable file, gmsh failure) before
any collective DOLFINx call starts, so ``mpirun -n 4`` never hangs on a bad input.

Before anything is allocated, the memory of the mesh (and, given the degree, of the solve) is
estimated (:func:`beckmann._resources.solve_bytes`); a request larger than the machine is a
``ValueError`` naming the option to lower.
"""

from __future__ import annotations

import math
import numbers
import os
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from beckmann._dolfinx import MPI, basix, dmesh, dolfinx, ufl
from beckmann._mpi import global_bbox, on_root
from beckmann._resources import regular_file, require_memory, solve_bytes
from beckmann.config import OPTIONS

__all__ = ["KINDS", "create_mesh", "describe"]

KINDS: tuple[str, ...] = ("unit_square", "unit_cube", "disk", "lshape", "file")
"""The values ``section["kind"]`` may take."""

_GHOST_MODE = dmesh.GhostMode.shared_facet
_XDMF_CELLS = {"triangle": 2, "tetrahedron": 3}
#: Physical groups a mesh was built from ({"tag", "name"} dicts), for :func:`describe`.
_GROUPS: weakref.WeakKeyDictionary[Any, list[dict[str, Any]] | None] = weakref.WeakKeyDictionary()
#: Areas of the gmsh domains, for the cell-count estimate.
_AREA = {"disk": math.pi, "lshape": 3.0}


# --------------------------------------------------------------------------------------------
# Arguments


def _check_section(section: dict[str, Any]) -> dict[str, Any]:
    """Return the section with defaults filled in; raise ``ValueError`` on a bad entry."""
    if not isinstance(section, dict):
        raise ValueError(f"mesh section must be a dict, got {section!r}")
    unknown = sorted(set(section) - set(OPTIONS["mesh"]))
    if unknown:
        raise ValueError(
            f"unknown mesh option(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(OPTIONS['mesh'])}"
        )
    cfg = {key: section.get(key, opt.default) for key, opt in OPTIONS["mesh"].items()}
    kind = cfg["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown mesh kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind in ("unit_square", "unit_cube"):
        n = cfg["n"]
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
            raise ValueError(f"mesh.n must be an integer >= 1, got {n!r}")
        cfg["n"] = int(n)
    elif kind in ("disk", "lshape"):
        h = cfg["h"]
        if (
            not isinstance(h, numbers.Real)
            or isinstance(h, bool)
            or not math.isfinite(h)
            or not h > 0
        ):
            raise ValueError(f"mesh.h must be a finite number > 0, got {h!r}")
        cfg["h"] = float(h)
    else:
        path = cfg["path"]
        if not isinstance(path, str | os.PathLike) or str(path) == "":
            raise ValueError(f"mesh.path must name a .msh or .xdmf file, got {path!r}")
        suffix = Path(path).suffix.lower()
        if suffix not in (".msh", ".xdmf"):
            raise ValueError(
                f"unsupported mesh file extension {suffix!r} in '{path}'; use .msh or .xdmf"
            )
        regular_file(path, "mesh file")
        cfg["path"] = str(path)
    cfg["cells"] = _check_cells(cfg.get("cells", []), kind, str(cfg["path"]))
    return cfg


def _check_cells(cells: Any, kind: str, path: str) -> list[int | str]:
    """``mesh.cells``: a list of physical tags (integers) or group names, for a .msh file."""
    if not isinstance(cells, list) or not all(
        (isinstance(c, numbers.Integral) and not isinstance(c, bool)) or isinstance(c, str)
        for c in cells
    ):
        raise ValueError(f"mesh.cells must be a list of physical tags or names, got {cells!r}")
    if cells and not (kind == "file" and path.lower().endswith(".msh")):
        raise ValueError(
            f"mesh.cells = {cells!r} selects physical groups of a gmsh .msh file; it does not "
            f"apply to mesh.kind = {kind!r}" + (f" with '{path}'" if kind == "file" else "")
        )
    return [c if isinstance(c, str) else int(c) for c in cells]


def _check_memory(cfg: dict[str, Any], degree: int, ranks: int, hosts: int) -> None:
    """Refuse a mesh (and a degree-``degree`` solve on it) larger than the machine's memory."""
    kind, k = cfg["kind"], max(int(degree), 1)
    if kind == "file":
        return  # bounded by the file's size (regular_file)
    if kind in ("unit_square", "unit_cube"):
        n = float(cfg["n"])
        d = 2 if kind == "unit_square" else 3
        cells, dofs = (2.0 if d == 2 else 6.0) * n**d, (k * n + 1.0) ** d
        what, hint = f"a {kind} mesh with mesh.n = {cfg['n']}", "lower mesh.n"
        root = cells * 40.0  # the whole mesh is built on rank 0, then distributed
    else:
        d, h = 2, cfg["h"]
        cells = 2.0 * _AREA[kind] / (math.sqrt(3.0) / 2.0 * h * h)
        dofs = cells / 2.0 * k * k
        what, hint = f"a {kind} mesh with mesh.h = {h:g}", "raise mesh.h"
        root = cells * 1000.0  # gmsh, on rank 0
    if degree > 1:
        what += f" and solver.degree = {degree} ({dofs:.3g} unknowns)"
        hint += " or solver.degree"
    else:
        what += f" ({cells:.3g} cells)"
    require_memory(solve_bytes(dofs, cells, d, k), what, hint, ranks=ranks, hosts=hosts,
                   root=root)


def create_mesh(
    section: dict[str, Any], comm: MPI.Comm, *, degree: int = 1
) -> dolfinx.mesh.Mesh:
    """Create the mesh described by a ``[mesh]`` config section.

    Collective on ``comm``.

    Args:
        section: Keys ``kind`` (one of :data:`KINDS`), ``n`` (cells per side, for
            ``unit_square``/``unit_cube``), ``h`` (gmsh element size, for ``disk``/``lshape``)
            and ``path`` (a ``.msh`` or ``.xdmf`` file, for ``file``). Missing keys take the
            defaults of :data:`beckmann.config.OPTIONS`; keys for other kinds are ignored
            (``cells``, the physical groups of a ``.msh`` file, is an error for other kinds).
        comm: The communicator the mesh is distributed over.
        degree: Lagrange degree of the solve that follows, for the memory estimate.

    Returns:
        A linear simplex mesh with ghost cells across shared facets; geometric dimension 2 for
        planar domains and 3 for solids. See the module docstring for the domains.

    Raises:
        ValueError: On every rank, for a bad option (unknown kind or key, ``n < 1``,
            ``h <= 0``), a missing file, an unsupported extension, or a file without
            triangles/tetrahedra, with non-simplex cells, or with a 2D mesh off ``z = 0``;
            an unknown physical group in ``cells``; a mesh larger than the memory.
        RuntimeError: On every rank, when gmsh or the XDMF reader cannot read the file, or
            gmsh fails to mesh.
    """
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    hosts = comm.allreduce(int(local.rank == 0), op=MPI.SUM)
    local.Free()

    def check() -> dict[str, Any]:
        cfg = _check_section(section)
        _check_memory(cfg, degree, comm.size, hosts)
        return cfg

    cfg = on_root(comm, check)
    kind = cfg["kind"]
    if kind == "unit_square":
        return dmesh.create_unit_square(
            comm,
            cfg["n"],
            cfg["n"],
            dmesh.CellType.triangle,
            ghost_mode=_GHOST_MODE,
            diagonal=dmesh.DiagonalType.right,
        )
    if kind == "unit_cube":
        n = cfg["n"]
        return dmesh.create_unit_cube(
            comm, n, n, n, dmesh.CellType.tetrahedron, ghost_mode=_GHOST_MODE
        )
    if kind == "disk":
        return _gmsh_mesh(comm, lambda: _build_disk(cfg["h"]))
    if kind == "lshape":
        return _gmsh_mesh(comm, lambda: _build_lshape(cfg["h"]))
    if cfg["path"].lower().endswith(".msh"):
        groups: list[Any] = []
        msh = _gmsh_mesh(comm, lambda: _load_msh(cfg["path"], cfg["cells"], groups))
        _GROUPS[msh] = comm.bcast(groups[0] if groups else None, root=0)
        return msh
    return _read_xdmf(cfg["path"], comm)


# --------------------------------------------------------------------------------------------
# gmsh: built-in domains and .msh files (rank 0 only)


def _gmsh_mesh(comm: MPI.Comm, build: Callable[[], int]) -> dolfinx.mesh.Mesh:
    """Run ``build`` on rank 0 in a fresh gmsh model, then distribute the mesh. Collective.

    ``build`` fills the current gmsh model with a linear simplex mesh whose top-dimensional
    elements form exactly one physical group and whose nodes are numbered 1..N, and returns
    the geometric dimension. If gmsh was already initialised by the caller, a separate model is
    used and removed afterwards instead of finalising gmsh.
    """
    state: dict[str, Any] = {"ours": False, "previous": None}

    def start_and_build() -> int:
        import gmsh

        if gmsh.isInitialized():
            state["previous"] = (
                gmsh.model.getCurrent(),
                gmsh.option.getNumber("General.Terminal"),
            )
            gmsh.model.add("beckmann")
        else:
            gmsh.initialize(readConfigFiles=False, interruptible=False)
            state["ours"] = True
        gmsh.option.setNumber("General.Terminal", 0)
        return build()

    try:
        gdim = on_root(comm, start_and_build)
        model = None
        if comm.rank == 0:
            import gmsh

            model = gmsh.model
        partitioner = dmesh.create_cell_partitioner(_GHOST_MODE, 2)
        return dolfinx.io.gmsh.model_to_mesh(
            model, comm, 0, gdim=gdim, partitioner=partitioner
        ).mesh
    finally:
        if comm.rank == 0:
            import gmsh

            previous = state["previous"]
            if state["ours"] and gmsh.isInitialized():
                gmsh.finalize()
            elif previous is not None:
                gmsh.model.remove()
                if previous[0]:
                    gmsh.model.setCurrent(previous[0])
                gmsh.option.setNumber("General.Terminal", previous[1])


def _set_size(h: float) -> None:
    """Make gmsh use the element size ``h`` everywhere (no size from points or curvature)."""
    import gmsh

    gmsh.option.setNumber("General.NumThreads", 1)  # reproducible meshes
    gmsh.option.setNumber("Mesh.MeshSizeFromPoints", 0)
    gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
    gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 0)
    gmsh.option.setNumber("Mesh.MeshSizeMin", h)
    gmsh.option.setNumber("Mesh.MeshSizeMax", h)
    gmsh.option.setNumber("Mesh.ElementOrder", 1)


def _mesh_surface(surface: int, h: float) -> int:
    """Mesh the synchronised model in 2D and tag ``surface`` as the domain; return gdim 2."""
    import gmsh

    _set_size(h)
    try:
        gmsh.model.mesh.generate(2)
    except Exception as err:
        raise RuntimeError(f"gmsh failed to mesh with h = {h!r}: {err}") from err
    gmsh.model.addPhysicalGroup(2, [surface], tag=1, name="domain")
    return 2


def _build_disk(h: float) -> int:
    """Unit disk centred at the origin, in the current gmsh model."""
    import gmsh

    surface = gmsh.model.occ.addDisk(0.0, 0.0, 0.0, 1.0, 1.0)
    gmsh.model.occ.synchronize()
    return _mesh_surface(surface, h)


def _build_lshape(h: float) -> int:
    """[-1,1]^2 minus [0,1]x[-1,0], in the current gmsh model (built-in kernel)."""
    import gmsh

    geo = gmsh.model.geo
    corners = [(-1.0, -1.0), (0.0, -1.0), (0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (-1.0, 1.0)]
    points = [geo.addPoint(x, y, 0.0) for x, y in corners]
    lines = [geo.addLine(points[i], points[(i + 1) % len(points)]) for i in range(len(points))]
    surface = geo.addPlaneSurface([geo.addCurveLoop(lines)])
    geo.synchronize()
    return _mesh_surface(surface, h)


def _load_msh(path: str, cells: list[int | str], used: list[Any]) -> int:
    """Read a ``.msh`` file into the current gmsh model and prepare it for ``model_to_mesh``.

    ``cells`` selects physical groups (see the module docstring); the groups used are appended
    to ``used`` (``None`` when the file has none and every cell is taken).
    """
    import gmsh

    # gmsh guesses the format from the content: a ".msh" that does not start with $MeshFormat
    # would be parsed (and run) as a .geo script, so refuse it before gmsh sees it.
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
    except OSError as err:
        raise RuntimeError(f"cannot read mesh file '{path}': {err}") from err
    if not head.startswith(b"$MeshFormat"):
        raise RuntimeError(f"mesh file '{path}' is not a Gmsh .msh file (no $MeshFormat header)")
    try:
        gmsh.merge(path)
    except Exception as err:
        raise RuntimeError(f"gmsh could not read mesh file '{path}': {err}") from err

    mesh_api = gmsh.model.mesh
    tdim = next((d for d in (3, 2) if len(mesh_api.getElementTypes(dim=d)) > 0), None)
    if tdim is None:
        raise ValueError(f"mesh file '{path}' has no 2D or 3D cells (triangles or tetrahedra)")
    family = "Tetrahedron" if tdim == 3 else "Triangle"
    high_order = False
    for element_type in mesh_api.getElementTypes(dim=tdim):
        name, _, order, *_ = mesh_api.getElementProperties(element_type)
        if not name.startswith(family):
            raise ValueError(
                f"mesh file '{path}' has {name} cells; only triangles (2D) or tetrahedra (3D) "
                "are supported"
            )
        high_order = high_order or order > 1
    if high_order:
        mesh_api.setOrder(1)

    # model_to_mesh needs every top-dimensional element in exactly one physical group, and node
    # tags 1..N without gaps; a file may have neither.
    entities = _select_groups(path, tdim, cells, used)
    gmsh.model.removePhysicalGroups()
    gmsh.model.addPhysicalGroup(tdim, entities, tag=1, name="domain")
    mesh_api.renumberNodes()

    if tdim == 2:
        _, x, _ = mesh_api.getNodes()
        x = np.asarray(x).reshape(-1, 3)
        scale = max(1.0, float(np.abs(x).max(initial=0.0)))
        z = float(np.abs(x[:, 2]).max(initial=0.0))
        if z > 1e-12 * scale:
            raise ValueError(
                f"mesh file '{path}' is a surface mesh in 3D (|z| up to {z:g}); a 2D mesh must "
                "lie in the plane z = 0"
            )
    return tdim


def _select_groups(path: str, tdim: int, cells: list[int | str], used: list[Any]) -> list[int]:
    """The gmsh entities of dimension ``tdim`` that form the domain (see ``_load_msh``)."""
    import gmsh

    model = gmsh.model
    groups = {tag: model.getPhysicalName(tdim, tag) for _, tag in model.getPhysicalGroups(tdim)}
    if not groups:
        if cells:
            raise ValueError(
                f"mesh.cells = {cells!r}, but mesh file '{path}' has no {tdim}D physical groups"
            )
        used.append(None)
        return [tag for _, tag in model.getEntities(tdim)]
    by_name = {name: tag for tag, name in groups.items() if name}
    chosen: list[int] = []
    for c in cells or sorted(groups):
        tag = by_name.get(c) if isinstance(c, str) else c
        if tag not in groups:
            present = ", ".join(
                f"{t} ({groups[t]!r})" if groups[t] else str(t) for t in sorted(groups)
            )
            raise ValueError(
                f"mesh.cells: no {tdim}D physical group {c!r} in mesh file '{path}'; "
                f"its {tdim}D groups are {present}"
            )
        if tag not in chosen:
            chosen.append(tag)
    used.append([{"tag": int(t), "name": groups[t]} for t in chosen])
    entities = {e for t in chosen for e in model.getEntitiesForPhysicalGroup(tdim, t)}
    ents = sorted(int(e) for e in entities)
    # Cells outside the chosen groups must not reach model_to_mesh, nor their nodes the mesh.
    for _, tag in model.getEntities(tdim):
        if tag not in entities:
            model.mesh.removeElements(tdim, tag)
    model.mesh.reclassifyNodes()
    return ents


# --------------------------------------------------------------------------------------------
# XDMF: DOLFINx reads the file (in parallel); rank 0 only picks the grid and checks what the
# reader would otherwise report as a crash or as a screenful of HDF5 error stack.


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


def _read_xdmf(path: str, comm: MPI.Comm) -> dolfinx.mesh.Mesh:
    """Read the mesh grid of a DOLFINx XDMF file. Collective."""
    name, tdim = on_root(comm, lambda: _inspect_xdmf(path))
    try:
        with dolfinx.io.XDMFFile(comm, path, "r") as xdmf:
            msh = xdmf.read_mesh(ghost_mode=_GHOST_MODE, name=name)
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
        msh = _drop_z(msh)
    return msh


def _drop_z(msh: dolfinx.mesh.Mesh) -> dolfinx.mesh.Mesh:
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
    partitioner = dmesh.create_cell_partitioner(_GHOST_MODE, 2)
    return dmesh.create_mesh(msh.comm, cells, element, x, partitioner=partitioner)


# --------------------------------------------------------------------------------------------
# Summary


def describe(msh: dolfinx.mesh.Mesh) -> dict[str, Any]:
    """Global summary of a mesh. Collective.

    Args:
        msh: The mesh.

    Returns:
        ``cells`` and ``vertices`` (global counts), ``gdim``, ``hmax`` and ``hmin`` (largest
        and smallest cell diameter, i.e. longest edge, over all cells) and ``bbox``
        (``[[lower corner], [upper corner]]`` over all ranks); plain Python numbers. For a
        ``.msh`` file also ``physical_groups``: the groups whose cells form the domain, as
        ``[{"tag": ..., "name": ...}]``, or ``None`` when the file has none.
    """
    comm = msh.comm
    tdim = msh.topology.dim
    gdim = msh.geometry.dim
    num_local = msh.topology.index_map(tdim).size_local
    h = msh.h(tdim, np.arange(num_local, dtype=np.int32))
    hmax = comm.allreduce(float(h.max(initial=-np.inf)), op=MPI.MAX)
    hmin = comm.allreduce(float(h.min(initial=np.inf)), op=MPI.MIN)
    lo, hi = global_bbox(msh.geometry.x[:, :gdim], comm)
    info: dict[str, Any] = {
        "cells": int(msh.topology.index_map(tdim).size_global),
        "vertices": int(msh.topology.index_map(0).size_global),
        "gdim": int(gdim),
        "hmax": hmax,
        "hmin": hmin,
        "bbox": [lo.tolist(), hi.tolist()],
    }
    if msh in _GROUPS:
        info["physical_groups"] = _GROUPS[msh]
    return info
