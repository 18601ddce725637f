"""The sweep store: a folder that holds a grid of solutions and reloads on any rank count.

Layout (``--out DIR``)::

    beckmann.json         manifest: kind "sweep", format version, config hash (store.folder)
    sweep.lock            while a sweep writes: its host, pid and start time (store.lock)
    sweep.json            config, parameter names, the grid, the interpolation axes
    layout/mesh.xdmf      the mesh (written once)
    layout/layout.h5      dof coordinates of the potential space, keys of the flux values
    theta/000017.h5       one finished θ: index, θ, config hash, potential, flux, summary row
    summary.json          every row, timings, the continuity-in-θ report (at the end)

**Why a store is not staged whole.** A run folder is written into a temporary sibling and
renamed when complete (:func:`beckmann.store.folder.staged_folder`). A sweep is long and
resumable, so its store is written *in place*: a ``kill -9`` must leave the θ solved so far
where ``--resume`` finds them, and staging would throw hours of work away. Instead

* the manifest and ``sweep.json`` are written first, so the folder is a sweep store (refused by
  ``solve --out`` and every other kind) from its first moment; ``summary.json`` appears last
  and marks a complete sweep;
* each entry is written atomically (``000017.h5.part``, then ``os.replace``) and carries its
  index, θ and the config hash (:mod:`beckmann.sweep.entries`), so ``--resume`` verifies what
  a rename cannot guarantee (a file copied over another, truncated or corrupt files, another
  config), solves those entries again and says which;
* a lock file (:mod:`beckmann.store.lock`) keeps a second writer out; a lock left by a killed
  writer is recognised as stale (its pid is gone) and taken over;
* ``--overwrite`` empties an old store before the new sweep starts: never a mix of two sweeps.

Entries are written by their group's first rank; PyPI's h5py is serial, and one file per θ
needs no parallel HDF5. Values are stored in the order of the layout's dof coordinates, so a
store reloads on any number of ranks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, dolfinx, fem
from beckmann._mpi import agree, on_root
from beckmann.store.folder import read_manifest
from beckmann.store.writes import before_collective_write, write_on_root
from beckmann.sweep.entries import check_identity, completed, theta_path
from beckmann.sweep.grid import Grid
from beckmann.sweep.writer import STORE_FORMAT

__all__ = [
    "REDUCED_FILE",
    "SweepStore",
    "flux_keys",
    "gather_rows",
    "layout_permutation",
    "read_layout",
    "theta_path",
    "write_layout",
]

#: The reduced basis inside a sweep store (beckmann.sweep.reduced writes it).
REDUCED_FILE = "reduced.h5"

FloatArray = npt.NDArray[np.float64]

#: Largest distance, relative to the domain's size, at which two dof coordinates are the same.
_MATCH_TOL = 1e-10


def gather_rows(a: FloatArray, comm: MPI.Comm) -> FloatArray | None:
    """Row blocks gathered on rank 0 of ``comm`` in rank order (``None`` elsewhere)."""
    a = np.ascontiguousarray(a)
    if comm.size == 1:
        return a
    rows = comm.gather(a.shape[0], root=0)
    if comm.rank != 0:
        comm.Gatherv(a, None, root=0)
        return None
    assert rows is not None
    width = int(np.prod(a.shape[1:], dtype=np.int64))
    out = np.empty((sum(rows), *a.shape[1:]), dtype=a.dtype)
    comm.Gatherv(a, (out, [r * width for r in rows]), root=0)
    return out


def flux_keys(W: fem.FunctionSpace) -> FloatArray:
    """Keys of the rank's owned flux values that do not depend on the partition.

    The DG dof's point and its cell's midpoint (DG dofs on a shared vertex differ by their
    cell); the midpoint alone for DG_0. Not collective.
    """
    msh = W.mesh
    d = msh.geometry.dim
    tdim = msh.topology.dim
    ncells = msh.topology.index_map(tdim).size_local
    cells = np.arange(ncells, dtype=np.int32)
    wdofs = W.dofmap.list[:ncells]
    nw = W.dofmap.index_map.size_local
    owner = np.empty(nw, dtype=np.int64)
    owner[wdofs.ravel()] = np.repeat(cells, wdofs.shape[1])
    mid = dolfinx.mesh.compute_midpoints(msh, tdim, cells)[:, :d]
    if W.ufl_element().embedded_superdegree == 0:
        return mid[owner]
    return np.hstack([W.tabulate_dof_coordinates()[:nw, :d], mid[owner]])


def write_layout(
    folder: Path, msh: Any, coords: FloatArray, keys: FloatArray, degree: int, gcomm: MPI.Comm
) -> None:
    """Write mesh and dof layout once (``layout.part`` renamed to ``layout``); collective.

    ``coords`` and ``keys`` are the rank's owned dof coordinates and flux keys; the layout
    stores them in rank order of ``gcomm``.
    """
    import h5py

    part = folder / "layout.part"
    write_on_root(gcomm, "layout", lambda: part.mkdir(parents=True, exist_ok=True))
    before_collective_write(gcomm, "layout")
    with dolfinx.io.XDMFFile(gcomm, str(part / "mesh.xdmf"), "w") as f:
        f.write_mesh(msh)
    g_coords = gather_rows(coords, gcomm)
    g_keys = gather_rows(keys, gcomm)

    def write() -> None:
        with h5py.File(part / "layout.h5", "w") as h5:
            h5.attrs["degree"] = degree
            h5.attrs["gdim"] = coords.shape[1]
            h5.create_dataset("dof_coordinates", data=g_coords)
            h5.create_dataset("flux_keys", data=g_keys)
        os.replace(part, folder / "layout")

    write_on_root(gcomm, "layout", write)


def read_layout(folder: Path) -> tuple[FloatArray, FloatArray]:
    """Stored dof coordinates and flux keys. Not collective."""
    import h5py

    with h5py.File(folder / "layout" / "layout.h5", "r") as h5:
        return h5["dof_coordinates"][:], h5["flux_keys"][:]


def _match(stored: FloatArray, mine: FloatArray) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """For each of ``mine``, the index of the nearest stored point and the distance."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(stored).query(mine)
    return np.asarray(dist), np.asarray(idx, dtype=np.int64)


def layout_permutation(
    stored: FloatArray, mine: FloatArray, what: str
) -> npt.NDArray[np.int64] | None:
    """``perm`` with ``mine[perm] == stored`` (``None`` for the identity). Not collective.

    Raises:
        RuntimeError: The two layouts are not the same points.
    """
    if stored.shape == mine.shape and np.array_equal(stored, mine):
        return None
    if stored.shape != mine.shape:
        raise RuntimeError(f"the stored {what} layout does not match this mesh")
    dist, perm = _match(mine, stored)
    diam = float(np.ptp(stored, axis=0).max()) if stored.size else 1.0
    if np.any(dist > _MATCH_TOL * max(diam, 1.0)):
        raise RuntimeError(f"the stored {what} layout does not match this mesh")
    return perm


class SweepStore:
    """A sweep store opened on ``comm`` (any number of ranks). Collective construction.

    Raises:
        ValueError: ``folder`` is not a sweep store (on every rank).
    """

    def __init__(self, folder: str | Path, comm: MPI.Comm) -> None:
        self.folder = Path(folder)
        self.comm = comm

        def read_meta() -> dict[str, Any]:
            manifest = read_manifest(self.folder) if self.folder.is_dir() else None
            if manifest is not None and manifest.get("kind") != "sweep":
                raise ValueError(
                    f"{str(self.folder)!r} is a beckmann {manifest.get('kind')} folder, "
                    "not a sweep store"
                )
            try:
                meta = json.loads((self.folder / "sweep.json").read_text())
                if meta.get("format") != STORE_FORMAT:
                    raise ValueError("not a beckmann sweep store")
            except (OSError, ValueError) as e:
                raise ValueError(
                    f"{str(self.folder)!r} is not a beckmann sweep store ({e}); create one with "
                    "`beckmann sweep CONFIG --out DIR`"
                ) from e
            return dict(meta)

        meta = on_root(comm, read_meta)
        self.config: dict[str, Any] = meta["config"]
        self.grid = Grid.from_json(meta["grid"])
        #: The config hash every entry must carry (``None`` for a store of an older beckmann).
        self.config_hash: str | None = meta.get("config_hash")
        self._space: tuple[Any, npt.NDArray[np.int64]] | None = None

    def completed(self) -> list[int]:
        """Indices of the stored θ (same on every rank). Collective.

        A reduced store (docs/reduced.md) holds every grid θ: its basis and their coefficients.
        """
        def done() -> list[int]:
            if (self.folder / REDUCED_FILE).is_file():
                return list(range(len(self.grid)))
            return completed(self.folder, len(self.grid))

        return list(on_root(self.comm, done))

    def _open(self, i: int) -> Any:
        """Entry ``i`` open for reading, its index, θ and config hash checked. Not collective.

        Raises:
            RuntimeError: The file is not θ ``i`` of this store (e.g. a copy of another entry).
        """
        import h5py

        path = theta_path(self.folder, i)
        h5 = h5py.File(path, "r")
        why = check_identity(h5, i, self.grid, self.config_hash)
        if why is not None:
            h5.close()
            raise RuntimeError(
                f"sweep store {str(self.folder)!r}: theta/{path.name} is not {self.grid.label(i)}:"
                f" {why}; `beckmann sweep CONFIG --out {str(self.folder)} --resume` solves it again"
            )
        return h5

    def rows(self) -> list[dict[str, Any]]:
        """Summary rows of the stored θ, by index (same on every rank). Collective."""

        def read() -> list[dict[str, Any]]:
            rows = []
            for i in completed(self.folder, len(self.grid)):
                with self._open(i) as h5:
                    rows.append(json.loads(h5.attrs["row"]))
            return rows

        return list(on_root(self.comm, read))

    def has(self, i: int, name: str) -> bool:
        """``True`` when entry ``i`` holds dataset ``name``. Not collective."""
        with self._open(i) as h5:
            return name in h5

    def read(self, i: int, name: str = "potential", rows: slice | None = None) -> FloatArray:
        """Stored values of θ ``i`` in layout order (a slice of them). Not collective.

        Raises:
            RuntimeError: The entry or dataset cannot be read, or the file is not θ ``i``.
        """
        path = theta_path(self.folder, i)
        try:
            with self._open(i) as h5:
                return np.asarray(h5[name][rows if rows is not None else slice(None)])
        except (OSError, KeyError) as e:
            raise RuntimeError(
                f"cannot read {name} of {self.grid.label(i)} from {path}: {e}"
            ) from e

    def layout(self) -> tuple[FloatArray, FloatArray]:
        """Stored dof coordinates and flux keys. Not collective."""
        return read_layout(self.folder)

    def sizes(self) -> tuple[int, int]:
        """Numbers of stored potential and flux values (same on every rank). Collective."""

        def read() -> tuple[int, int]:
            import h5py

            with h5py.File(self.folder / "layout" / "layout.h5", "r") as h5:
                return int(h5["dof_coordinates"].shape[0]), int(h5["flux_keys"].shape[0])

        return on_root(self.comm, read)

    def _indices(
        self, V: fem.FunctionSpace, what: str, exc: type[Exception] = RuntimeError
    ) -> npt.NDArray[np.int64]:
        """Layout index of each owned dof of ``V``; collective."""
        n = V.dofmap.index_map.size_local
        coords, _ = self.layout()
        dist, idx = _match(coords, V.tabulate_dof_coordinates()[:n, : coords.shape[1]])
        diam = float(np.ptp(coords, axis=0).max()) if coords.size else 1.0
        bad = np.count_nonzero(dist > _MATCH_TOL * max(diam, 1.0))
        agree(
            self.comm,
            f"sweep store {str(self.folder)!r}: {what} and the stored layout differ"
            if bad
            else None,
            exc,
        )
        return idx

    def space(self) -> fem.FunctionSpace:
        """The potential's space on the stored mesh, distributed over ``comm``. Collective."""
        if self._space is None:
            with dolfinx.io.XDMFFile(
                self.comm, str(self.folder / "layout" / "mesh.xdmf"), "r"
            ) as f:
                msh = f.read_mesh(name="mesh")
            V = fem.functionspace(msh, ("Lagrange", self.config["solver"]["degree"]))
            self._space = (V, self._indices(V, "the stored mesh"))
        return self._space[0]

    def values(self, i: int, V: fem.FunctionSpace | None = None) -> FloatArray:
        """Owned values of φ(θ ``i``) on ``V`` (default :meth:`space`); collective."""
        if V is None:
            self.space()
            assert self._space is not None
            idx = self._space[1]
        else:
            idx = self._indices(V, "the given space", ValueError)
        return self.read(i)[idx]

    def potential(self, i: int, V: fem.FunctionSpace | None = None) -> fem.Function:
        """φ of θ ``i`` on ``V`` (default :meth:`space`), matched by dof coordinates. Collective.

        ``V`` may be any scalar Lagrange space of the same degree on the same mesh geometry
        (any partition), e.g. the space of an independent :func:`beckmann.pipeline.solve`.
        """
        vals = self.values(i, V)
        V = V if V is not None else self.space()
        phi = fem.Function(V, name="potential")
        phi.x.array[: V.dofmap.index_map.size_local] = vals
        phi.x.scatter_forward()
        return phi

    def index_of(self, theta: dict[str, float]) -> int | None:
        """Grid index of ``theta`` (relative tolerance 1e-12), or ``None``. Not collective."""
        return self.grid.index_of(theta)
