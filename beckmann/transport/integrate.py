r"""Integrating :math:`dX/dt = v_t(X)` for a distributed sample set: RK4, RK45, migration.

**Integration** (:class:`Transporter`): classical RK4 with equal steps, or Dormand--Prince 5(4)
with one global step size (every rank takes the same steps). A sample remembers its cell: at
each stage its barycentric coordinates in that cell are checked, points that left are walked to
the neighbour across the most violated facet, and only points that get lost are searched in the
bounding-box tree (:class:`~beckmann.locate.MeshCells`).

**MPI**: each rank moves the samples in its owned cells. Stage points may fall in ghost cells
(evaluated locally) or beyond (gathered and evaluated by the rank that owns them, chosen by the
rule of :func:`beckmann.locate.pick_cells`); after each step samples whose cell belongs to
another rank migrate there. Points that leave the domain (round-off, discretisation error of
:math:`F\cdot n = 0`) are projected to the closest point of the nearest cell, a deterministic
rule, and counted twice: ``projection_events`` (per sample and step) and, in
:meth:`Transporter.projected_samples`, the number of distinct samples ever projected.

The velocity is any object with ``cells``, ``fast_values`` and ``values`` (the finite-element
:class:`~beckmann.transport.evaluate.FieldEvaluator`, or a network's velocity).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann._mpi import global_bbox
from beckmann.locate import select_rank
from beckmann.transport.sampling import Samples

__all__ = ["Transporter"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _sorted_by_cell(s: Samples) -> Samples:
    """Order the local samples by cell: gathers of per-cell data then touch memory in order."""
    order = np.argsort(s.cells, kind="stable")
    return Samples(s.ids[order], s.x[order], s.cells[order], s.n, s.info)


# Dormand-Prince 5(4) tableau
_DP_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0])
_DP_A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
_DP_B5 = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0])
_DP_B4 = np.array([5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40])


class Transporter:
    """Integrates ``dX/dt = v_t(X)`` for a distributed :class:`Samples` set; collective.

    Args:
        evaluator: The velocity: a :class:`~beckmann.transport.evaluate.FieldEvaluator` or any
            object with the same ``cells``, ``fast_values`` and ``values``.
    """

    def __init__(self, evaluator: Any) -> None:
        self.ev = evaluator
        self.mc = evaluator.cells
        self.comm = self.mc.comm
        self._projected_ids: list[IntArray] = []
        self.stats = {
            "projection_events": 0,
            "stage_outside": 0,
            "remote_evaluations": 0,
            "migrated": 0,
            "evaluations": 0,
            "rejected_steps": 0,
        }

    # -- evaluation ----------------------------------------------------------------------
    def velocity(
        self, t: float, x: FloatArray, guess: npt.NDArray[np.int32]
    ) -> tuple[FloatArray, npt.NDArray[np.int32]]:
        """``v_t`` at local points (with cell guesses); collective (for points off this rank)."""
        known = guess >= 0
        if known.all():
            v, inside = self.ev.fast_values(t, x, guess)
        else:
            v, inside = np.zeros_like(x), np.zeros(x.shape[0], dtype=bool)
            if known.any():
                v[known], inside[known] = self.ev.fast_values(t, x[known], guess[known])
        cells = np.array(guess, dtype=np.int32, copy=True)
        redo = np.flatnonzero(~inside)
        if redo.size:
            c2, lam2 = self.mc.find_local(x[redo], guess[redo])
            cells[redo] = c2
            ok = c2 >= 0
            v[redo[ok]] = self.ev.values(t, c2[ok], lam2[ok])[0]
        here = cells >= 0
        lost = np.flatnonzero(~here)
        self.stats["evaluations"] += x.shape[0]
        if self.comm.allreduce(lost.size, op=MPI.SUM):
            vr, _, _, outside = self._remote(t, x[lost])
            v[lost] = vr
            self.stats["remote_evaluations"] += lost.size
            self.stats["stage_outside"] += int(outside.sum())
        return v, cells

    def _remote(
        self, t: float | None, pts: FloatArray
    ) -> tuple[FloatArray, FloatArray, IntArray, npt.NDArray[np.bool_]]:
        """Locate (and evaluate at ``t``) points lost on their rank; collective.

        Returns ``(v, x, owner, outside)`` for this rank's points: velocity (zeros if ``t`` is
        None), the position (projected when outside), the owning rank and the outside mask.
        """
        comm = self.comm
        d = self.mc.d
        counts = comm.allgather(pts.shape[0])
        allpts = np.concatenate(comm.allgather(pts)) if sum(counts) else np.zeros((0, d))
        m = allpts.shape[0]
        found, tier, key = self.mc.search(allpts, owned=True)
        size = comm.size
        mine, located = select_rank(comm, tier, key)
        owner = np.where(mine, comm.rank, size).astype(np.int64)
        comm.Allreduce(owner.copy(), owner, op=MPI.MIN)
        outside = ~located
        xnew = allpts.copy()
        if outside.any():
            oi = np.flatnonzero(outside)
            dist, close, ccell = self.mc.closest_point(allpts[oi])
            best = np.empty_like(dist)
            comm.Allreduce(dist, best, op=MPI.MIN)
            cand = np.where(dist == best, comm.rank, size).astype(np.int64)
            win = np.empty_like(cand)
            comm.Allreduce(cand, win, op=MPI.MIN)
            owner[oi] = win
            take = win == comm.rank
            xo = np.where(take[:, None], close, 0.0)
            xs = np.empty_like(xo)
            comm.Allreduce(xo, xs, op=MPI.SUM)
            xnew[oi] = xs
            found[oi[take]] = ccell[take]
        vals = np.zeros((m, d))
        me = np.flatnonzero(owner == comm.rank)
        if t is not None and me.size:
            c = found[me]
            vals[me] = self.ev.values(t, c, self.mc.barycentric(xnew[me], c))[0]
        if t is not None:
            vsum = np.empty_like(vals)
            comm.Allreduce(vals, vsum, op=MPI.SUM)
            vals = vsum
        start = sum(counts[: comm.rank])
        sl = slice(start, start + pts.shape[0])
        return vals[sl], xnew[sl], owner[sl], outside[sl]

    def projected_samples(self) -> int:
        """Number of distinct samples projected back into the domain so far; collective."""
        mine = np.unique(np.concatenate([np.zeros(0, np.int64), *self._projected_ids]))
        return int(np.unique(np.concatenate(self.comm.allgather(mine))).size)

    def reset_counts(self) -> None:
        """Zero the statistics and the projected samples (e.g. after locating given points)."""
        self._projected_ids = []
        for key in self.stats:
            self.stats[key] = 0

    # -- relocation and migration --------------------------------------------------------
    def relocate(self, s: Samples) -> Samples:
        """Locate samples after a step, project escaped ones, migrate to owners; collective.

        Raises:
            ValueError: On every rank, when a sample's position is not finite (a velocity that
                is NaN or infinite somewhere, e.g. a network with NaN weights).
        """
        comm = self.comm
        bad = int(comm.allreduce(int(np.count_nonzero(~np.isfinite(s.x).all(axis=1))), MPI.SUM))
        if bad:
            raise ValueError(
                f"the velocity is not finite: {bad} of {s.n} samples have NaN or infinite "
                "positions (check the model or the densities' floor)"
            )
        cells, _ = self.mc.find_local(s.x, s.cells)
        dest = np.full(s.ids.size, comm.rank, dtype=np.int64)
        ghost = cells >= self.mc.n_owned
        dest[ghost] = self.mc.ghost_owner[cells[ghost] - self.mc.n_owned]
        lost = np.flatnonzero(cells < 0)
        if comm.allreduce(lost.size, op=MPI.SUM):
            _, xn, owner, outside = self._remote(None, s.x[lost])
            s.x[lost] = xn
            dest[lost] = owner
            self.stats["projection_events"] += int(outside.sum())
            self._projected_ids.append(s.ids[lost[outside]])
        s.cells = cells
        if comm.size == 1:
            if lost.size:
                s.cells[lost] = -1
            return _sorted_by_cell(s)
        move = dest != comm.rank
        nmove = comm.allreduce(int(move.sum()), op=MPI.SUM)
        if nmove == 0:
            return _sorted_by_cell(s)
        self.stats["migrated"] += int(move.sum())
        send = [
            (s.ids[dest == r], s.x[dest == r]) if r != comm.rank else None for r in range(comm.size)
        ]
        recv = comm.alltoall(send)
        keep = ~move
        ids = [s.ids[keep]] + [r[0] for r in recv if r is not None]
        xs = [s.x[keep]] + [r[1] for r in recv if r is not None]
        cl = [cells[keep]] + [np.full(r[0].size, -1, np.int32) for r in recv if r is not None]
        out = Samples(np.concatenate(ids), np.concatenate(xs), np.concatenate(cl), s.n, s.info)
        return _sorted_by_cell(out)

    # -- integrators ---------------------------------------------------------------------
    def rk4(
        self,
        s: Samples,
        t0: float = 0.0,
        t1: float = 1.0,
        steps: int = 50,
        callback: Any = None,
    ) -> Samples:
        """Classical RK4 with ``steps`` equal steps from ``t0`` to ``t1``; collective.

        ``callback(step, t, samples)`` (collective) is called after every step.
        """
        if not isinstance(steps, int | np.integer) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        h = (t1 - t0) / steps
        s = self.relocate(s)
        for i in range(steps):
            t = t0 + i * h
            x, c = s.x, s.cells
            k1, c = self.velocity(t, x, c)
            k2, _ = self.velocity(t + h / 2, x + h / 2 * k1, c)
            k3, _ = self.velocity(t + h / 2, x + h / 2 * k2, c)
            k4, _ = self.velocity(t + h, x + h * k3, c)
            s.x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            s.cells = c
            s = self.relocate(s)
            if callback is not None:
                callback(i + 1, t0 + (i + 1) * h, s)
        return s

    def rk45(
        self,
        s: Samples,
        t0: float = 0.0,
        t1: float = 1.0,
        rtol: float = 1e-5,
        h0: float = 0.05,
        max_steps: int = 100000,
        stops: list[float] | None = None,
        callback: Any = None,
    ) -> Samples:
        """Dormand–Prince 5(4) with one global step size; collective.

        The error estimate is the largest ``|x5 − x4|`` over all samples on all ranks divided by
        ``rtol`` times the domain diameter, so every rank takes the same steps. Steps are
        shortened to land on every time of ``stops`` (strictly between ``t0`` and ``t1``) and
        on ``t1``; ``callback(j, t, samples)`` (collective) is called at each of them, ``j``
        counting from 1.
        """
        if not rtol > 0:
            raise ValueError(f"rtol must be positive, got {rtol!r}")
        glo, ghi = global_bbox(self.mc.vertices.reshape(-1, self.mc.d), self.comm)
        diam = float(np.linalg.norm(ghi - glo))
        tol = rtol * max(diam, 1e-300)
        sign = 1.0 if t1 >= t0 else -1.0
        inner = sorted(
            (
                float(u)
                for u in (stops or [])
                if sign * (u - t0) > 1e-14 and sign * (t1 - u) > 1e-14
            ),
            key=lambda u: sign * u,
        )
        targets = [*inner, float(t1)]
        t = t0
        h = sign * min(abs(h0), abs(t1 - t0))
        s = self.relocate(s)
        steps = 0
        for j, stop in enumerate(targets):
            while sign * (stop - t) > 1e-14:
                hs = sign * min(abs(h), abs(stop - t))
                x, c = s.x, s.cells
                k = []
                for q in range(7):
                    xs = x + hs * sum((a * kk for a, kk in zip(_DP_A[q], k, strict=False)), 0.0 * x)
                    kv, cq = self.velocity(t + _DP_C[q] * hs, xs, c)
                    if q == 0:
                        c = cq
                    k.append(kv)
                x5 = x + hs * sum(b * kk for b, kk in zip(_DP_B5, k, strict=True))
                x4 = x + hs * sum(b * kk for b, kk in zip(_DP_B4, k, strict=True))
                local = float(np.abs(x5 - x4).max()) if x.size else 0.0
                err = self.comm.allreduce(local, op=MPI.MAX) / tol
                steps += 1
                if steps > max_steps:
                    raise RuntimeError(f"RK45 did not reach t = {t1} in {max_steps} steps")
                if err <= 1.0:
                    t = stop if abs(hs) >= abs(stop - t) * (1 - 1e-12) else t + hs
                    s.x, s.cells = x5, c
                    s = self.relocate(s)
                else:
                    self.stats["rejected_steps"] += 1
                # a step shortened to hit a stop does not shrink the next one
                grow = min(5.0, max(0.2, 0.9 * (max(err, 1e-10)) ** -0.2))
                shortened = abs(hs) < abs(h) and err <= 1.0
                h = sign * max(abs(h), abs(hs) * grow) if shortened else hs * grow
            if callback is not None:
                callback(j + 1, t, s)
        self.stats["steps"] = steps
        return s
