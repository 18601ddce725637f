r"""The reduced certificate on a tensor grid of nodes, for a separated target (docs/reduced.md).

When the owned dofs lie on a grid ``X × Y`` (as on ``unit_square`` meshes, at any degree) and
the target separates, ``f = Σ_r s_r u_r(x) v_r(y)``
(:func:`beckmann.density.separable.separate`), the diagonal bound of the interpolant truth,
``ν Σ_i D_i r_i²`` with ``Z r = f − Ξ e`` and ``e = Z d`` (:meth:`ReducedModel.certify_many`),
needs no nodal target:

.. math:: \sum_i D_i (f - \Xi e)_i^2 = S - 2 e^\top h + e^\top G_D e,\qquad
          S = \sum_{r,s} s_r s_s (u_r u_s)^\top \mathbf D (v_r v_s),\quad
          h_m = \sum_r s_r u_r^\top \mathbf H_m v_r,

with ``G_D = Ξᵀ diag(D) Ξ`` once, ``𝐃`` and ``𝐇_m`` the nodal arrays ``D`` and ``D ξ_m``
laid out on the grid, and the mass ``Z = Σ_r s_r u_rᵀ 𝐦 v_r`` likewise. Per θ that is
``len(X) + len(Y)`` target values and, for the contractions, ``O(M len(Y))`` operations when the
factors of many θ repeat (a grid over several parameters: ``u`` reads ``a``, ``v`` reads ``b``)
instead of ``O(M N)``. The expansion cancels: the computed value is charged the rounding bound
``γ_n (√S_abs + Σ_m |e_m| √G_D,mm)²`` (Higham's ``γ_n = n u / (1 − n u)`` for ``n`` the longest
chain of roundings of one value, ``S_abs`` the same form of ``|s|, |u|, |v|``), so the bound
stays an upper bound. Collective.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann._mpi import allreduce_array
from beckmann.density.expression import Expression
from beckmann.density.separable import Separated, separate

__all__ = ["TensorCertificate", "TensorGrid", "separated_target"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: The local box of a rank's grid indices may hold at most this many times its owned dofs
#: (partitions are compact; a scattered one falls back to the nodal certificate).
_BOX_FILL = 4
#: θ per block of :meth:`TensorGrid.nodal`.
_SNAP_BLOCK = 16
#: θ per block of a contraction whose factors do not repeat.
_PAIR_BLOCK = 64
#: Rows per partial sum of ``G_D = Ξᵀ diag(D) Ξ``.
_CHUNK = 1024
#: Coordinates within this many ulps of the extent are one grid line (docs/reduced.md).
_SNAP = 16


class TensorGrid:
    """The owned dofs as points of a global grid ``X × Y``: indices and the rank's box."""

    def __init__(self, X: FloatArray, Y: FloatArray, ix: IntArray, iy: IntArray) -> None:
        self.X, self.Y = X, Y
        self.i0 = int(ix.min(initial=0))
        self.j0 = int(iy.min(initial=0))
        self.ix, self.iy = ix - self.i0, iy - self.j0
        self.shape = (int(self.ix.max(initial=-1)) + 1, int(self.iy.max(initial=-1)) + 1)
        self.Xl = X[self.i0 : self.i0 + self.shape[0]]
        self.Yl = Y[self.j0 : self.j0 + self.shape[1]]

    @classmethod
    def detect(cls, x: FloatArray, comm: MPI.Comm) -> TensorGrid | None:
        """The grid of the owned coordinates ``x`` ``(n, 3)``, or ``None`` on every rank.

        A grid: all ``z = 0``, and the global distinct ``x`` and ``y`` values (equal within
        :data:`_SNAP` ulps of the extent: mesh generators round ``i h`` differently per cell)
        number ``nx · ny`` = the global dofs, at distinct local grid points.
        """
        local = [np.unique(x[:, c]) for c in (0, 1)]
        # a rank's distinct values (rounding may double a grid line) must fit its box: an
        # unstructured mesh stops here, before any values are gathered
        ok = bool(np.all(x[:, 2] == 0.0)) and (
            local[0].size * local[1].size <= 4 * _BOX_FILL * x.shape[0] + 256)
        if not comm.allreduce(ok, MPI.LAND):
            return None
        axes, idx = [], []
        for c in (0, 1):
            allv = np.unique(np.concatenate(comm.allgather(local[c])))
            ext = float(np.max(np.abs(allv), initial=0.0)) or 1.0
            tol = _SNAP * np.finfo(np.float64).eps * ext
            start = np.flatnonzero(np.diff(allv, prepend=-np.inf) > tol)
            # a cluster's width is within tol of its first value: else not a grid
            ends = np.append(allv[start[1:] - 1], allv[-1]) if allv.size else allv
            if allv.size and np.any(ends - allv[start] > tol):
                return None  # (the values are global: every rank returns here)
            axes.append(allv[start])
            idx.append(np.searchsorted(allv[start], x[:, c], side="right") - 1)
        X, Y = axes
        if comm.allreduce(x.shape[0], MPI.SUM) != X.size * Y.size:
            return None
        grid = cls(X, Y, idx[0], idx[1])
        distinct = np.unique(grid.ix * grid.shape[1] + grid.iy).size == x.shape[0]
        small = grid.shape[0] * grid.shape[1] <= _BOX_FILL * max(x.shape[0], 1) + 64
        return grid if comm.allreduce(small and distinct, MPI.LAND) else None

    def nodal(self, sep: Separated, values: FloatArray, floor: float = 0.0) -> FloatArray:
        """``(K, n)``: the separated target (plus ``floor``) at the owned dofs, a row per θ.

        Per block of θ the terms on the rank's box, then one gather of the dofs' grid points.
        Equal to the nodal expression to round-off (not bitwise: the training snapshots only).
        """
        K, R = values.shape[0], len(sep)
        out = np.empty((K, self.ix.size))
        flat = self.ix * self.shape[1] + self.iy
        for s0 in range(0, K, _SNAP_BLOCK):
            T = values[s0 : s0 + _SNAP_BLOCK]
            # the terms as one batched product (θ, x, term) @ (θ, term, y); the floor a term
            U = np.empty((T.shape[0], self.shape[0], R + 1))
            V = np.empty((T.shape[0], R + 1, self.shape[1]))
            for r in range(R):
                U[:, :, r] = sep.factor(r, "", self.Xl, T) * sep.factor(r, "x", self.Xl, T)
                V[:, r, :] = sep.factor(r, "y", self.Yl, T)
            U[:, :, R], V[:, R, :] = float(floor), 1.0
            out[s0 : s0 + T.shape[0]] = np.matmul(U, V).reshape(T.shape[0], -1)[:, flat]
        return out

    def lay_out(self, V: FloatArray) -> FloatArray:
        """Rows of nodal values ``(L, n)`` as ``(L, bx, by)`` arrays on the rank's box."""
        out = np.zeros((V.shape[0], *self.shape))
        out[:, self.ix, self.iy] = V
        return out


def separated_target(sec: dict[str, Any], names: list[str], x: FloatArray,
                     comm: MPI.Comm) -> tuple[Separated, TensorGrid] | None:
    """The separated form of an expression target and the grid of the owned dofs, or ``None``.

    ``sec`` is the ``[target]`` section, ``x`` the owned coordinates ``(n, 3)``. ``None``: not an
    expression, not separated, or not a grid. Collective.
    """
    if sec.get("kind") != "expression":
        return None
    fixed = {k: v for k, v in sec.get("params", {}).items() if k not in names}
    sep = separate(Expression(sec["expr"]), names, fixed)
    grid = TensorGrid.detect(x, comm) if sep is not None else None
    return None if sep is None or grid is None else (sep, grid)


def _distinct(values: FloatArray, cols: list[int]) -> tuple[FloatArray, IntArray]:
    """Representative rows of the distinct values in ``cols`` and each row's representative."""
    if not cols:
        return values[:1], np.zeros(values.shape[0], dtype=np.int64)
    _, first, inv = np.unique(values[:, cols], axis=0, return_index=True, return_inverse=True)
    return values[first], inv.ravel()


class TensorCertificate:
    """``ν Σ D r² / Z²`` bounds of many θ from a separated target (module docstring).

    Args:
        sep: The target's separated form (its ``names`` are the columns of θ).
        grid: The owned dofs on a grid.
        xi: ``(n, M)`` nodal basis (owned rows).
        D: Owned ``diag(M)``; ``m``: owned ``M 1``; ``nu``: ``M ≤ ν diag(M)``.
        floor: A constant added to the target (``[target] floor``).
    """

    def __init__(self, sep: Separated, grid: TensorGrid, xi: FloatArray, D: FloatArray,
                 m: FloatArray, nu: float, comm: MPI.Comm, floor: float = 0.0) -> None:
        self.sep, self.grid, self.nu, self.comm = sep, grid, float(nu), comm
        self.floor = float(floor)
        self.M = xi.shape[1]
        bx, by = grid.shape
        # [m, D ξ_1, ..., D ξ_M] on the box, as (bx, L·by): one GEMM per term contracts x
        H = grid.lay_out(np.vstack([m[None, :], (D[:, None] * xi).T]))
        self._H = np.ascontiguousarray(H.transpose(1, 0, 2).reshape(bx, -1))
        self._D = np.ascontiguousarray(grid.lay_out(D[None, :])[0])
        # G_D by chunks of rows, then their sum: no sum longer than _CHUNK + chunks (the charge)
        parts = [xi[s : s + _CHUNK].T @ (D[s : s + _CHUNK, None] * xi[s : s + _CHUNK])
                 for s in range(0, xi.shape[0], _CHUNK)]
        G = np.sum(parts, axis=0) if parts else np.zeros((self.M, self.M))
        self.GD = allreduce_array(np.ascontiguousarray(G), MPI.SUM, comm)
        # the longest chain of roundings of one value: a contraction over x then y (or a chunk
        # of G_D then the chunks), the terms' pairs, the M coefficients, the ranks
        longest = max(bx + by, _CHUNK + len(parts))
        n = comm.allreduce(longest, MPI.MAX) + comm.size + (len(sep) + 1) ** 2 + 2 * self.M + 16
        u = np.finfo(np.float64).eps / 2
        self.gamma = n * u / (1.0 - n * u)

    def _terms(self, values: FloatArray) -> list[tuple[FloatArray, tuple[FloatArray, IntArray],
                                                        tuple[FloatArray, IntArray]]]:
        """Per term (the floor as one more): ``s`` ``(K,)``, distinct ``u`` and ``v`` rows."""
        names = list(self.sep.names)
        out = []
        for r in range(len(self.sep)):
            uses = self.sep.uses[r]
            s = self.sep.factor(r, "", self.grid.Xl, values)[:, 0]
            fac = []
            for g, coord in (("x", self.grid.Xl), ("y", self.grid.Yl)):
                rep, inv = _distinct(values, [names.index(k) for k in sorted(uses[g])])
                fac.append((self.sep.factor(r, g, coord, rep), inv))
            out.append((s, fac[0], fac[1]))
        if self.floor:
            one = np.zeros(values.shape[0], dtype=np.int64)
            out.append((np.full(values.shape[0], self.floor),
                        (np.ones((1, self.grid.shape[0])), one),
                        (np.ones((1, self.grid.shape[1])), one)))
        return out

    @staticmethod
    def _contract(Hx: FloatArray, by: int, U: tuple[FloatArray, IntArray],
                  V: tuple[FloatArray, IntArray]) -> FloatArray:
        """``(K, L)``: ``out[k, l] = U[k]ᵀ H_l V[k]`` with ``Hx`` the ``(bx, L·by)`` layout."""
        (Ud, iu), (Vd, iv) = U, V
        K, L = iu.shape[0], Hx.shape[1] // max(by, 1)
        if Ud.shape[0] * Vd.shape[0] <= 4 * K + 64:  # repeating factors: all pairs, then pick
            T = (Ud @ Hx).reshape(Ud.shape[0], L, by)  # (nU, L, by)
            P = T @ Vd.T  # (nU, L, nV)
            return np.asarray(P[iu, :, iv], dtype=np.float64)
        out = np.empty((K, L))
        for s in range(0, K, _PAIR_BLOCK):  # distinct factors: θ by θ, in blocks
            sl = slice(s, s + _PAIR_BLOCK)
            T = (Ud[iu[sl]] @ Hx).reshape(-1, L, by)
            out[sl] = np.einsum("klj,kj->kl", T, Vd[iv[sl]])
        return out

    def residual_bounds(self, values: FloatArray, D: FloatArray) -> FloatArray:
        """``ρ_k ≥ ν Σ_i D_i r_i²`` for the θ rows of ``values``, coefficients ``D``."""
        K = values.shape[0]
        by = self.grid.shape[1]
        terms = self._terms(values)
        L = self.M + 1
        mh = np.zeros((K, L))  # [Z, h_1..h_M] (local sums)
        S = np.zeros(K)
        Sabs = np.zeros(K)
        for s, U, V in terms:
            mh += s[:, None] * self._contract(self._H, by, U, V)
        Dx = self._D
        for a, (sa, Ua, Va) in enumerate(terms):
            for b in range(a, len(terms)):
                sb, Ub, Vb = terms[b]
                w = 1.0 if a == b else 2.0
                UU, VV = _product(Ua, Ub), _product(Va, Vb)
                S += w * sa * sb * self._contract(Dx, by, UU, VV)[:, 0]
                UA, VA = _product(Ua, Ub, absolute=True), _product(Va, Vb, absolute=True)
                Sabs += w * np.abs(sa * sb) * self._contract(Dx, by, UA, VA)[:, 0]
        packed = allreduce_array(np.hstack([mh, S[:, None], Sabs[:, None]]), MPI.SUM, self.comm)
        Zf, h, S, Sabs = packed[:, 0], packed[:, 1:L], packed[:, L], packed[:, L + 1]
        E = Zf[:, None] * D
        eGe = np.einsum("km,mn,kn->k", E, self.GD, E, optimize=True)
        q = S - 2.0 * np.einsum("km,km->k", E, h) + eGe
        g = np.sqrt(np.maximum(np.diag(self.GD), 0.0))
        charge = self.gamma * (np.sqrt(np.maximum(Sabs, 0.0)) + np.abs(E) @ g) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = self.nu * (np.maximum(q, 0.0) + charge) / Zf**2 * (1.0 + self.gamma) ** 2
        return np.where(Zf > 0, rho, np.inf)


def _product(A: tuple[FloatArray, IntArray], B: tuple[FloatArray, IntArray], *,
             absolute: bool = False) -> tuple[FloatArray, IntArray]:
    """The distinct rows of ``A ∘ B`` per θ (from their representatives)."""
    (Ad, ia), (Bd, ib) = A, B
    key = ia * (Bd.shape[0]) + ib
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    P = Ad[ia[first]] * Bd[ib[first]]
    return (np.abs(P) if absolute else P), inv.ravel()
