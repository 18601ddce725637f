r"""Batched evaluation of the velocity :math:`v_t = F_t / p_t` of a solved path at samples.

:class:`FieldEvaluator` keeps, per cell, the Bernstein coefficients of :math:`p_0, p_1`
(DG\ :sub:`k`) and of each grid flux (DG\ :sub:`k-1`), together with the inverse affine map, in
one record per cell: a stage of the integrator gathers those records once and evaluates every
sample with a few products of barycentric coordinates.

Any other velocity (a network, :mod:`beckmann.requ`) can drive :class:`~beckmann.transport.
integrate.Transporter` if it offers the same two methods, ``fast_values`` and ``values``, and a
``cells`` attribute (the :class:`~beckmann.locate.MeshCells` that locate its samples).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann.density.bernstein import bernstein_matrix, monomials, multinomials
from beckmann.locate import INSIDE_TOL, MeshCells, cell_values
from beckmann.paths import PathFlux

__all__ = ["FieldEvaluator", "PathDensity"]

FloatArray = npt.NDArray[np.float64]


class FieldEvaluator:
    """Batched evaluation of ``v_t = F_t / p_t`` of a :class:`PathFlux` at located points.

    Everything a point needs is gathered per cell once: nodal values of ``p0, p1`` (DG_k) and of
    each grid flux (DG_{k-1}); the basis is tabulated with basix at all points at once.
    """

    def __init__(self, pf: PathFlux, cells: MeshCells | None = None) -> None:
        sol = pf.sol
        self.pf = pf
        self.path = pf.path
        self.cells = cells if cells is not None else MeshCells(sol.msh)
        k = sol.degree
        self.P0, self.el_p = cell_values(sol.p0, k, self.cells)
        self.P1, _ = cell_values(sol.p1, k, self.cells)
        self.F = []
        # the fluxes' own degree: k - 1 for ∇φ of P_k, k for a mixed run's RT_k flux (in DG_k)
        self.kf = int(pf.fluxes[0].function_space.ufl_element().embedded_superdegree)
        for F in pf.fluxes:
            arr, self.el_f = cell_values(F, self.kf, self.cells)
            self.F.append(arr)
        d = self.cells.d
        self.k = k
        # scaled Bernstein coefficients: value = Σ_α c_α ∏ λ^α (see monomials)
        Mp = bernstein_matrix(self.el_p) * multinomials(k, d)[:, None]
        Mf = bernstein_matrix(self.el_f) * multinomials(self.kf, d)[:, None]
        self.Cp = np.ascontiguousarray(np.stack([self.P0 @ Mp.T, self.P1 @ Mp.T], axis=2))
        self.Cf = [np.ascontiguousarray(np.einsum("ij,cjd->cid", Mf, F)) for F in self.F]
        # one record per cell (geometry, densities, the flux of a one-solve path): a single
        # gather per stage instead of several
        mc = self.cells
        parts = [mc.K.reshape(mc.n_local, -1), mc.x0, self.Cp.reshape(mc.n_local, -1)]
        if len(self.Cf) == 1:
            parts.append(self.Cf[0].reshape(mc.n_local, -1))
        self.recT = np.ascontiguousarray(np.concatenate(parts, axis=1).T)

    def fast_values(
        self, t: float, x: FloatArray, cells: npt.NDArray[np.int32]
    ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Velocity at ``x`` assuming each point is still in its cell ``cells`` (all >= 0).

        Returns the velocity and the mask of points that really are inside their cell; the
        others' values are garbage and must be recomputed after a search. Local.
        """
        d = self.cells.d
        n = x.shape[0]
        # structure of arrays: rows of recT are per-cell quantities, gathered contiguously
        R = np.take(self.recT, cells, axis=1)
        o = d * d
        y = [x[:, j] - R[o + j] for j in range(d)]
        lam = np.empty((d + 1, n))
        for i in range(d):
            acc = R[i * d] * y[0]
            for j in range(1, d):
                acc += R[i * d + j] * y[j]
            lam[i + 1] = acc
        o += d
        lam[0] = 1.0 - lam[1:].sum(axis=0)
        inside = lam.min(axis=0) >= -INSIDE_TOL
        nP = self.Cp.shape[1]
        phi = monomials(lam.T, self.k).T
        q0 = phi[0] * R[o]
        q1 = phi[0] * R[o + 1]
        for j in range(1, nP):
            q0 += phi[j] * R[o + 2 * j]
            q1 += phi[j] * R[o + 2 * j + 1]
        o += 2 * nP
        psi = monomials(lam.T, self.kf).T
        F = np.zeros((n, d))
        if len(self.Cf) == 1:
            nF = psi.shape[0]
            for c in range(d):
                acc = psi[0] * R[o + c]
                for j in range(1, nF):
                    acc += psi[j] * R[o + j * d + c]
                F[:, c] = acc
        else:
            lamr = np.ascontiguousarray(lam.T)
            psir = monomials(lamr, self.kf)
            for j, w in self.pf.weights(t):
                if w != 0.0:
                    F += w * np.einsum("nj,njd->nd", psir, self.Cf[j][cells])
        p = self.path.density(t, q0, q1)
        return F / p[:, None], inside

    def values(
        self, t: float, cells: npt.NDArray[np.int32], lam: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Velocity ``(n, d)`` and density ``p_t`` ``(n,)`` at barycentric ``lam`` in ``cells``.

        Local (no communication).

        The polynomials are evaluated in Bernstein form, products of barycentric coordinates,
        which for low degree is cheaper than a general tabulation.
        """
        n = lam.shape[0]
        d = self.cells.d
        if n == 0:
            return np.zeros((0, d)), np.zeros(0)
        phi = monomials(lam, self.k)
        q = np.einsum("nj,njs->ns", phi, self.Cp[cells])
        q0, q1 = q[:, 0], q[:, 1]
        psi = monomials(lam, self.kf)
        F = np.zeros((n, d))
        for j, w in self.pf.weights(t):
            if w != 0.0:
                F += w * np.einsum("nj,njd->nd", psi, self.Cf[j][cells])
        p = self.path.density(t, q0, q1)
        return F / p[:, None], p


class PathDensity:
    """The path's density ``p_t`` at located samples (for ``log p_t`` along trajectories).

    ``p0, p1`` are held per cell in scaled Bernstein form (as in :class:`FieldEvaluator`);
    ``p_t = path.density(t, p0, p1)``. It needs no flux, so it also serves a network velocity,
    whose samples follow the same path. Building it is collective; evaluating is local.

    Args:
        p0: Source density (finite-element function).
        p1: Target density.
        path: A bound :class:`~beckmann.paths.ProbabilityPath` (its ``density`` is used).
        cells: The mesh's :class:`~beckmann.locate.MeshCells`.
    """

    def __init__(self, p0: Any, p1: Any, path: Any, cells: MeshCells) -> None:
        self.cells = cells
        self.path = path
        k = int(p0.function_space.ufl_element().embedded_superdegree)
        P0, el = cell_values(p0, k, cells)
        P1, _ = cell_values(p1, k, cells)
        M = bernstein_matrix(el) * multinomials(k, cells.d)[:, None]
        self.k = k
        self.Cp = np.ascontiguousarray(np.stack([P0 @ M.T, P1 @ M.T], axis=2))

    def __call__(self, t: float, x: FloatArray, cells: npt.NDArray[np.int32]) -> FloatArray:
        """``p_t`` at points ``x`` in local cells ``cells`` (all >= 0); local."""
        if x.shape[0] == 0:
            return np.zeros(0)
        lam = self.cells.barycentric(x, cells)
        q = np.einsum("nj,njs->ns", monomials(lam, self.k), self.Cp[cells])
        return np.asarray(self.path.density(t, q[:, 0], q[:, 1]), dtype=np.float64)
