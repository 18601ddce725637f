"""The sweep store: a folder that holds a grid of solutions and reloads on any rank count.

Layout (``--out DIR``)::

    sweep.json            config, parameter names, the grid, the interpolation axes
    layout/mesh.xdmf      the mesh (written once)
    layout/layout.h5      dof coordinates of the potential space, keys of the flux values
    theta/000017.h5       one finished θ: potential, flux (both in layout order), summary row
    summary.json          every row, timings, the continuity-in-θ report (at the end)

Each θ file is written by its group's first rank as ``000017.h5.part`` and renamed into place
(``os.replace`` is atomic), so ``kill -9`` leaves complete entries and at most some ``.part``
files, which ``--resume`` deletes; PyPI's h5py is serial, and one file per θ needs neither
parallel HDF5 nor a lock. Values are stored in the order of the layout's dof coordinates, so a
store reloads on any number of ranks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, dolfinx, fem
from beckmann._mpi import agree, collective, on_root
from beckmann._version import __version__
from beckmann.store.jsonio import write_json
from beckmann.store.writes import write_on_root
from beckmann.sweep.grid import Grid

__all__ = [
    "STORE_FORMAT",
    "SweepStore",
    "comparable",
    "flux_keys",
    "gather_rows",
    "layout_permutation",
    "prepare_store",
    "read_layout",
    "theta_path",
    "write_entry",
    "write_layout",
]

FloatArray = npt.NDArray[np.float64]

STORE_FORMAT = "beckmann-sweep"
_STORE_VERSION = 1
#: ``[sweep]`` keys that do not change the stored results (reports, grouping).
_REPORT_KEYS = (
    "group_size",
    "continuity",
    "joint_points",
    "continuity_holder",
    "holder_k",
    "holder_alpha",
    "holder_pairs",
)
#: Largest distance, relative to the domain's size, at which two dof coordinates are the same.
_MATCH_TOL = 1e-10


def theta_path(folder: Path, i: int) -> Path:
    """The entry of θ number ``i``."""
    return folder / "theta" / f"{i:06d}.h5"


def completed(folder: Path, k: int) -> list[int]:
    """Indices below ``k`` of the stored θ (complete files only). Not collective."""
    tdir = folder / "theta"
    if not tdir.is_dir():
        return []
    done = []
    for name in os.listdir(tdir):
        if name.endswith(".h5") and name[:-3].isdigit() and int(name[:-3]) < k:
            done.append(int(name[:-3]))
    return sorted(done)


def comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The parts of a config that determine the stored results (not output or reports)."""
    keep = {s: v for s, v in cfg.items() if s != "output"}
    keep["sweep"] = {k: v for k, v in keep.get("sweep", {}).items() if k not in _REPORT_KEYS}
    return json.loads(json.dumps(keep))


def gather_rows(a: FloatArray, comm: MPI.Comm) -> FloatArray | None:
    """Row blocks gathered on rank 0 of ``comm`` in rank order (``None`` elsewhere)."""
    parts = comm.gather(np.ascontiguousarray(a), root=0)
    return np.concatenate(parts) if parts is not None else None


def _write_h5_atomic(path: Path, datasets: dict[str, FloatArray], attrs: dict[str, Any]) -> None:
    import h5py

    tmp = path.with_name(path.name + ".part")
    with h5py.File(tmp, "w") as h5:
        for k, v in attrs.items():
            h5.attrs[k] = v
        for k, v in datasets.items():
            h5.create_dataset(k, data=v)
    os.replace(tmp, path)  # atomic: the entry appears complete or not at all


def write_entry(
    folder: Path,
    row: dict[str, Any] | None,
    theta: FloatArray | None,
    data: dict[str, FloatArray] | None,
    gcomm: MPI.Comm,
) -> None:
    """Write one finished θ (``row["index"]``) from rank 0 of ``gcomm``; collective on ``gcomm``.

    Only rank 0's arguments are used (the others may pass ``None``).

    Raises:
        RuntimeError: On every rank of ``gcomm``, when the write fails.
    """
    name = f"theta/{int(row['index']):06d}.h5" if row is not None else "theta entry"

    def write() -> None:
        assert row is not None and data is not None
        attrs = {"row": json.dumps(row), "theta": theta}
        _write_h5_atomic(theta_path(folder, int(row["index"])), data, attrs)

    write_on_root(gcomm, name, write)


def prepare_store(
    folder: Path, cfg: dict[str, Any], grid: Grid, resume: bool, comm: MPI.Comm
) -> list[int]:
    """Create or check the store on rank 0; return the pending θ indices. Collective.

    Raises:
        ValueError: The folder holds a sweep and ``resume`` is false, holds another config or
            grid, or is a non-empty folder of another kind (on every rank).
        RuntimeError: The folder cannot be written (on every rank).
    """

    def check() -> bool:
        meta_path = folder / "sweep.json"
        if meta_path.is_file():
            if not resume:
                raise ValueError(
                    f"{str(folder)!r} already holds a sweep; pass --resume to continue it "
                    "or choose another --out"
                )
            old = json.loads(meta_path.read_text())
            if old.get("format") != STORE_FORMAT:
                raise ValueError(f"{str(meta_path)!r} is not a beckmann sweep store")
            if comparable(old["config"]) != comparable(cfg):
                raise ValueError(
                    f"--resume: the config differs from the one the sweep in {str(folder)!r} "
                    "was started with"
                )
            if not np.array_equal(Grid.from_json(old["grid"]).values, grid.values):
                raise ValueError(f"--resume: the grid differs from the one in {str(folder)!r}")
            return False
        if folder.exists() and any(folder.iterdir()):
            raise ValueError(f"--out {str(folder)!r} exists and is not a sweep store")
        return True

    def clean() -> list[int]:
        (folder / "theta").mkdir(parents=True, exist_ok=True)
        for name in os.listdir(folder / "theta"):
            if name.endswith(".part"):
                os.remove(folder / "theta" / name)  # interrupted writes
        if (folder / "layout.part").exists():
            shutil.rmtree(folder / "layout.part")
        done = set(completed(folder, len(grid)))
        return [i for i in range(len(grid)) if i not in done]

    new = on_root(comm, check)
    pending: list[int] = write_on_root(comm, "folder", clean)
    if new:
        meta = {
            "format": STORE_FORMAT,
            "version": _STORE_VERSION,
            "beckmann": __version__,
            "config": cfg,
            "grid": grid.to_json(),
        }
        write_json(folder / "sweep.json", meta, comm)
    return pending


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
    with collective(gcomm):
        if gcomm.rank == 0:
            part.mkdir(parents=True, exist_ok=True)
    with dolfinx.io.XDMFFile(gcomm, str(part / "mesh.xdmf"), "w") as f:
        f.write_mesh(msh)
    g_coords = gather_rows(coords, gcomm)
    g_keys = gather_rows(keys, gcomm)
    with collective(gcomm):
        if gcomm.rank == 0:
            with h5py.File(part / "layout.h5", "w") as h5:
                h5.attrs["degree"] = degree
                h5.attrs["gdim"] = coords.shape[1]
                h5.create_dataset("dof_coordinates", data=g_coords)
                h5.create_dataset("flux_keys", data=g_keys)
            os.replace(part, folder / "layout")


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
        self._space: tuple[Any, npt.NDArray[np.int64]] | None = None

    def completed(self) -> list[int]:
        """Indices of the stored θ (same on every rank). Collective."""
        return list(on_root(self.comm, lambda: completed(self.folder, len(self.grid))))

    def rows(self) -> list[dict[str, Any]]:
        """Summary rows of the stored θ, by index (same on every rank). Collective."""
        import h5py

        def read() -> list[dict[str, Any]]:
            rows = []
            for i in completed(self.folder, len(self.grid)):
                with h5py.File(theta_path(self.folder, i), "r") as h5:
                    rows.append(json.loads(h5.attrs["row"]))
            return rows

        return list(on_root(self.comm, read))

    def has(self, i: int, name: str) -> bool:
        """``True`` when entry ``i`` holds dataset ``name``. Not collective."""
        import h5py

        with h5py.File(theta_path(self.folder, i), "r") as h5:
            return name in h5

    def read(self, i: int, name: str = "potential", rows: slice | None = None) -> FloatArray:
        """Stored values of θ ``i`` in layout order (a slice of them). Not collective.

        Raises:
            RuntimeError: The entry or dataset cannot be read.
        """
        import h5py

        path = theta_path(self.folder, i)
        try:
            with h5py.File(path, "r") as h5:
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
