r"""The continuity-in-θ report of a finished sweep (docs/math.md, "Continuity in θ").

*Separate*: for pairs of grid points, ``‖φ(θ) − φ(θ')‖_∞`` (over the dofs) and
``‖F(θ) − F(θ')‖_∞`` (over the flux values, Euclidean norm per point); their modulus of
continuity in ``|θ − θ'|`` (Euclidean, in parameter units), the fitted exponent
(:func:`beckmann.holder.fit_exponent`) and the seminorm with that exponent clipped to
``[0, 1]``. *Joint*: :func:`beckmann.holder.estimate` on the points :math:`(x, \theta)` of a
random subset of dofs at every θ, with values φ. *C^{k,α}* (opt-in):
:mod:`beckmann.sweep.holder_norms`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann import holder
from beckmann._dolfinx import MPI
from beckmann.sweep.holder_norms import holder_report
from beckmann.sweep.modulus import pairs_to_compare, theta_modulus
from beckmann.sweep.store import SweepStore

__all__ = ["continuity_report"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _joint(
    store: SweepStore,
    comm: MPI.Comm,
    done: list[int],
    theta: FloatArray,
    vals: FloatArray,
    lo: int,
    hi: int,
    joint_points: int,
) -> dict[str, Any]:
    coords = comm.bcast(store.layout()[0] if comm.rank == 0 else None)
    total = coords.shape[0]
    per_theta = max(16, joint_points // len(done))
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(total, size=min(per_theta, total), replace=False))
    mine = pick[(pick >= lo) & (pick < hi)]
    X = np.vstack([np.hstack([coords[mine], np.tile(t, (mine.size, 1))]) for t in theta])
    Y = np.concatenate([vals[k][mine - lo] for k in range(len(done))])
    d = holder.estimate(X, Y, comm, method="fast").to_dict()
    return {
        "exponent": d["exponent"],
        "alpha": d["alpha"],
        "seminorm": d["seminorm"],
        "points": d["n_points"],
        "delta_min": d["delta_min"],
        "note": "points (x, θ) in R^(d+m), Euclidean distance, values φ",
    }


def continuity_report(
    store: SweepStore,
    comm: MPI.Comm,
    *,
    joint_points: int = 20000,
    holder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Continuity in θ of φ and F from a store; collective, the same result on every rank.

    The dofs are split over the ranks and the pair maxima reduced, so pairs of values held on
    different ranks are never needed. ``holder = {"k": k, "alpha": α, "pairs": n}`` adds
    ``out["holder"]`` (:func:`beckmann.sweep.holder_norms.holder_report`).
    """
    done = store.completed()
    theta = store.grid.values[done]
    if len(done) < 2:
        return {"note": "fewer than two θ: no continuity estimate"}
    pairs = pairs_to_compare(theta)
    sizes = store.sizes()
    out: dict[str, Any] = {"pairs": int(pairs.shape[0]), "thetas": len(done)}
    dist = np.linalg.norm(theta[pairs[:, 0]] - theta[pairs[:, 1]], axis=1)
    has_flux = comm.bcast(store.has(done[0], "flux") if comm.rank == 0 else None)
    for name, total in (("potential", sizes[0]), ("flux", sizes[1])):
        if name == "flux" and not has_flux:
            continue
        lo = total * comm.rank // comm.size
        hi = total * (comm.rank + 1) // comm.size
        vals = np.stack([store.read(i, name, slice(lo, hi)) for i in done])
        d = np.zeros(pairs.shape[0])
        for c in range(0, pairs.shape[0], 256):
            p = pairs[c : c + 256]
            diff = vals[p[:, 0]] - vals[p[:, 1]]
            if diff.ndim == 3:
                diff = np.sqrt((diff**2).sum(axis=2))
            d[c : c + 256] = np.abs(diff).max(axis=1, initial=0.0) if diff.shape[1] else 0.0
        dmax = np.empty_like(d)
        comm.Allreduce(d, dmax, op=MPI.MAX)
        key = "phi" if name == "potential" else "flux"
        out[key] = theta_modulus(dist, dmax)
        if name == "potential":
            out["joint"] = _joint(store, comm, done, theta, vals, lo, hi, joint_points)
    out["norm"] = "sup over dofs (phi) / flux values (F); |θ−θ'| Euclidean in parameter units"
    if holder is not None:
        out["holder"] = holder_report(store, comm, done, theta, **holder)
    return out
