"""Collective checks of density values: finite, and at least ``min_density``, over all ranks."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann._mpi import format_point, point_quantum
from beckmann.density.validate import real_number

__all__ = ["check_values", "global_minimum", "values_ok"]


def _tied(values: npt.NDArray[np.float64], vmin: float) -> npt.NDArray[np.bool_]:
    """Values equal to the minimum up to round-off (a tie the partition must not break)."""
    tol = 1e-9 * max(abs(vmin), float(np.max(np.abs(values))) if values.size else 0.0, 1e-300)
    return values <= vmin + tol


def _lowest(
    vals: npt.NDArray[np.float64], pts: npt.NDArray[np.float64], quantum: float
) -> tuple[float, list]:
    """The minimum and, among its ties, the lexicographically smallest point.

    Points are compared at the precision ``quantum`` of messages, so round-off in the
    coordinates cannot pick the one reported.
    """
    vmin = float(vals.min())
    cand = pts[_tied(vals, vmin)]
    order = np.lexsort(np.round(cand / quantum).T[::-1])
    return vmin, cand[order[0]].tolist()


def _lowest_of(minima: list[tuple[float, list]], quantum: float) -> tuple[float, list]:
    """Reduce per-rank :func:`_lowest` results the same way, independent of the partition."""
    vals = np.array([m[0] for m in minima])
    vmin = float(vals.min())
    ties = [minima[i] for i in np.flatnonzero(_tied(vals, vmin))]
    _, point = min(ties, key=lambda m: tuple(np.round(np.asarray(m[1]) / quantum)))
    return vmin, point


def values_ok(values: npt.ArrayLike, min_density: float, comm: MPI.Comm) -> bool:
    """``True`` on every rank when all ranks' values are finite and at least ``min_density``.

    Collective (one ``allreduce``); the cheap first look of :func:`check_values`, which is
    needed only to name the bad point. A bad argument on any rank gives ``False`` everywhere.
    """
    try:
        vals = np.asarray(values, dtype=np.float64)
        bound = real_number(min_density, "min_density")
        ok = vals.ndim == 1 and (
            vals.size == 0 or bool(vals.min() >= bound and vals.max() < np.inf)
        )
    except ValueError:
        ok = False
    return bool(comm.allreduce(ok, op=MPI.LAND))


def check_values(
    values: npt.ArrayLike,
    coords: npt.ArrayLike,
    *,
    role: str,
    min_density: float,
    comm: MPI.Comm,
    gdim: int | None = None,
) -> None:
    """Check that density values are finite and at least ``min_density``, over all ranks.

    Collective over ``comm``: every rank calls it, one ``allgather`` of a small summary per rank
    follows, and then every rank reaches the same verdict and raises the same error (or none).
    Problems with the arguments themselves are gathered too, so no rank is left waiting.

    Args:
        values: This rank's density values, shape ``(N,)`` (``N`` may be 0).
        coords: Their points, shape ``(N, 3)`` (or ``(N, gdim)``).
        role: ``source`` or ``target``, for the message.
        min_density: Smallest allowed value.
        comm: The communicator (mpi4py).
        gdim: Coordinates shown in messages; by default 2 if the z column is zero on every
            rank, else the number of columns.

    Raises:
        ValueError: On every rank, naming the first non-finite value (lowest rank first) and its
            point, or else the global minimum and its point when it is below ``min_density``.
    """
    shape = np.shape(coords)
    well_formed = len(shape) == 2 and shape[0] == np.size(values) and shape[1] in (1, 2, 3)
    # the common case, all fine, needs no points: one allreduce, no sort of tied minima
    if values_ok(values if well_formed else [np.nan], min_density, comm):
        return
    summary: dict[str, Any] = {"error": None, "bad": None, "nbad": 0, "min": None, "z": False}
    extent = 0.0
    try:
        min_density = real_number(min_density, "min_density")
        vals = np.asarray(values, dtype=np.float64)
        pts = np.asarray(coords, dtype=np.float64)
        if vals.ndim != 1:
            raise ValueError(f"values must have shape (N,), got {vals.shape}")
        if pts.ndim != 2 or pts.shape[0] != vals.size or pts.shape[1] not in (1, 2, 3):
            raise ValueError(f"coords must have shape ({vals.size}, 3), got {pts.shape}")
        bad = ~np.isfinite(vals)
        summary["nbad"] = int(bad.sum())
        summary["z"] = pts.shape[1] == 3 and bool(np.any(pts[:, 2] != 0.0))
        if summary["nbad"]:
            i = int(np.argmax(bad))
            what = "NaN" if np.isnan(vals[i]) else ("inf" if vals[i] > 0 else "-inf")
            summary["bad"] = (what, pts[i].tolist())
        extent = float(np.max(np.ptp(pts, axis=0))) if pts.shape[0] else 0.0
    except ValueError as err:
        summary["error"] = str(err)
    scale = comm.allreduce(extent if summary["error"] is None else 0.0, op=MPI.MAX)
    quantum = point_quantum(scale)
    if summary["error"] is None and not summary["nbad"] and vals.size:
        summary["min"] = _lowest(vals, pts, quantum)

    gathered: list[dict[str, Any]] = comm.allgather(summary)

    for rank, s in enumerate(gathered):
        if s["error"] is not None:
            raise ValueError(f"check_values on rank {rank}: {s['error']}")
    if gdim is None:
        ncols = max((len(s["bad"][1]) for s in gathered if s["bad"]), default=0)
        ncols = max([ncols, *(len(s["min"][1]) for s in gathered if s["min"])])
        gdim = 2 if ncols == 3 and not any(s["z"] for s in gathered) else ncols
    nbad = sum(s["nbad"] for s in gathered)
    if nbad:
        what, point = next(s["bad"] for s in gathered if s["bad"])
        more = f" ({nbad} non-finite values in all)" if nbad > 1 else ""
        raise ValueError(f"{role} density has {what} at {format_point(point[:gdim], scale)}{more}")
    minima = [s["min"] for s in gathered if s["min"] is not None]
    if not minima:
        return
    vmin, point = _lowest_of(minima, quantum)
    if vmin < min_density:
        raise ValueError(
            f"{role} density has minimum {vmin:.6g} at {format_point(point[:gdim], scale)}, below "
            f"min_density {min_density:g}; raise 'floor' or fix the density"
        )


def global_minimum(
    values: npt.ArrayLike, coords: npt.ArrayLike, comm: MPI.Comm
) -> tuple[float, list[float], float] | None:
    """The smallest of rank-local ``values`` over all ranks, and its point; collective.

    Ties (up to round-off) are broken by the lexicographically smallest point, compared at the
    precision of messages, so the answer does not depend on the partition.

    Args:
        values: This rank's values, shape ``(N,)`` (``N`` may be 0); finite.
        coords: Their points, shape ``(N, d)``.
        comm: The communicator.

    Returns:
        ``(minimum, point, scale)`` with ``scale`` the extent of all points (for
        :func:`~beckmann._mpi.format_point`), or ``None`` when no rank has a value.
    """
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    pts = np.asarray(coords, dtype=np.float64).reshape(vals.size, -1)
    extent = float(np.max(np.ptp(pts, axis=0))) if pts.shape[0] else 0.0
    scale = comm.allreduce(extent, op=MPI.MAX)
    quantum = point_quantum(scale)
    minima = [m for m in comm.allgather(_lowest(vals, pts, quantum) if vals.size else None) if m]
    if not minima:
        return None
    vmin, point = _lowest_of(minima, quantum)
    return vmin, point, scale
