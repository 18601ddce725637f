"""The sweep store: a folder that holds a grid of solutions and reloads on any rank count.

Layout (``--out DIR``)::

    beckmann.json         manifest: kind "sweep", format version, config hash (store.folder)
    sweep.lock            while a sweep writes: its host, pid and start time (store.lock)
    sweep.json            config, parameter names, the grid, the store format version (2)
    layout/d0/...         the mesh and, per distribution of the writing groups, each writer
                          rank's cells and dofmaps, written once (beckmann.sweep.layout)
    theta/000017.h5       one finished θ: writer rank 0's share (index, θ, config hash, layout,
                          its owned potential and flux values, the summary row) and
    theta/000017.r1.h5    the other writer ranks' shares (beckmann.sweep.entries)
    summary.json          every row, timings, the continuity-in-θ report (at the end)

**Why a store is not staged whole.** A run folder is written into a temporary sibling and
renamed when complete (:func:`beckmann.store.folder.staged_folder`). A sweep is long and
resumable, so its store is written *in place*: a ``kill -9`` must leave the θ solved so far
where ``--resume`` finds them, and staging would throw hours of work away. Instead

* the manifest and ``sweep.json`` are written first, so the folder is a sweep store (refused by
  ``solve --out`` and every other kind) from its first moment; ``summary.json`` appears last
  and marks a complete sweep;
* each share is written atomically (``.part``, then ``os.replace``), rank 0's last, and
  carries its index, θ, the config hash and its layout (:mod:`beckmann.sweep.entries`), so
  ``--resume`` verifies what a rename cannot guarantee (a file copied over another, truncated
  or corrupt files, another config), solves those entries again and says which;
* a lock file (:mod:`beckmann.store.lock`) keeps a second writer out; a lock left by a killed
  writer is recognised as stale (its pid is gone) and taken over;
* ``--overwrite`` empties an old store before the new sweep starts: never a mix of two sweeps.

**Exact keys, nothing gathered.** This is the checkpoint format of a run
(:mod:`beckmann.store.checkpoint`): every rank of a group writes its owned values with serial
h5py, and a dof is keyed by (cell, position in the cell) through the layout's dofmaps, written
once per store instead of per θ. A reader on any number of ranks reads the dofmap rows of its
cells and then, per θ, only the values those rows name (:class:`beckmann.sweep.layout.Layouts`).
No coordinates are matched. A store of format version 1 (gathered, coordinate-keyed) is refused
with one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, fem
from beckmann._mpi import agree, on_root
from beckmann.store.checkpoint import read_rows
from beckmann.store.folder import read_manifest
from beckmann.sweep.entries import (
    check_identity,
    completed,
    entry_share,
    share_path,
    theta_path,
)
from beckmann.sweep.grid import Grid
from beckmann.sweep.layout import Layouts, register_layout
from beckmann.sweep.writer import STORE_FORMAT, check_version

__all__ = [
    "REDUCED_FILE",
    "SweepStore",
    "gather_rows",
    "theta_path",
    "write_layout",
]

#: The reduced basis inside a sweep store (beckmann.sweep.reduced writes it).
REDUCED_FILE = "reduced.h5"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def gather_rows(a: FloatArray, comm: MPI.Comm) -> FloatArray | None:
    """Row blocks gathered on rank 0 of ``comm`` in rank order (``None`` elsewhere).

    For the reduced basis (:mod:`beckmann.sweep.reduced`), whose rows are in the rank order of
    its writer, i.e. distribution d0's dof order; θ entries are never gathered.
    """
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


def write_layout(folder: Path, eng: Any, comm: MPI.Comm) -> int:
    """Register the layout of one group (``comm``) running ``eng``; its id. Collective."""
    spaces = {"potential": eng.V, "flux": eng.W}
    return register_layout(folder, spaces, eng.x[:, : eng.gdim], comm, 0, comm)


class SweepStore:
    """A sweep store opened on ``comm`` (any number of ranks). Collective construction.

    Raises:
        ValueError: ``folder`` is not a sweep store, or one of another format version (on
            every rank).
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
            check_version(meta, self.folder)
            return dict(meta)

        meta = on_root(comm, read_meta)
        self.config: dict[str, Any] = meta["config"]
        self.grid = Grid.from_json(meta["grid"])
        #: The config hash every entry must carry (``None`` for a reduced store).
        self.config_hash: str | None = meta.get("config_hash")
        self.layouts = Layouts(self.folder, comm)
        self._spaces: dict[str, fem.FunctionSpace] = {}
        self._entries: dict[int, tuple[int, int]] = {}

    def completed(self) -> list[int]:
        """Indices of the stored θ (same on every rank). Collective.

        A reduced store (docs/reduced.md) holds every grid θ: its basis and their coefficients.
        """

        def done() -> list[int]:
            if (self.folder / REDUCED_FILE).is_file():
                return list(range(len(self.grid)))
            return completed(self.folder, len(self.grid))

        return list(on_root(self.comm, done))

    def _refuse(self, i: int, name: str, why: str) -> RuntimeError:
        return RuntimeError(
            f"sweep store {str(self.folder)!r}: theta/{name} is not {self.grid.label(i)}: {why}; "
            f"`beckmann sweep CONFIG --out {str(self.folder)} --resume` solves it again"
        )

    def _open(self, i: int) -> Any:
        """Entry ``i``'s rank-0 share open for reading, its identity checked. Not collective.

        Raises:
            RuntimeError: The file is not θ ``i`` of this store (e.g. a copy of another entry).
        """
        import h5py

        path = theta_path(self.folder, i)
        try:
            h5 = h5py.File(path, "r")
        except OSError as err:  # name the file (h5py's message does not)
            raise OSError(f"theta/{path.name}: {' '.join(str(err).split())}; `beckmann sweep "
                          f"CONFIG --out {str(self.folder)} --resume` solves it again") from err
        why = check_identity(h5, i, self.grid, self.config_hash)
        if why is not None:
            h5.close()
            raise self._refuse(i, path.name, why)
        return h5

    def _entry(self, i: int, handles: dict[int, Any] | None = None) -> tuple[int, int]:
        """``(layout, ranks)`` of entry ``i`` (read once). Not collective.

        ``handles`` (rank -> open share, :meth:`_read`): the rank-0 share is opened into it,
        its identity checked once, and read from it later (no second open, no second check).
        """
        if i not in self._entries or (handles is not None and 0 not in handles):
            h5 = self._open(i)
            try:
                d, ranks = self._entries[i] = entry_share(h5)
                if handles is not None:
                    self._check_share(h5, i, d, 0, ranks)
            except BaseException:
                h5.close()
                raise
            if handles is None:
                h5.close()
            else:
                handles[0] = h5
        return self._entries[i]

    def _check_share(self, h5: Any, i: int, d: int, r: int, ranks: int) -> None:
        why = check_identity(h5, i, self.grid, self.config_hash, (d, r, ranks))
        if why is not None:
            raise self._refuse(i, share_path(self.folder, i, r).name, why)

    def _read(
        self, i: int, name: str, wanted: IntArray, handles: dict[int, Any] | None = None
    ) -> FloatArray:
        """Rows ``wanted`` (sorted, unique) of entry ``i``'s ``name`` in its layout's order.

        ``handles``: shares kept open between calls, each checked when first opened
        (:func:`~beckmann.store.checkpoint.read_rows`); the caller closes them.
        """
        d, ranks = self._entry(i, handles)
        offsets = self.layouts.offsets(d, name)
        if len(offsets) != ranks + 1:
            raise RuntimeError(f"{ranks} shares, layout d{d} has {len(offsets) - 1} ranks")

        def check(h5: Any, r: int) -> None:
            self._check_share(h5, i, d, r, ranks)

        return np.asarray(read_rows(lambda r: share_path(self.folder, i, r), offsets, wanted,
                                    name, check, handles))  # fmt: skip

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
        """Stored values of θ ``i`` in its layout's dof order (a slice of them). Not collective.

        That order is the writer group's global dof numbering; entries of one distribution
        (:mod:`beckmann.sweep.layout`) share it. For values on a space use :meth:`values`.

        Raises:
            RuntimeError: The entry or dataset cannot be read, or a file is not θ ``i``.
        """
        path = theta_path(self.folder, i)
        try:
            d, _ = self._entry(i)
            n = self.layouts.offsets(d, name)[-1]
            wanted = np.arange(n, dtype=np.int64)[rows if rows is not None else slice(None)]
            return self._read(i, name, wanted)
        except (OSError, KeyError) as e:
            raise RuntimeError(
                f"cannot read {name} of {self.grid.label(i)} from {path}: {e}"
            ) from e

    def sizes(self) -> tuple[int, int]:
        """Numbers of stored potential and flux values (same on every rank). Collective."""

        def read() -> tuple[int, int]:
            index = self.layouts.index(0)["spaces"]
            return (int(index["potential"]["dof_offsets"][-1]),
                    int(index["flux"]["dof_offsets"][-1]))  # fmt: skip

        return on_root(self.comm, read)

    def coordinates(self) -> FloatArray:
        """Coordinates of every potential dof of layout d0, in its order. Not collective."""
        return self.layouts.coordinates(0)

    def _space(self, name: str) -> fem.FunctionSpace:
        if not self._spaces:
            try:
                msh = self.layouts.mesh()
            except RuntimeError as e:
                raise RuntimeError(f"sweep store {str(self.folder)!r}: {e}") from e
            self._spaces["mesh"] = msh
        if name not in self._spaces:
            el = on_root(self.comm, lambda: self.layouts.element(name))
            family, degree, shape = el["family"], el["degree"], tuple(el["shape"])
            self._spaces[name] = fem.functionspace(
                self._spaces["mesh"], (family, degree, shape) if shape else (family, degree)
            )
        return self._spaces[name]

    def space(self) -> fem.FunctionSpace:
        """The potential's space on the stored mesh, distributed over ``comm``. Collective."""
        return self._space("potential")

    def flux_space(self) -> fem.FunctionSpace:
        """The flux's (DG vector) space on the stored mesh. Collective."""
        return self._space("flux")

    def function(
        self, i: int, name: str = "potential", V: fem.FunctionSpace | None = None
    ) -> fem.Function:
        """Field ``name`` of θ ``i`` on ``V`` (default: the store's space of it). Collective.

        Exact: each rank reads the layout's dofmap rows of its cells and the values of the dofs
        they name. ``V`` may also be a space of the same element on a mesh built from the
        store's mesh config (any partition), e.g. of an independent
        :func:`beckmann.pipeline.solve`: its cells are found by their original index.

        Raises:
            RuntimeError: The entry cannot be read, or is not θ ``i`` (on every rank).
            ValueError: ``V``'s mesh is not the store's (on every rank).
        """
        return self.functions(i, [name], V)[name]

    def functions(
        self, i: int, names: list[str], V: fem.FunctionSpace | None = None
    ) -> dict[str, fem.Function]:
        """Fields ``names`` of θ ``i`` (as :meth:`function`), each share opened once. Collective.

        A share is opened and its identity checked once for all the fields (the continuity
        pass reads φ and F of every θ). ``V``: the space of every field (default: the store's
        space of each).

        Raises:
            RuntimeError: The entry cannot be read, or is not θ ``i`` (on every rank).
            ValueError: ``V``'s mesh is not the store's (on every rank).
        """
        out: dict[str, fem.Function] = {}
        error, kind = None, RuntimeError
        handles: dict[int, Any] = {}
        try:
            for name in names:
                own = V is None or V.mesh is self._spaces.get("mesh")
                S = self._space(name) if V is None else V
                u = out[name] = fem.Function(S, name=name)
                d, _ = self._entry(i, handles)
                try:
                    need, loc, src = self.layouts.dofs(d, name, S, own)
                    same = self.layouts.in_order(d, name, S, own)
                except RuntimeError as e:
                    kind = ValueError
                    raise RuntimeError(f"sweep store {str(self.folder)!r}: {e}") from e
                kind = RuntimeError
                vals = self._read(i, name, need, handles)
                if same:  # the writer's dof order is the local one: a plain copy
                    u.x.array[: vals.size] = vals.ravel()
                else:
                    bs = S.dofmap.index_map_bs
                    u.x.array.reshape(-1, bs)[loc] = vals.reshape(need.size, bs)[src]
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            error = " ".join(str(e).split())
            if not error.startswith("sweep store "):
                error = f"sweep store {str(self.folder)!r}: {error}"
        finally:
            for h5 in handles.values():
                h5.close()
        agree(self.comm, error, kind)
        return out

    def values(self, i: int, V: fem.FunctionSpace | None = None) -> FloatArray:
        """Owned values of φ(θ ``i``) on ``V`` (default :meth:`space`); collective."""
        u = self.function(i, "potential", V)
        return u.x.array[: u.function_space.dofmap.index_map.size_local].copy()

    def potential(self, i: int, V: fem.FunctionSpace | None = None) -> fem.Function:
        """φ of θ ``i`` on ``V`` (default :meth:`space`), exactly keyed. Collective."""
        return self.function(i, "potential", V)

    def flux(self, i: int) -> fem.Function:
        """The stored flux of θ ``i`` on :meth:`flux_space`. Collective."""
        return self.function(i, "flux")

    def layout_rows(self) -> IntArray:
        """Layout d0's row of each owned dof of :meth:`space` (exact). Collective.

        The reduced basis (:mod:`beckmann.sweep.reduced`) is stored in d0's order.
        """
        V = self.space()
        error, rows = None, np.zeros(0, dtype=np.int64)
        try:
            need, loc, src = self.layouts.dofs(0, "potential", V, True)
            n = V.dofmap.index_map.size_local
            rows = np.empty(n + V.dofmap.index_map.num_ghosts, dtype=np.int64)
            rows[loc] = need[src]
            rows = rows[:n]
        except (OSError, KeyError, RuntimeError) as e:
            error = f"sweep store {str(self.folder)!r}: {' '.join(str(e).split())}"
        agree(self.comm, error, RuntimeError)
        return rows

    def index_of(self, theta: dict[str, float]) -> int | None:
        """Grid index of ``theta`` (relative tolerance 1e-12), or ``None``. Not collective."""
        return self.grid.index_of(theta)
