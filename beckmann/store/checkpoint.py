"""Checkpoints of Lagrange functions that reload exactly on any number of ranks.

A checkpoint folder holds::

    checkpoint.json   format, version, element, field names, writer ranks, cell and dof offsets,
                      the mesh file, and the caller's metadata (strict JSON)
    rank<r>.h5        what writer rank ``r`` owns: ``dofmap`` (its owned cells' dofs in global
                      numbering, local order) and one dataset per field (its owned dofs)
    mesh.xdmf/.h5     the mesh (DOLFINx's writer), unless ``mesh_file`` names another XDMF file
                      that holds it (a run folder's ``solution.xdmf``: the mesh is written once)

Every rank writes its own share with serial h5py; nothing is gathered.

**P1 fields already in the run's XDMF file** (``layout = "vertex"``): a P1 function on a linear
mesh is written by DOLFINx's XDMF writer exactly, one value per geometry node in the file's node
order (``/Function/NAME/0`` beside ``/Mesh/mesh/geometry``). Then the checkpoint writes no
values at all: ``checkpoint.json`` names those datasets, and a reload maps each local geometry
node to its row in the file (``geometry.input_global_indices``, exact integers) and each P1 dof
to its node through the cells (a P1 cell's dofs and its geometry nodes are both its vertices in
reference order). At 1M P1 dofs this takes the write from ~0.4 s (dofmap + three fields) to the
JSON index.

**Exact keys, no coordinates.** DOLFINx writes the cells of a mesh to XDMF in the order of their
global index (rank 0's owned cells, then rank 1's, ...), and a mesh read back from the file knows
each cell's row there (``topology.original_cell_index``) and keeps each cell's vertex order. So a
dof is named exactly by (original cell, position in the cell's dof list): see
:func:`cell_dofs` for why edge-dof permutations do not change that. On reload each rank reads
the ``dofmap`` rows of its cells (owned and ghost) and the values of exactly the dofs they name,
from the files and row ranges that hold them, in blocks: memory O(its share), no k-d tree, no
tolerance.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, dmesh, dolfinx, fem
from beckmann._mpi import agree, on_root
from beckmann.store.jsonio import read_json, write_json
from beckmann.store.writes import before_collective_write, write_on_each, write_on_root

__all__ = [
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "cell_dofs",
    "cells_with_ghosts",
    "owned_dofmap",
    "read_checkpoint",
    "read_rows",
    "write_checkpoint",
    "writer_dofs",
]

CHECKPOINT_VERSION = 2
_FORMAT = "beckmann-checkpoint"
_INDEX = "checkpoint.json"
_BLOCK = 1 << 20  # rows read at a time on reload
IntArray = npt.NDArray[np.int64]


@dataclass
class Checkpoint:
    """A reloaded checkpoint: the mesh, the functions by name, and the writer's metadata."""

    msh: dmesh.Mesh
    functions: dict[str, fem.Function]
    meta: dict[str, Any] = field(default_factory=dict)


def cells_with_ghosts(msh: dmesh.Mesh) -> int:
    """The number of this rank's cells, owned and ghost."""
    cmap = msh.topology.index_map(msh.topology.dim)
    return int(cmap.size_local + cmap.num_ghosts)


def cell_dofs(V: fem.FunctionSpace, ncells: int) -> IntArray:
    """``V``'s dofs (block indices) of the first ``ncells`` local cells, in local order.

    Local position ``i`` of a cell is always the basis function of reference point ``X_i``
    mapped by the cell's geometry: DOLFINx makes edge and face dofs agree between neighbouring
    cells by permuting which *global* dof sits at a position, never the positions' meaning. So
    (cell, position) names the same dof on any partition, provided the cell keeps its vertex
    order, which DOLFINx's XDMF reader does.
    """
    return np.asarray(V.dofmap.list[:ncells], dtype=np.int64)


def owned_dofmap(V: fem.FunctionSpace) -> npt.NDArray[np.integer[Any]]:
    """The dofs (global block indices) of the rank's owned cells, in local order. Not collective.

    Row ``c`` belongs to the owned cell ``c``: written by every rank in rank order, the rows
    are in the order of the cells' global index (the mesh file's row order, module docstring).
    int32 while the global count allows it.
    """
    imap = V.dofmap.index_map
    ref = cell_dofs(V, V.mesh.topology.index_map(V.mesh.topology.dim).size_local)
    glob = imap.local_to_global(ref.ravel().astype(np.int32)).reshape(ref.shape)
    return glob.astype(np.int32 if imap.size_global < 2**31 else np.int64)


def _vertex_datasets(
    V: fem.FunctionSpace, names: list[str], mesh_file: Path
) -> dict[str, str] | None:
    """``{field: dataset}`` of P1 fields DOLFINx wrote into ``mesh_file``'s HDF5, or ``None``.

    ``None`` unless ``V`` is scalar P1 on a linear mesh and ``mesh_file``'s XML (what ParaView
    reads) gives every field as one node-centred attribute of one value per geometry node, in
    an HDF5 dataset. Read from the XML, so the write path needs no h5py. Rank 0 only.
    """
    import xml.etree.ElementTree as ET

    el = V.ufl_element()
    msh = V.mesh
    if (el.discontinuous or el.embedded_superdegree != 1 or V.value_shape
            or msh.geometry.cmaps[0].degree != 1):  # fmt: skip
        return None
    root = ET.parse(mesh_file).getroot()
    geometry = root.find("./Domain/Grid[@Name='mesh']/Geometry/DataItem")
    if geometry is None:
        return None
    rows = (geometry.get("Dimensions") or "").split()[:1]
    h5name = mesh_file.with_suffix(".h5").name
    out = {}
    for name in names:
        items = root.findall(f"./Domain/Grid[@Name='{name}']/Grid/Attribute[@Name='{name}']")
        item = items[0].find("DataItem") if len(items) == 1 else None
        if (item is None or items[0].get("Center") != "Node"
                or (item.get("Format") or "").upper() != "HDF"
                or (item.get("Dimensions") or "").split() != [*rows, "1"]):  # fmt: skip
            return None
        file, _, dataset = (item.text or "").strip().partition(":")
        if file != h5name or not dataset:
            return None
        out[name] = dataset.lstrip("/")
    return out


def write_checkpoint(
    folder: str | Path,
    functions: Mapping[str, fem.Function],
    meta: dict[str, Any] | None = None,
    *,
    mesh_file: str | Path | None = None,
    vertex_fields: bool = False,
) -> None:
    """Write Lagrange functions of one space so that any rank count reloads them; collective.

    Args:
        folder: The checkpoint folder (created; files in it are replaced).
        functions: Named functions, all in the same (scalar or vector) Lagrange space.
        meta: JSON-able metadata returned by :func:`read_checkpoint`.
        mesh_file: An XDMF file, already written by DOLFINx from this very mesh object with the
            grid name ``mesh``, to refer to instead of writing the mesh again.
        vertex_fields: The functions are also in ``mesh_file``, each written there once under
            its key by DOLFINx's ``write_function``. For scalar P1 functions the checkpoint then
            refers to those datasets instead of writing the values again (other spaces: the
            per-rank files as usual).

    Raises:
        ValueError: No functions, or functions on different spaces.
        RuntimeError: On every rank, when a rank cannot write its file.
    """
    if not functions:
        raise ValueError("a checkpoint needs at least one function")
    V = next(iter(functions.values())).function_space
    for name, u in functions.items():
        if u.function_space != V:
            raise ValueError(f"checkpoint field {name!r} is not on the same space as the others")
    msh = V.mesh
    comm = msh.comm
    folder = Path(folder)
    write_on_root(comm, "checkpoint", lambda: folder.mkdir(parents=True, exist_ok=True))
    if mesh_file is None:
        before_collective_write(comm, "checkpoint mesh")
        with dolfinx.io.XDMFFile(comm, str(folder / "mesh.xdmf"), "w") as f:
            f.write_mesh(msh)
        mesh_ref = "mesh.xdmf"
    else:
        mesh_ref = os.path.relpath(Path(mesh_file), folder)
        if vertex_fields:
            names = list(functions)
            datasets = on_root(comm, lambda: _vertex_datasets(V, names, Path(mesh_file)))
            if datasets is not None:
                index = {"format": _FORMAT, "version": CHECKPOINT_VERSION, "layout": "vertex",
                         "element": {"family": "Lagrange", "degree": 1, "shape": []},
                         "fields": names, "ranks": comm.size, "mesh": mesh_ref,
                         "datasets": datasets, "meta": meta or {}}  # fmt: skip
                write_json(folder / _INDEX, index, comm)
                return
    ncells = msh.topology.index_map(msh.topology.dim).size_local
    bs = V.dofmap.index_map_bs
    nown = V.dofmap.index_map.size_local
    glob = owned_dofmap(V)
    cell_counts = comm.allgather(ncells)
    dof_counts = comm.allgather(nown)

    import h5py  # here: a P1 checkpoint (above) needs no h5py (its import is ~0.2 s)

    def write_share() -> None:
        path = folder / f"rank{comm.rank}.h5"
        tmp = path.with_name(path.name + ".part")
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("dofmap", data=glob)
            for name, u in functions.items():
                h5.create_dataset(name, data=u.x.array[: nown * bs].reshape(nown, bs))
        os.replace(tmp, path)

    write_on_each(comm, "checkpoint", write_share)
    el = V.ufl_element()
    index = {
        "format": _FORMAT,
        "version": CHECKPOINT_VERSION,
        "element": {
            "family": "DG" if el.discontinuous else "Lagrange",
            "degree": int(el.embedded_superdegree),
            "shape": [int(n) for n in V.value_shape],
        },
        "fields": list(functions),
        "ranks": comm.size,
        "cell_offsets": np.concatenate([[0], np.cumsum(cell_counts)]).tolist(),
        "dof_offsets": np.concatenate([[0], np.cumsum(dof_counts)]).tolist(),
        "mesh": mesh_ref,
        "meta": meta or {},
    }
    write_json(folder / _INDEX, index, comm)


def _read_index(folder: Path) -> dict[str, Any]:
    path = folder / _INDEX
    if not path.is_file():
        raise RuntimeError(f"cannot read the checkpoint in {str(folder)!r}: no {_INDEX}")
    try:
        index = read_json(path)
    except (OSError, ValueError) as err:
        raise RuntimeError(f"cannot read the checkpoint in {str(folder)!r}: {err}") from err
    if not isinstance(index, dict) or index.get("format") != _FORMAT:
        raise RuntimeError(f"cannot read the checkpoint in {str(folder)!r}: not a checkpoint")
    if index.get("version") != CHECKPOINT_VERSION:
        raise RuntimeError(
            f"cannot read the checkpoint in {str(folder)!r}: format version "
            f"{index.get('version')!r}, this beckmann reads {CHECKPOINT_VERSION}"
        )
    vertex = index.get("layout") == "vertex"
    ranks = range(0 if vertex else int(index["ranks"]))
    missing = [f"rank{r}.h5" for r in ranks if not (folder / f"rank{r}.h5").is_file()]
    if not (folder / index["mesh"]).is_file():
        missing.append(index["mesh"])
    if missing:
        raise RuntimeError(
            f"cannot read the checkpoint in {str(folder)!r}: missing {', '.join(missing)}"
        )
    from beckmann._resources import check_hdf5  # a damaged file is named, not HDF5-DIAG'd

    for name in [f"rank{r}.h5" for r in ranks] + [str(Path(index["mesh"]).with_suffix(".h5"))]:
        check_hdf5(folder / name, "checkpoint file")
    return index


def _read_hull(ds: Any, mine: IntArray, parts: list[npt.NDArray[Any]]) -> None:
    """Append rows ``mine`` (sorted, unique) of ``ds`` to ``parts``: their hull, in blocks."""
    start = int(mine[0])
    while start <= mine[-1]:
        stop = min(start + _BLOCK, int(mine[-1]) + 1)
        lo, hi = np.searchsorted(mine, [start, stop])
        if hi > lo:
            block = ds[start:stop]
            whole = hi - lo == stop - start  # every row of the block (sorted, unique)
            parts.append(block if whole else block[mine[lo:hi] - start])
        start = int(mine[hi]) if hi < mine.size else stop


def read_rows(
    file: Path | Callable[[int], Path],
    offsets: list[int],
    wanted: IntArray,
    dataset: str,
    check: Callable[[Any, int], None] | None = None,
    handles: dict[int, Any] | None = None,
) -> npt.NDArray[Any]:
    """Rows ``wanted`` (sorted, unique, global) of ``dataset`` split over per-rank files.

    Writer rank ``r`` holds rows ``offsets[r]:offsets[r + 1]`` in ``file(r)`` (a folder:
    ``rank<r>.h5`` in it). Only the files and row ranges that hold wanted rows are read, in
    blocks. ``check(h5, r)`` may raise on a file that is not what the caller expects. Not
    collective. ``handles``: files kept open between calls (rank -> open file; the caller
    closes them): a file in it is neither opened nor checked again, one opened here is added.
    """
    import h5py

    path = file if callable(file) else (lambda r, d=Path(file): d / f"rank{r}.h5")
    parts: list[npt.NDArray[Any]] = []
    bounds = np.searchsorted(wanted, offsets)
    for r in range(len(offsets) - 1):
        mine = wanted[bounds[r] : bounds[r + 1]] - offsets[r]
        if mine.size == 0:
            continue
        h5 = None if handles is None else handles.get(r)
        if h5 is None:
            try:
                h5 = h5py.File(path(r), "r")
            except OSError as err:  # name the file (h5py's message does not)
                shown = f"{path(r).parent.name}/{path(r).name}"
                raise OSError(f"{shown}: {' '.join(str(err).split())}") from err
            try:
                if check is not None:
                    check(h5, r)
            except BaseException:
                h5.close()
                raise
            if handles is not None:
                handles[r] = h5
        try:
            ds = h5[dataset]
            if ds.shape[0] != offsets[r + 1] - offsets[r]:
                raise RuntimeError(f"{path(r).name}: {dataset} has {ds.shape[0]} rows, expected "
                                   f"{offsets[r + 1] - offsets[r]}")
            _read_hull(ds, mine, parts)
        finally:
            if handles is None:
                h5.close()
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros((0,))


def writer_dofs(rows: npt.NDArray[Any], ref: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """``(need, loc, src)``: the writer's dofs to read and where their values go.

    ``rows``: the writer's dofmap rows of the local cells whose local dofs are ``ref``
    (``cell_dofs``). ``need`` (sorted, unique) are the writer dofs to read; then
    ``u[loc] = vals[src]`` fills each local dof ``loc`` (sorted, unique) once. Not collective.

    Raises:
        RuntimeError: The rows do not fit the cells (another element or mesh), or one local dof
            is named by two different writer dofs (the cells do not match).
    """
    if rows.shape != ref.shape:
        raise RuntimeError(f"dofmap rows have shape {rows.shape}, expected {ref.shape}")
    if rows.size and np.array_equal(rows, ref):  # the writer's numbering (a serial reload)
        ramp = np.arange(int(ref.max()) + 1, dtype=np.int64)
        if np.bincount(ref.ravel(), minlength=ramp.size).all():  # every dof in a cell
            return ramp, ramp, ramp
    need, inv = np.unique(np.asarray(rows, dtype=np.int64).ravel(), return_inverse=True)
    flat = ref.ravel()
    loc, first = np.unique(flat, return_index=True)
    src = inv[first]
    if not np.array_equal(src[np.searchsorted(loc, flat)], inv):
        raise RuntimeError("the stored dofmap does not fit this mesh's dofs: the mesh is not the "
                           "one written")
    return need, loc.astype(np.int64), src


def _read_vertex_fields(
    folder: Path, index: dict[str, Any], V: fem.FunctionSpace
) -> dict[str, fem.Function]:
    """The P1 fields of a ``layout = "vertex"`` checkpoint, from the mesh file's datasets."""
    import h5py

    msh = V.mesh
    ncells = cells_with_ghosts(msh)
    # dof -> geometry node through the cells (both lists are the vertices in reference order),
    # node -> row of the file (exact)
    node = np.empty(V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts, np.int64)
    node[V.dofmap.list[:ncells].ravel()] = msh.geometry.dofmaps[0][:ncells].ravel()
    row = np.asarray(msh.geometry.input_global_indices, dtype=np.int64)[node]
    need, pos = np.unique(row, return_inverse=True)
    functions = {}
    with h5py.File((folder / index["mesh"]).with_suffix(".h5"), "r") as h5:
        rows = h5["Mesh/mesh/geometry"].shape[0]
        for name in index["fields"]:
            ds = h5[index["datasets"][name]]
            if ds.shape != (rows, 1):
                raise RuntimeError(f"{index['datasets'][name]} has shape {ds.shape}, expected "
                                   f"{(rows, 1)}")
            parts: list[npt.NDArray[Any]] = []
            if need.size:
                _read_hull(ds, need, parts)
            u = fem.Function(V, name=name)
            if parts:
                u.x.array[:] = np.concatenate(parts)[:, 0][pos]
            functions[name] = u
    return functions


def _read_cell_fields(
    folder: Path, index: dict[str, Any], V: fem.FunctionSpace
) -> dict[str, fem.Function]:
    """The fields of a per-rank checkpoint, keyed by (original cell, position in the cell)."""
    msh = V.mesh
    ncells = cells_with_ghosts(msh)
    original = np.asarray(msh.topology.original_cell_index, dtype=np.int64)[:ncells]
    ref = cell_dofs(V, ncells)
    bs = V.dofmap.index_map_bs
    cells, cell_pos = np.unique(original, return_inverse=True)
    rows = read_rows(folder, index["cell_offsets"], cells, "dofmap")
    if rows.shape[0] != cells.size:
        raise RuntimeError(f"{rows.shape[0]} dofmap rows read, expected {cells.size}")
    need, loc, src = writer_dofs(rows[cell_pos], ref)
    functions = {}
    for name in index["fields"]:
        vals = read_rows(folder, index["dof_offsets"], need, name).reshape(need.size, bs)
        u = fem.Function(V, name=name)
        u.x.array.reshape(-1, bs)[loc] = vals[src]
        functions[name] = u
    return functions


def read_checkpoint(
    folder: str | Path, comm: MPI.Comm, msh: dmesh.Mesh | None = None
) -> Checkpoint:
    """Reload a checkpoint on ``comm`` (any number of ranks); collective.

    ``msh``: the mesh already read from this checkpoint's mesh file (another checkpoint of the
    same run, e.g. a mixed run's DG fields), so that all functions share one mesh object.

    Raises:
        RuntimeError: On every rank, when the checkpoint is missing, of another format version,
            incomplete or corrupt.
    """
    folder = Path(folder)
    index = on_root(comm, lambda: _read_index(folder))
    if msh is None:
        mesh_file = folder / index["mesh"]
        try:  # the same file on every rank: every rank raises
            with dolfinx.io.XDMFFile(comm, str(mesh_file), "r") as f:
                msh = f.read_mesh(name="mesh")
        except RuntimeError as err:
            raise RuntimeError(f"cannot read the mesh of {str(mesh_file)!r}: {err}") from err
    el = index["element"]
    shape = tuple(el["shape"])
    family = el.get("family", "Lagrange")  # "DG": discontinuous Lagrange (mixed runs)
    if family not in ("Lagrange", "DG"):  # the index is the same on every rank
        raise RuntimeError(f"cannot read the checkpoint in {str(folder)!r}: element family "
                           f"{family!r} is neither Lagrange nor DG")
    V = fem.functionspace(msh, (family, el["degree"], shape) if shape else
                          (family, el["degree"]))
    functions: dict[str, fem.Function] = {}
    error = None
    try:
        if index.get("layout") == "vertex":
            functions = _read_vertex_fields(folder, index, V)
        else:
            functions = _read_cell_fields(folder, index, V)
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        error = f"cannot read the checkpoint in {str(folder)!r}: {' '.join(str(err).split())}"
    agree(comm, error, RuntimeError)
    for u in functions.values():
        u.x.scatter_forward()
    return Checkpoint(msh, functions, dict(index["meta"]))
