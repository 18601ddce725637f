r"""The continuity-in-θ report of a finished sweep (docs/math.md, "Continuity in θ").

*Separate*: for pairs of stored θ, ``‖φ(θ) − φ(θ')‖_∞`` (over the dofs) and
``‖F(θ) − F(θ')‖_∞`` (over the flux values, Euclidean norm per point); their modulus of
continuity in ``|θ − θ'|`` (Euclidean, in parameter units), the fitted exponent
(:func:`beckmann.holder.fit_exponent`) and the seminorm with that exponent clipped to
``[0, 1]``. *Joint* (opt-in, ``joint_points > 0``: on a small sweep it costs more than the
solves): :func:`beckmann.holder.estimate` on the points :math:`(x, \theta)` of a
random subset of dofs at every θ, with values φ. *C^{k,α}* (opt-in):
:mod:`beckmann.sweep.holder_norms`.

**One streaming pass.** The stored θ are read once, in index order, each rank reading only its
slice of the dofs (``N / ranks`` values). Each θ is compared with its predecessor and with at
most ``anchors`` evenly spread θ kept in memory (:func:`beckmann.sweep.modulus.stream_pairs`),
so the time is ``O(K · anchors · N / ranks)`` and the memory ``O(anchors · N / ranks)`` per
rank; with ``K <= anchors`` every pair is compared (the exact sup over the grid's pairs). The
sup over pairs is taken over this documented subset, so the modulus is a lower bound of the
grid's for large grids; the consecutive pairs give the finest scales, the anchors the far ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann import holder
from beckmann._dolfinx import MPI
from beckmann._mpi import on_root
from beckmann.sweep.holder_norms import holder_report
from beckmann.sweep.modulus import (
    anchor_positions,
    coefficient_continuity,
    stream_pairs,
    theta_modulus,
)
from beckmann.sweep.store import SweepStore

__all__ = ["ContinuityStream", "continuity_report", "joint_pick"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _joint(
    comm: MPI.Comm, theta: FloatArray, sample: list[FloatArray], coords: FloatArray
) -> dict[str, Any]:
    """Joint Hölder estimate on the points (x, θ) of the sampled dofs; collective."""
    X = np.vstack([np.hstack([coords, np.tile(t, (coords.shape[0], 1))]) for t in theta])
    Y = np.concatenate(sample)
    d = holder.estimate(X, Y, comm, method="fast").to_dict()
    return {
        "exponent": d["exponent"],
        "alpha": d["alpha"],
        "seminorm": d["seminorm"],
        "points": d["n_points"],
        "delta_min": d["delta_min"],
        "note": "points (x, θ) in R^(d+m), Euclidean distance, values φ",
    }


#: Rows per block of :func:`_sup_diffs`: its work arrays (0.5 MB for a 2-d flux) stay in cache;
#: a pair of 524k flux values then costs 1.8 ms against 2.6 ms in whole-array passes.
SUP_BLOCK = 1 << 15


def _sup_diff(a: FloatArray, b: FloatArray, scratch: dict[Any, FloatArray] | None = None) -> float:
    """``max |a − b|`` over the rows (Euclidean norm per row for vector values ``(n, d)``)."""
    return _sup_diffs([a], b, scratch)[0]


def _sup_diffs(
    olds: list[FloatArray], cur: FloatArray, scratch: dict[Any, FloatArray] | None = None
) -> list[float]:
    """:func:`_sup_diff` of ``cur`` against each of ``olds``, in one pass over ``cur``.

    In blocks of :data:`SUP_BLOCK` rows, each block of ``cur`` compared with every partner
    while it is in cache; ``scratch`` keeps the work arrays between calls (no allocation per
    pair, which made a pair of 1M flux values 1.7x dearer).
    """
    n = cur.shape[0]
    top = [0.0] * len(olds)
    if n == 0 or not olds:
        return top
    scratch = {} if scratch is None else scratch
    key = ("block", *cur.shape[1:])
    work = scratch.get(key)
    if work is None:
        work = scratch[key] = np.empty((min(n, SUP_BLOCK), *cur.shape[1:]))
    sq = scratch.get(("sq",))
    if cur.ndim > 1 and (sq is None or sq.size < work.shape[0]):
        sq = scratch[("sq",)] = np.empty(work.shape[0])
    for start in range(0, n, work.shape[0]):
        stop = min(n, start + work.shape[0])
        diff, c = work[: stop - start], cur[start:stop]
        for k, a in enumerate(olds):
            np.subtract(a[start:stop], c, out=diff)
            if diff.ndim == 1:
                top[k] = max(top[k], float(diff.max()), -float(diff.min()))
                continue
            np.multiply(diff, diff, out=diff)  # columns summed one by one: 2x faster than einsum
            assert sq is not None
            q = sq[: stop - start]
            if diff.shape[1] > 1:  # the first two columns summed straight into q (no copy)
                np.add(diff[:, 0], diff[:, 1], out=q)
            else:
                np.copyto(q, diff[:, 0])
            for j in range(2, diff.shape[1]):
                q += diff[:, j]
            top[k] = max(top[k], float(q.max()))
    return top if cur.ndim == 1 else [float(np.sqrt(t)) for t in top]


class ContinuityStream:
    """The streaming pass of :func:`continuity_report`: push the θ in order, then finish.

    Each rank pushes its own share of the values of every θ (any partition of the dofs and
    flux values over the ranks: the pair sups are reduced with ``MAX``), and the values of its
    share of the joint estimate's dofs with their coordinates. Collective in :meth:`finish`.

    Args:
        theta: The θ values ``(K, m)`` in push order.
        names: The fields pushed (``"potential"``, optionally ``"flux"``).
        comm: The ranks that push.
        anchors: θ kept in memory (module docstring).
    """

    def __init__(
        self, theta: FloatArray, names: list[str], comm: MPI.Comm, *, anchors: int = 3
    ) -> None:
        self.theta, self.names, self.comm = theta, names, comm
        k = len(theta)
        self.pairs = stream_pairs(k, anchors)
        self.anchor_set = {int(a) for a in anchor_positions(k, anchors)}
        # pair number of (a, b): partners of b are its predecessor and the anchors before it
        self._where = {(int(a), int(b)): j for j, (a, b) in enumerate(self.pairs.tolist())}
        self.d = {n: np.zeros(self.pairs.shape[0]) for n in names}
        self._kept: dict[str, dict[int, FloatArray]] = {n: {} for n in names}
        self._prev: dict[str, FloatArray] = {}
        self.sample: list[FloatArray] = []
        self.pushed = 0
        self._scratch: dict[Any, FloatArray] = {}

    def push(self, values: dict[str, FloatArray], sample: FloatArray) -> None:
        """The next θ: this rank's share of each field, and of the joint estimate's dofs."""
        b = self.pushed
        for n in self.names:
            cur = values[n]
            partners = sorted({a for a in self._kept[n] if a < b} | ({b - 1} if b else set()))
            olds = [self._kept[n][a] if a in self._kept[n] else self._prev[n] for a in partners]
            for a, dist in zip(partners, _sup_diffs(olds, cur, self._scratch), strict=True):
                self.d[n][self._where[(a, b)]] = dist
            self._prev[n] = cur
            if b in self.anchor_set:
                self._kept[n][b] = cur
        self.sample.append(np.asarray(sample, dtype=np.float64))
        self.pushed += 1

    def finish(self, coords: FloatArray, *, joint: bool = True) -> dict[str, Any]:
        """The report (without ``holder``); ``coords`` of this rank's joint dofs. Collective.

        ``joint = False`` (``joint_points = 0``) leaves the joint estimate out: ``"joint"``
        then says how to ask for it.
        """
        comm, theta, pairs = self.comm, self.theta, self.pairs
        out: dict[str, Any] = {
            "pairs": int(pairs.shape[0]),
            "thetas": len(theta),
            "anchors": len(self.anchor_set),
            "pair_set": "consecutive stored θ and every θ against the anchors (all pairs when "
            "thetas <= anchors)",
        }
        dist = np.linalg.norm(theta[pairs[:, 0]] - theta[pairs[:, 1]], axis=1)
        for n in self.names:
            dmax = np.empty_like(self.d[n])
            comm.Allreduce(self.d[n], dmax, op=MPI.MAX)
            out["phi" if n == "potential" else "flux"] = theta_modulus(dist, dmax)
        out["joint"] = (
            _joint(comm, theta, self.sample, coords)
            if joint
            else {"off": "set sweep.joint_points (e.g. 20000) for the joint Hölder estimate"}
        )
        out["norm"] = "sup over dofs (phi) / flux values (F); |θ−θ'| Euclidean in parameter units"
        return out


def joint_pick(n_total: int, k: int, joint_points: int) -> IntArray:
    """The joint estimate's dofs: a fixed random subset of ``n_total`` (same on every rank)."""
    if joint_points <= 0:
        return np.zeros(0, dtype=np.int64)
    per_theta = max(16, joint_points // k)
    return np.sort(np.random.default_rng(0).choice(n_total, min(per_theta, n_total), False))


def continuity_report(
    store: SweepStore,
    comm: MPI.Comm,
    *,
    joint_points: int = 0,
    holder: dict[str, Any] | None = None,
    anchors: int = 3,
) -> dict[str, Any]:
    """Continuity in θ of φ and F from a store, in one pass; collective, same on every rank.

    The dofs are split over the ranks and the pair maxima reduced, so pairs of values held on
    different ranks are never needed. ``anchors`` bounds the θ held in memory (module
    docstring). A reduced store is reported from its coefficients
    (:func:`beckmann.sweep.modulus.coefficient_continuity`). ``holder = {"k": k, "alpha": α,
    "pairs": n}`` adds ``out["holder"]``
    (:func:`beckmann.sweep.holder_norms.holder_report`).
    """
    from beckmann.sweep.reduced import REDUCED_FILE, is_reduced

    if is_reduced(store.folder, comm):  # from the coefficients: no field per θ is stored

        def read() -> tuple[FloatArray, FloatArray]:
            import h5py

            with h5py.File(store.folder / REDUCED_FILE, "r") as h5:
                return np.asarray(h5["coefficients"][...]), np.asarray(h5["G"][...])

        D, G = on_root(comm, read)
        return coefficient_continuity(np.asarray(store.grid.values, dtype=np.float64), D, G)
    done = store.completed()
    theta = store.grid.values[done]
    k = len(done)
    if k < 2:
        return {"note": "fewer than two θ: no continuity estimate"}
    sizes = store.sizes()
    has_flux = comm.bcast(store.has(done[0], "flux") if comm.rank == 0 else None)
    names = ["potential"] + (["flux"] if has_flux else [])
    # every rank its owned dofs of the store's space (read exactly, any layout); the joint
    # estimate's dofs: a fixed random subset of layout d0's rows (as the memory stream's)
    V = store.space()
    pick = joint_pick(sizes[0], k, joint_points)
    mine = np.flatnonzero(np.isin(store.layout_rows(), pick)) if pick.size else pick
    coords = V.tabulate_dof_coordinates()[mine, : V.mesh.geometry.dim]
    stream = ContinuityStream(theta, names, comm, anchors=anchors)
    for i in done:  # each share of θ i opened and checked once for both fields
        fields = store.functions(i, names)
        values = {}
        for n, u in fields.items():  # owned values (views of this θ's own arrays)
            dm = u.function_space.dofmap
            bs, size = dm.index_map_bs, dm.index_map.size_local
            a = u.x.array[: size * bs]
            values[n] = a if bs == 1 else a.reshape(size, bs)
        stream.push(values, values["potential"][mine])
    out = stream.finish(coords, joint=joint_points > 0)
    if holder is not None:
        out["holder"] = holder_report(store, comm, done, theta, **holder)
    return out
