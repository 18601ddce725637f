"""The scikit-fem + pyamg peer of the benchmarks: the P1 Neumann problem of the exact case.

Unit square (or any triangle mesh of it), p0 = 1, p1 = 1 + ½ cos(πx) cos(πy), so Δφ = p0 − p1 has
the mean-zero solution φ = cos(πx) cos(πy) / (4π²). The peer is written as a scikit-fem user would
write it: f at scikit-fem's default P1 quadrature points, the stiffness matrix, pyamg smoothed
aggregation + CG, then φ shifted to mean zero. Used by ``bench_solve.py`` (timing) and
``bench_l2.py`` (the L² error against beckmann on the same mesh).

The Neumann matrix is singular (A 1 = 0), and pyamg's CG on it (with b projected onto the
range) stops early, "indefinite", at a relative residual of 1e-8 to 1e-6 that depends on its random
initial guess. So u[0] = 0 is fixed instead: an SPD system with the same φ up to a constant, which
CG solves from a zero initial guess to the tolerance asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PeerSolution:
    """The peer's mean-zero P1 potential on ``basis`` and how the solve went."""

    basis: object
    u: np.ndarray
    iterations: int
    residual: float


def unit_square(n: int):
    """scikit-fem's own n × n triangle mesh of the unit square."""
    from skfem import MeshTri

    grid = np.linspace(0.0, 1.0, n + 1)
    return MeshTri.init_tensor(grid, grid)


def from_triangles(points: np.ndarray, cells: np.ndarray):
    """A scikit-fem mesh from (points, triangles) arrays, e.g. a DOLFINx mesh's geometry."""
    from skfem import MeshTri

    return MeshTri(np.ascontiguousarray(points[:, :2].T), np.ascontiguousarray(cells.T))


def solve_neumann(mesh, rtol: float) -> PeerSolution:
    """The mean-zero P1 solution of −Δφ = p1 − p0 (see the module docstring) on ``mesh``."""
    import pyamg
    from skfem import Basis, ElementTriP1, LinearForm, asm
    from skfem.models.poisson import laplace

    basis = Basis(mesh, ElementTriP1())

    @LinearForm
    def rhs(v, w):
        return 0.5 * np.cos(np.pi * w.x[0]) * np.cos(np.pi * w.x[1]) * v

    @LinearForm
    def one(v, w):
        return v

    A = asm(laplace, basis).tocsr()
    b = asm(rhs, basis)
    b -= b.mean()  # onto the range of the singular Neumann matrix
    K = A[1:, 1:].tocsr()  # u[0] = 0: SPD (see the module docstring)
    ml = pyamg.smoothed_aggregation_solver(K, B=np.ones((K.shape[0], 1)), symmetry="symmetric")
    res: list[float] = []
    x0 = np.zeros(K.shape[0])
    u = np.concatenate([[0.0], ml.solve(b[1:], x0=x0, tol=rtol, accel="cg", residuals=res)])
    residual = float(np.linalg.norm(b - A @ u) / np.linalg.norm(b))
    mass = asm(one, basis)
    u -= mass @ u / mass.sum()
    return PeerSolution(basis, u, len(res) - 1, residual)


def l2_error(sol: PeerSolution, intorder: int = 8) -> float:
    """‖u − φ‖ in L² with a degree-``intorder`` rule."""
    from skfem import Basis, ElementTriP1, Functional

    fine = Basis(sol.basis.mesh, ElementTriP1(), intorder=intorder)

    @Functional
    def err(w):
        exact = np.cos(np.pi * w.x[0]) * np.cos(np.pi * w.x[1]) / (4 * np.pi**2)
        return (w["u"] - exact) ** 2

    return float(np.sqrt(err.assemble(fine, u=fine.interpolate(sol.u))))
