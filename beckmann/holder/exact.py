"""All pairs across ranks: the exact modulus of continuity and Hölder seminorm; collective.

Rank ``r`` handles its own pairs and, in steps ``s = 1, …, P/2``, the pairs between its block
and the block of rank ``r − s`` received from there (each cross pair is handled once: at
``s = P/2`` the two partners split the work in halves). Pairs are processed in chunks of at most
``chunk_pairs`` (bounded memory). ``O(n²/P)`` work per rank, one pass for the modulus at all
scales and the seminorm together. The reference the tree method (:mod:`.multiscale`) must match.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann._mpi import allreduce_array

__all__ = [
    "CHUNK_PAIRS",
    "ExactAccumulator",
    "exact_pairs",
    "pair_differences",
    "pair_distances2",
    "ratio",
]

FloatArray = npt.NDArray[np.float64]

#: Default number of pairs per chunk (memory bound of the all-pairs kernel).
CHUNK_PAIRS = 1 << 20


def pair_differences(Va: FloatArray, Vb: FloatArray) -> FloatArray:
    """``|V_a[i] − V_b[j]|`` (Euclidean over components) for all ``(i, j)``."""
    if Va.shape[1] == 1:
        return np.abs(Va[:, 0, None] - Vb[None, :, 0])
    D = np.zeros((Va.shape[0], Vb.shape[0]))
    for c in range(Va.shape[1]):
        t = Va[:, c, None] - Vb[None, :, c]
        D += t * t
    return np.sqrt(D)


def pair_distances2(Xa: FloatArray, Xb: FloatArray) -> FloatArray:
    """Squared distances ``|X_a[i] − X_b[j]|²`` for all ``(i, j)``."""
    D = np.zeros((Xa.shape[0], Xb.shape[0]))
    for c in range(Xa.shape[1]):
        t = Xa[:, c, None] - Xb[None, :, c]
        D += t * t
    return D


class ExactAccumulator:
    """Running maxima over pairs: per distance bin (for ω) and of the seminorm ratio."""

    def __init__(
        self, scales: FloatArray, alpha: float | None, dlo: float, dhi: float, chunk_pairs: int
    ) -> None:
        self.edges2 = np.asarray(scales, dtype=np.float64) ** 2
        self.binmax = np.zeros(self.edges2.size + 1)
        self.alpha = alpha
        self.dlo2 = max(dlo, 0.0) ** 2
        self.dhi2 = dhi**2
        self.semi = 0.0
        self.chunk_pairs = max(1, int(chunk_pairs))

    def block(self, Xa: FloatArray, Va: FloatArray, Xb: FloatArray, Vb: FloatArray) -> None:
        """Account for all pairs (a, b), a in block A, b in block B, in bounded chunks."""
        na, nb = Xa.shape[0], Xb.shape[0]
        if na == 0 or nb == 0:
            return
        cols = min(nb, self.chunk_pairs)
        rows = max(1, self.chunk_pairs // cols)
        for j0 in range(0, nb, cols):
            for i0 in range(0, na, rows):
                self._kernel(
                    Xa[i0 : i0 + rows], Va[i0 : i0 + rows], Xb[j0 : j0 + cols], Vb[j0 : j0 + cols]
                )

    def _kernel(self, Xa: FloatArray, Va: FloatArray, Xb: FloatArray, Vb: FloatArray) -> None:
        d2 = pair_distances2(Xa, Xb).ravel()
        diff = pair_differences(Va, Vb).ravel()
        if self.edges2.size:
            near = np.flatnonzero((d2 <= self.edges2[-1]) & (d2 > 0.0))
            if near.size:
                idx = np.searchsorted(self.edges2, d2[near])
                np.maximum.at(self.binmax, idx, diff[near])
        if self.alpha is not None:
            ok = (d2 > 0.0) & (d2 >= self.dlo2) & (d2 <= self.dhi2)
            if np.any(ok):
                r = ratio(diff[ok], d2[ok], self.alpha)
                self.semi = max(self.semi, float(r.max()))

    def modulus(self) -> FloatArray:
        """``ω`` at the scales: running maximum of the per-bin maxima."""
        return np.maximum.accumulate(self.binmax[:-1])


def ratio(diff: FloatArray, d2: FloatArray, alpha: float) -> FloatArray:
    """``diff / d^alpha`` from squared distances; the one formula both methods use."""
    if alpha == 0.0:
        return diff
    if alpha == 1.0:
        return diff / np.sqrt(d2)
    return diff / np.power(d2, 0.5 * alpha)


def exact_pairs(
    X: FloatArray,
    V: FloatArray,
    comm: MPI.Comm,
    scales: FloatArray,
    alpha: float | None,
    dlo: float,
    dhi: float,
    chunk_pairs: int,
) -> tuple[FloatArray, float]:
    """``(ω at scales, seminorm)`` over all pairs on all ranks; ``alpha=None``: no seminorm.

    The seminorm counts pairs with ``dlo <= d <= dhi``, ``d > 0``. Collective.
    """
    acc = ExactAccumulator(scales, alpha, dlo, dhi, chunk_pairs)
    n = X.shape[0]
    # own pairs: rows [i0, i1) against columns [i0, n) (the diagonal sub-block twice: harmless)
    rows = max(1, min(n, acc.chunk_pairs // max(n, 1)))
    for i0 in range(0, n, rows):
        acc.block(X[i0 : i0 + rows], V[i0 : i0 + rows], X[i0:], V[i0:])
    P, r = comm.size, comm.rank
    for s in range(1, P // 2 + 1):
        Xo, Vo = comm.sendrecv((X, V), dest=(r + s) % P, source=(r - s) % P)
        if 2 * s == P:
            # partners r and r + P/2 meet twice; each takes half of the pairs
            if r < P // 2:
                h = Xo.shape[0] // 2
                acc.block(X, V, Xo[:h], Vo[:h])
            else:
                h = n // 2
                acc.block(X[h:], V[h:], Xo, Vo)
        else:
            acc.block(X, V, Xo, Vo)
    mod = allreduce_array(acc.modulus(), MPI.MAX, comm)
    semi = float(comm.allreduce(acc.semi, op=MPI.MAX))
    return mod, semi
