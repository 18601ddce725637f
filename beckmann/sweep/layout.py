"""The dof layouts of a sweep store: what each writer rank's share of an entry holds, written once.

A θ entry holds, per writer rank, only that rank's owned values (:mod:`beckmann.sweep.entries`).
What those values are, the *distribution* of the group that wrote them, is stored once per store
and named by every entry (attribute ``layout``)::

    layout/d0/mesh.xdmf, mesh.h5   the mesh, written by the first distribution's group
    layout/d<k>/layout.json        writer ranks, cell offsets, per space (potential, flux) the
                                   element and the dof offsets, one fingerprint per writer rank
    layout/d<k>/rank<r>.h5         ``cells``: the mesh's original cell index of rank r's owned
                                   cells; ``potential``, ``flux``: their dofs (global numbering,
                                   local order, :func:`beckmann.store.checkpoint.owned_dofmap`);
                                   ``x``: the coordinates of rank r's owned potential dofs

This is the checkpoint format (:mod:`beckmann.store.checkpoint`) with the dofmap written once
instead of per θ: at n = 512 P1 the dofmaps are 12.6 MB, the values of one θ 2.1 MB (φ) + 8.4 MB
(F). A dof is keyed exactly by (cell, position in the cell), never by coordinates.

**Distributions.** A group of ranks that builds the mesh from the config gets a partition and a
dof numbering; groups of one size get the same one (the partitioner is deterministic: checked
here on 4 ranks in groups of 2), so a sweep has one distribution, unless ``--resume`` runs with
another group size. The fingerprint (SHA-256 of a rank's ``cells`` and dofmaps) decides: a group
whose fingerprints match a stored distribution writes no layout; another gets a new one.

**Reading** (:class:`Layouts`): the store's mesh is read from ``d0/mesh.xdmf``, whose rows are
d0's global cell indices, i.e. a reader's ``original_cell_index``. So against d0 a rank reads the
dofmap rows of its cells only, then the values of the dofs they name (memory O(its share)). For
another distribution, or a space on a mesh built independently from the config (its
``original_cell_index`` is the generator's index, as d<k>'s ``cells``), the rows are found by
the inverse of that distribution's ``cells``: O(number of cells) integers per rank, read once;
the dofs' points are then checked against the stored ones (:data:`POINT_TOL`), so that a mesh
whose original cell index means something else (read from another file) is refused, not
misread.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, dolfinx, fem
from beckmann._mpi import collective, on_root
from beckmann.store.checkpoint import (
    cell_dofs,
    cells_with_ghosts,
    owned_dofmap,
    read_rows,
    writer_dofs,
)
from beckmann.store.jsonio import read_json, write_json
from beckmann.store.writes import before_collective_write, write_on_each, write_on_root

__all__ = ["LAYOUT", "Layouts", "Share", "layout_dir", "register_layout", "share_of"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: The store's sub-folder of layouts.
LAYOUT = "layout"
_INDEX = "layout.json"
_FORMAT = "beckmann-sweep-layout"
_VERSION = 1
SPACES = ("potential", "flux")
#: Relative distance up to which a dof's point equals the stored one (a check only).
POINT_TOL = 1e-10


def layout_dir(folder: Path, d: int) -> Path:
    """The folder of distribution ``d``."""
    return Path(folder) / LAYOUT / f"d{int(d)}"


@dataclass
class Share:
    """What one writer rank contributes to a layout."""

    cells: IntArray
    dofmaps: dict[str, npt.NDArray[np.integer[Any]]]
    counts: dict[str, int]
    elements: dict[str, dict[str, Any]]
    x: FloatArray
    fingerprint: str


def _element(V: fem.FunctionSpace) -> dict[str, Any]:
    el = V.ufl_element()
    return {"family": "DG" if el.discontinuous else "Lagrange",
            "degree": int(el.embedded_superdegree),
            "shape": [int(n) for n in V.value_shape]}  # fmt: skip


def share_of(spaces: dict[str, fem.FunctionSpace], x: FloatArray) -> Share:
    """This rank's share of the layout of ``spaces`` (one mesh); ``x``: owned dof coordinates."""
    msh = next(iter(spaces.values())).mesh
    ncells = msh.topology.index_map(msh.topology.dim).size_local
    cells = np.asarray(msh.topology.original_cell_index[:ncells], dtype=np.int64)
    dofmaps = {k: owned_dofmap(V) for k, V in spaces.items()}
    counts = {k: int(V.dofmap.index_map.size_local) for k, V in spaces.items()}
    h = hashlib.sha256(cells.tobytes())
    for k in sorted(spaces):
        h.update(f"{k}:{counts[k]}:{_element(spaces[k])}".encode())
        h.update(np.ascontiguousarray(dofmaps[k], dtype=np.int64).tobytes())
    elements = {k: _element(V) for k, V in spaces.items()}
    return Share(cells, dofmaps, counts, elements, np.ascontiguousarray(x), h.hexdigest())


def _known(folder: Path) -> dict[int, list[str]]:
    """Fingerprints of the stored distributions (unreadable ones are left out). Not collective."""
    base = Path(folder) / LAYOUT
    out: dict[int, list[str]] = {}
    if not base.is_dir():
        return out
    for p in base.iterdir():
        if p.is_dir() and p.name.startswith("d") and p.name[1:].isdigit():
            try:
                index = read_json(p / _INDEX)
                out[int(p.name[1:])] = list(index["fingerprints"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return out


def register_layout(
    folder: Path,
    spaces: dict[str, fem.FunctionSpace],
    x: FloatArray,
    gcomm: MPI.Comm,
    color: int,
    comm: MPI.Comm,
) -> int:
    """The distribution id of this group (``color`` of ``comm``), its layout written if new.

    Collective on ``comm``. A group whose fingerprints match a stored distribution writes
    nothing; a new distribution is written into ``d<k>.part`` and renamed (its mesh too when it
    is the store's first). Every rank agrees on every write (:mod:`beckmann.store.writes`).

    Raises:
        RuntimeError: On every rank, when a write fails.
    """
    share = share_of(spaces, x)
    prints = comm.allgather((color, gcomm.rank, share.fingerprint))
    groups: dict[int, dict[int, str]] = {}
    for c, r, f in prints:
        groups.setdefault(c, {})[r] = f
    wanted = {c: [g[r] for r in sorted(g)] for c, g in groups.items()}

    def assign() -> tuple[dict[int, int], dict[int, int]]:
        known = _known(folder)
        if 0 not in known:  # no mesh: nothing stored can be read, start afresh
            shutil.rmtree(Path(folder) / LAYOUT, ignore_errors=True)
            known = {}
        ids: dict[int, int] = {}
        writers: dict[int, int] = {}  # distribution -> the group that writes it
        for c in sorted(wanted):
            d = next((k for k, f in sorted(known.items()) if f == wanted[c]), None)
            if d is None:
                d = max(known, default=-1) + 1
                known[d] = wanted[c]
                writers[d] = c
            ids[c] = d
        return ids, writers

    ids, writers = on_root(comm, assign)
    d = ids[color]
    with collective(comm):  # one group's failing write reaches every group
        if writers.get(d) == color:
            _write(folder, d, share, spaces, gcomm)
    return d


def _write(
    folder: Path, d: int, share: Share, spaces: dict[str, fem.FunctionSpace], gcomm: MPI.Comm
) -> None:
    """Write distribution ``d`` of this group; collective on ``gcomm``."""
    import h5py

    final = layout_dir(folder, d)
    part = final.with_name(final.name + ".part")

    def mkdir() -> None:
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)

    write_on_root(gcomm, "layout", mkdir)
    if d == 0:
        before_collective_write(gcomm, "layout")
        with dolfinx.io.XDMFFile(gcomm, str(part / "mesh.xdmf"), "w") as f:
            f.write_mesh(next(iter(spaces.values())).mesh)

    def write_share() -> None:
        with h5py.File(part / f"rank{gcomm.rank}.h5", "w") as h5:
            h5.create_dataset("cells", data=share.cells)
            h5.create_dataset("x", data=share.x)
            for k, dm in share.dofmaps.items():
                h5.create_dataset(k, data=dm)

    write_on_each(gcomm, "layout", write_share)
    cells = gcomm.allgather(share.cells.size)
    counts = gcomm.allgather(share.counts)
    prints = gcomm.allgather(share.fingerprint)
    index = {
        "format": _FORMAT,
        "version": _VERSION,
        "ranks": gcomm.size,
        "cell_offsets": np.concatenate([[0], np.cumsum(cells)]).tolist(),
        "spaces": {
            k: {"element": share.elements[k],
                "dof_offsets": np.concatenate([[0], np.cumsum([c[k] for c in counts])]).tolist()}
            for k in share.dofmaps
        },  # fmt: skip
        "fingerprints": prints,
    }
    write_json(part / _INDEX, index, gcomm)
    write_on_root(gcomm, "layout", lambda: os.replace(part, final))


def read_index(folder: Path, d: int) -> dict[str, Any]:
    """``layout.json`` of distribution ``d``, its rank files checked. Not collective.

    Raises:
        RuntimeError: Missing, of another format, or incomplete.
    """
    base = layout_dir(folder, d)
    try:
        index = read_json(base / _INDEX)
    except (OSError, ValueError) as e:
        raise RuntimeError(f"layout d{d}: {' '.join(str(e).split())}") from e
    if not isinstance(index, dict) or index.get("format") != _FORMAT:
        raise RuntimeError(f"layout d{d}: not a beckmann sweep layout")
    missing = [f"rank{r}.h5" for r in range(int(index["ranks"]))
               if not (base / f"rank{r}.h5").is_file()]  # fmt: skip
    if missing:
        raise RuntimeError(f"layout d{d}: missing {', '.join(missing)}")
    return dict(index)


class Layouts:
    """The stored distributions of a store, read on ``comm`` (any number of ranks).

    Methods are not collective (each rank reads the rows it needs) unless stated.
    """

    def __init__(self, folder: Path, comm: MPI.Comm) -> None:
        self.folder = Path(folder)
        self.comm = comm
        self._index: dict[int, dict[str, Any]] = {}
        self._inverse: dict[int, tuple[IntArray, IntArray]] = {}
        self._rows: dict[tuple[int, str, int], tuple[IntArray, IntArray, IntArray]] = {}
        self._in_order: dict[tuple[int, str, int], bool] = {}

    def index(self, d: int) -> dict[str, Any]:
        """``layout.json`` of distribution ``d`` (read once)."""
        if d not in self._index:
            self._index[d] = read_index(self.folder, d)
        return self._index[d]

    def mesh(self) -> Any:
        """The store's mesh, distributed over ``comm``; collective."""
        from beckmann._resources import check_hdf5  # a damaged file is named, not HDF5-DIAG'd

        def check() -> None:
            self.index(0)
            check_hdf5(layout_dir(self.folder, 0) / "mesh.h5", "sweep store mesh file")

        on_root(self.comm, check)
        with dolfinx.io.XDMFFile(
            self.comm, str(layout_dir(self.folder, 0) / "mesh.xdmf"), "r"
        ) as f:
            return f.read_mesh(name="mesh")

    def element(self, space: str) -> dict[str, Any]:
        """The element of ``space`` (the same in every distribution)."""
        return dict(self.index(0)["spaces"][space]["element"])

    def offsets(self, d: int, space: str) -> list[int]:
        """Dof offsets of ``space``'s values per writer rank of distribution ``d``."""
        return list(self.index(d)["spaces"][space]["dof_offsets"])

    def file(self, d: int) -> Path:
        """The folder of distribution ``d``'s rank files."""
        return layout_dir(self.folder, d)

    def _rows_of_origin(self, d: int, origin: IntArray) -> IntArray:
        """Rows of distribution ``d`` holding the cells of original index ``origin``."""
        if d not in self._inverse:
            index = self.index(d)
            n = int(index["cell_offsets"][-1])
            allc = read_rows(self.file(d), index["cell_offsets"], np.arange(n), "cells")
            order = np.argsort(allc, kind="stable")
            self._inverse[d] = (np.asarray(allc[order], dtype=np.int64), order)
        keys, order = self._inverse[d]
        pos = np.minimum(np.searchsorted(keys, origin), max(keys.size - 1, 0))
        if keys.size == 0 or not np.array_equal(keys[pos], origin):
            raise RuntimeError("the mesh's cells are not the store's (another mesh?)")
        return np.asarray(order[pos], dtype=np.int64)

    def dofs(self, d: int, space: str, V: fem.FunctionSpace, own_mesh: bool) -> tuple[
        IntArray, IntArray, IntArray
    ]:
        """``(need, loc, src)`` of ``V`` against distribution ``d``'s ``space`` values.

        ``need``: the writer dofs to read (sorted); ``u[loc] = vals[src]`` fills the local dofs
        of the local cells, ghosts included (:func:`~beckmann.store.checkpoint.writer_dofs`).
        ``own_mesh``: ``V`` is on :meth:`mesh` (its original cell index is d0's row).

        Raises:
            RuntimeError: The layout does not fit ``V``.
        """
        key = (d, space, id(V))
        if key not in self._rows:
            msh = V.mesh
            ncells = cells_with_ghosts(msh)
            original = np.asarray(msh.topology.original_cell_index, dtype=np.int64)[:ncells]
            if own_mesh and d == 0:
                rows = original
            else:
                origin = original
                if own_mesh:  # d0's row -> the generator's cell index
                    u, inv = np.unique(original, return_inverse=True)
                    idx0 = self.index(0)
                    origin = np.asarray(
                        read_rows(self.file(0), idx0["cell_offsets"], u, "cells"), np.int64
                    )[inv]
                rows = self._rows_of_origin(d, origin)
            cells, cpos = np.unique(rows, return_inverse=True)
            dm = read_rows(self.file(d), self.index(d)["cell_offsets"], cells, space)
            ref = cell_dofs(V, ncells)
            if dm.shape[0] != cells.size:
                raise RuntimeError(f"{dm.shape[0]} dofmap rows read, expected {cells.size}")
            need, loc, src = writer_dofs(dm[cpos], ref)
            if space == "potential" and not (own_mesh and d == 0):
                self._check_points(d, V, need, loc, src)
            self._rows[key] = (need, loc, src)
        return self._rows[key]

    def in_order(self, d: int, space: str, V: fem.FunctionSpace, own_mesh: bool) -> bool:
        """``True`` when :meth:`dofs`' fill is the identity (``loc = src = 0, 1, ...``).

        E.g. a serial reader of a serial writer's distribution: the values read are the local
        dofs in order, copied without an index.
        """
        key = (d, space, id(V))
        if key not in self._in_order:
            need, loc, src = self.dofs(d, space, V, own_mesh)
            ramp = np.arange(loc.size)
            self._in_order[key] = bool(need.size == loc.size and np.array_equal(loc, ramp)
                                       and np.array_equal(src, ramp))  # fmt: skip
        return self._in_order[key]

    def _check_points(
        self, d: int, V: fem.FunctionSpace, need: IntArray, loc: IntArray, src: IntArray
    ) -> None:
        """Refuse a mesh whose cells' original indices name other cells (another mesh file).

        A check, not a matching: each dof's point must be the stored one to within
        :data:`POINT_TOL` times the size of the rank's part (round-off of the mesh generator).
        """
        x = read_rows(self.file(d), self.offsets(d, "potential"), need, "x")
        mine = V.tabulate_dof_coordinates()[loc, : x.shape[1]]
        size = float(np.ptp(mine, axis=0).max()) if mine.size else 1.0
        if mine.size and np.abs(x[src] - mine).max() > POINT_TOL * max(size, 1.0):
            raise RuntimeError(
                "the space's mesh is not the store's: build it from the store's mesh config "
                "(its cells' original index is the generator's) or use SweepStore.space()"
            )

    def coordinates(self, d: int) -> FloatArray:
        """Coordinates of every potential dof of distribution ``d``, in its order (all rows)."""
        index = self.index(d)
        n = int(index["spaces"]["potential"]["dof_offsets"][-1])
        return np.asarray(read_rows(self.file(d), self.offsets(d, "potential"), np.arange(n), "x"))
