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

Gmsh runs on rank 0 only (:mod:`beckmann.mesh_gmsh`), and the mesh is then distributed; XDMF
files are read by :mod:`beckmann.mesh_xdmf`. All errors are collective: the check
runs on rank 0, the outcome is broadcast, and every rank raises the same ``ValueError`` (bad
argument or unsupported file content) or ``RuntimeError`` (unreadable file, gmsh failure) before
any collective DOLFINx call starts, so ``mpirun -n 4`` never hangs on a bad input.

Before anything is allocated, the memory of the mesh (and, given the degree, of the solve) is
estimated (:func:`beckmann._resources.solve_bytes`); a request larger than the machine is a
``ValueError`` naming the option to lower.
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from beckmann import mesh_gmsh
from beckmann._dolfinx import MPI, dmesh, dolfinx
from beckmann._mpi import global_bbox, on_root
from beckmann._resources import regular_file, require_memory, solve_bytes
from beckmann.config import OPTIONS
from beckmann.mesh_xdmf import read_xdmf

__all__ = ["KINDS", "create_mesh", "describe", "p1_dof_nodes"]

KINDS: tuple[str, ...] = ("unit_square", "unit_cube", "disk", "lshape", "file")
"""The values ``section["kind"]`` may take."""

_GHOST_MODE = dmesh.GhostMode.shared_facet
#: Physical groups a mesh was built from ({"tag", "name"} dicts), for :func:`describe`.
_GROUPS: weakref.WeakKeyDictionary[Any, list[dict[str, Any]] | None] = weakref.WeakKeyDictionary()
_DESCRIBED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
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
        return mesh_gmsh.disk(comm, cfg["h"], ghost_mode=_GHOST_MODE)
    if kind == "lshape":
        return mesh_gmsh.lshape(comm, cfg["h"], ghost_mode=_GHOST_MODE)
    if cfg["path"].lower().endswith(".msh"):
        msh, groups = mesh_gmsh.read_msh(comm, cfg["path"], cfg["cells"], ghost_mode=_GHOST_MODE)
        _GROUPS[msh] = groups
        return msh
    return read_xdmf(cfg["path"], comm, ghost_mode=_GHOST_MODE)


# --------------------------------------------------------------------------------------------
# Summary


def p1_dof_nodes(V: Any) -> np.ndarray | None:
    """The geometry node of every local dof (owned, then ghost) of scalar P1 ``V``, or ``None``.

    On an affine mesh a P1 cell's dofs and its geometry nodes are its vertices in the same
    reference order, so the map is one scatter through the two dofmaps (no dof coordinates
    pushed forward). ``None`` when ``V`` is not scalar continuous P1 or the mesh not affine.
    Not collective.
    """
    msh, el = V.mesh, V.element.basix_element
    if el.degree != 1 or el.discontinuous or V.dofmap.bs != 1 or msh.geometry.cmaps[0].degree != 1:
        return None
    im = V.dofmap.index_map
    node = np.empty(im.size_local + im.num_ghosts, dtype=np.int32)
    node[V.dofmap.list] = msh.geometry.dofmaps[0]
    return node


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

    The result is computed once per mesh (a mesh's geometry is never moved here) and a copy is
    returned: every rank calls this the same number of times, so the cache stays collective.
    """
    if msh in _DESCRIBED:
        return copy.deepcopy(_DESCRIBED[msh])
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
    _DESCRIBED[msh] = info
    return copy.deepcopy(info)
