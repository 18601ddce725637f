"""What the pictures show, read from a run folder: vertex fields, velocities, samples.

The run's ``solution.xdmf`` (source, target, potential, flux) and ``velocity.xdmf`` (one velocity
per stored time) are DOLFINx XDMF files with HDF5 data, read here with meshio's XDMF time-series
reader; no XDMF is parsed by hand. Serial: no MPI, no DOLFINx, so a picture can be drawn on
rank 0 alone or on a machine without DOLFINx.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["CELL_TYPES", "RunFields", "read_run_fields", "read_samples", "read_xdmf"]

FloatArray = npt.NDArray[np.float64]

#: meshio cell type (degree suffix removed) -> (our name, number of corners, VTK cell type).
#: Higher-order cells are drawn by their corners, which DOLFINx writes first.
CELL_TYPES = {
    "triangle": ("triangle", 3, 5),
    "quad": ("quadrilateral", 4, 9),
    "tetra": ("tetrahedron", 4, 10),
    "hexahedron": ("hexahedron", 8, 12),
}

#: Fields ``solution.xdmf`` must hold.
SOLUTION_FIELDS = ("source", "target", "potential", "flux")


@dataclass
class RunFields:
    """The vertex fields of a run folder.

    Attributes:
        points: Vertex coordinates, ``(N, 3)`` (2D meshes padded with z = 0).
        cells: Corner vertex indices per cell, ``(M, k)``.
        cell_type: ``"triangle"``, ``"quadrilateral"``, ``"tetrahedron"`` or ``"hexahedron"``.
        gdim: Geometric dimension of the run (2 or 3).
        fields: Vertex fields by name (``source``, ``target``, ``potential``, ``flux``); vectors
            are ``(N, 3)``.
        velocity: ``(t, (N, 3) array)`` for every stored time, in time order.
    """

    points: FloatArray
    cells: npt.NDArray[np.int64]
    cell_type: str
    gdim: int
    fields: dict[str, FloatArray] = field(default_factory=dict)
    velocity: list[tuple[float, FloatArray]] = field(default_factory=list)


def _vertex_array(arr: npt.ArrayLike, npoints: int) -> FloatArray:
    """A point array as ``(N,)`` (scalar) or ``(N, 3)`` (vector, padded with zeros)."""
    a = np.asarray(arr, dtype=np.float64).reshape(npoints, -1)
    if a.shape[1] == 1:
        return a[:, 0]
    if a.shape[1] < 3:
        return np.hstack([a, np.zeros((npoints, 3 - a.shape[1]))])
    return a


def read_xdmf(
    path: Path,
) -> tuple[FloatArray, npt.NDArray[np.int64], str, int, list[tuple[str, float, FloatArray]]]:
    """Mesh and vertex attributes of a DOLFINx XDMF file.

    DOLFINx writes one temporal collection per function name; meshio's
    :class:`~meshio.xdmf.TimeSeriesReader` reads the mesh and one collection, so each
    collection of the file is handed to it in turn.

    Returns:
        ``(points (N, 3), corner cells (M, k), cell type, gdim, [(name, t, values), ...])``.

    Raises:
        RuntimeError: The file cannot be read or holds no supported mesh.
    """
    import meshio

    try:
        with meshio.xdmf.TimeSeriesReader(path) as reader:
            x, blocks = reader.read_points_cells()
            collections = [g for g in reader.domain if g.get("GridType") == "Collection"]
            attrs: list[tuple[str, float, FloatArray]] = []
            for grid in collections:
                # the reader walks `collection`; point it at each function's collection
                reader.collection = list(grid)
                reader.num_steps = len(reader.collection)
                for k in range(reader.num_steps):
                    t, point_data, _ = reader.read_data(k)
                    attrs += [(n, float(t), a) for n, a in point_data.items()]
    except Exception as err:  # meshio raises ReadError, KeyError, OSError, ...
        raise RuntimeError(f"cannot read {str(path)!r}: {err}") from err
    if len(blocks) != 1:
        raise RuntimeError(f"{str(path)!r} holds {len(blocks)} cell blocks; expected one")
    kind = re.sub(r"\d+$", "", blocks[0].type)
    if kind not in CELL_TYPES:
        raise RuntimeError(f"{str(path)!r}: cell type {blocks[0].type!r} is not supported")
    name, ncorners, _ = CELL_TYPES[kind]
    x = np.asarray(x, dtype=np.float64)
    gdim = x.shape[1]
    if gdim == 3 and name in ("triangle", "quadrilateral") and np.ptp(x[:, 2]) == 0.0:
        gdim = 2
    pts = np.zeros((x.shape[0], 3))
    pts[:, : x.shape[1]] = x
    cells = np.asarray(blocks[0].data, dtype=np.int64)[:, :ncorners]
    return pts, cells, name, gdim, [(n, t, _vertex_array(a, pts.shape[0])) for n, t, a in attrs]


def read_run_fields(run_dir: str | Path) -> RunFields:
    """Read the vertex fields of a run folder (serial; no MPI, no DOLFINx).

    Raises:
        ValueError: ``run_dir`` has no ``solution.xdmf``.
        RuntimeError: A file of the run cannot be read or lacks a field.
    """
    run = Path(run_dir)
    sol = run / "solution.xdmf"
    if not sol.is_file() and (run / "sweep.json").is_file():
        raise ValueError(
            f"{str(run)!r} is a sweep store, not a run folder: pick a member with "
            "--param NAME=VALUE (one per sweep parameter)"
        )
    if not sol.is_file():
        raise ValueError(
            f"{str(run)!r} is not a beckmann run folder (no solution.xdmf); "
            "create one with `beckmann solve --out DIR`"
        )
    pts, cells, ctype, gdim, attrs = read_xdmf(sol)
    data = RunFields(pts, cells, ctype, gdim, {name: arr for name, _, arr in attrs})
    missing = [k for k in SOLUTION_FIELDS if k not in data.fields]
    if missing:
        raise RuntimeError(f"{str(sol)!r} lacks the field(s) {', '.join(missing)}")
    vel = run / "velocity.xdmf"
    if vel.is_file():
        vpts, *_, vattrs = read_xdmf(vel)
        if vpts.shape != pts.shape:
            raise RuntimeError(f"{str(vel)!r} and solution.xdmf have different meshes")
        data.velocity = sorted(((t, a) for n, t, a in vattrs if n == "velocity"), key=_time)
    return data


def _time(item: tuple[float, FloatArray]) -> float:
    return item[0]


def read_samples(path: str | Path, gdim: int, what: str = "samples file") -> FloatArray:
    """Read transported samples: ``N x d`` points or ``T x N x d`` paths, as ``T x N x 3``.

    The file is read by :func:`beckmann._resources.read_npy`: a regular file whose ``.npy``
    header is checked before its data are read (no pickle, no FIFO, no huge allocation).

    Raises:
        ValueError: The file is missing, not a ``.npy`` array of real numbers, too large, or of
            the wrong shape; the message names ``what`` and the file.
    """
    from beckmann._resources import read_npy

    p = Path(path)
    arr = np.asarray(read_npy(p, what), dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} {str(p)!r} holds NaN or infinite coordinates")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] != gdim or arr.shape[1] == 0:
        raise ValueError(
            f"{what} {str(p)!r} must hold N x {gdim} points or T x N x {gdim} paths, "
            f"got shape {arr.shape}"
        )
    out = np.zeros(arr.shape[:2] + (3,))
    out[..., :gdim] = arr
    return out
