"""gmsh meshes: the built-in ``disk`` and ``lshape`` domains and ``.msh`` files.

gmsh runs on rank 0 only; the mesh is then distributed by DOLFINx (``model_to_mesh``). A
``.msh`` file's cells are selected by physical group (``mesh.cells``; by default, as gmsh does
when it saves a mesh, only the cells in some group when the file has groups of the cells'
dimension). Errors are raised on rank 0 inside :func:`beckmann._mpi.on_root`, so every rank
raises the same one. :mod:`beckmann.mesh` documents the domains and calls these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from beckmann._dolfinx import MPI, dmesh, dolfinx
from beckmann._mpi import on_root

__all__ = ["disk", "lshape", "read_msh"]


def disk(comm: MPI.Comm, h: float, *, ghost_mode: dmesh.GhostMode) -> dolfinx.mesh.Mesh:
    """The unit disk centred at the origin, meshed by gmsh with element size ``h``. Collective."""
    return _gmsh_mesh(comm, lambda: _build_disk(h), ghost_mode)


def lshape(comm: MPI.Comm, h: float, *, ghost_mode: dmesh.GhostMode) -> dolfinx.mesh.Mesh:
    """The L-shape [-1,1]^2 minus [0,1]x[-1,0], gmsh element size ``h``. Collective."""
    return _gmsh_mesh(comm, lambda: _build_lshape(h), ghost_mode)


def read_msh(
    comm: MPI.Comm, path: str, cells: list[int | str], *, ghost_mode: dmesh.GhostMode
) -> tuple[dolfinx.mesh.Mesh, list[dict[str, Any]] | None]:
    """Read a gmsh ``.msh`` file on rank 0 and distribute it. Collective.

    Args:
        comm: The communicator the mesh is distributed over.
        path: The ``.msh`` file (checked to be a regular file by the caller).
        cells: Physical tags or names selecting the domain's cells; ``[]`` for gmsh's default
            (the grouped cells, or every cell of a file without physical groups).
        ghost_mode: The ghost mode of the distributed mesh.

    Returns:
        The mesh and, on every rank, the physical groups used (``[{"tag", "name"}]``), or
        ``None`` when the file has no physical groups of the cells' dimension.

    Raises:
        ValueError: On every rank, for unsupported cells, an unknown group, a 2D mesh off
            ``z = 0``.
        RuntimeError: On every rank, when the file is not a gmsh file or gmsh cannot read it.
    """
    groups: list[Any] = []
    msh = _gmsh_mesh(comm, lambda: _load_msh(path, cells, groups), ghost_mode)
    return msh, comm.bcast(groups[0] if groups else None, root=0)


def _gmsh_mesh(
    comm: MPI.Comm, build: Callable[[], int], ghost_mode: dmesh.GhostMode
) -> dolfinx.mesh.Mesh:
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
        partitioner = dmesh.create_cell_partitioner(ghost_mode, 2)
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
