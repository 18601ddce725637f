"""The mass matrix of a space and certified bounds of its dual norm (docs/reduced.md).

:class:`MassNorm` gives ``M v``, ``M X`` for blocks, and certified upper bounds of ``bᵀM⁻¹b``
(a CG with its residual charged, or solve-free from ``M ≥ μ diag(M)``);
:func:`mass_diagonal_constant` the constants ``μ``, ``ν`` with ``μ D ≤ M ≤ ν D``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, PETSc, dolfinx, fem, ufl

__all__ = ["MassNorm", "agree_mask", "mass_diagonal_constant"]

FloatArray = npt.NDArray[np.float64]


def agree_mask(mask: npt.NDArray[np.bool_], comm: MPI.Comm) -> npt.NDArray[np.bool_]:
    """A boolean mask made identical on every rank (logical or); collective."""
    out = np.empty(mask.shape, dtype=np.uint8)
    comm.Allreduce(np.ascontiguousarray(mask, dtype=np.uint8), out, op=MPI.MAX)
    return out.astype(bool)


def mass_diagonal_constant(V: fem.FunctionSpace, *, upper: bool = False) -> float:
    """``μ`` with ``M ≥ μ diag(M)`` (``upper``: ``ν``, ``M ≤ ν diag(M)``) on affine meshes.

    On an affine cell ``M_K`` and its diagonal scale alike with the cell's volume, so
    ``μ = λ_min(D_K⁻¹ M_K)`` of the reference cell (basix tabulation, exact quadrature) bounds
    the sum over cells: ``M = Σ M_K ≥ μ Σ D_K = μ diag(M)``, and ``ν = λ_max`` likewise from
    above. ``μ = 1/2`` and ``ν = 2`` for P1 triangles (``2 diag(M)`` is the lumped mass).
    """
    import basix

    el = V.ufl_element().basix_element
    deg = 2 * int(V.ufl_element().embedded_superdegree)
    pts, wts = basix.make_quadrature(el.cell_type, deg)
    phi = el.tabulate(0, pts)[0, :, :, 0]
    Mk = phi.T @ (wts[:, None] * phi)
    d = np.sqrt(np.diag(Mk))
    ev = np.linalg.eigvalsh(Mk / np.outer(d, d))
    return float(ev.max() if upper else ev.min())


class MassNorm:
    """The mass matrix ``M`` of ``V`` and a certified upper bound of ``bᵀ M⁻¹ b``. Collective.

    :meth:`dual` solves ``M y ≈ b`` by CG (Jacobi) and returns
    ``yᵀ(b + s) + sᵀ D⁻¹ s / μ`` with ``s = b − M y``: equal to ``bᵀM⁻¹b − sᵀM⁻¹s + sᵀD⁻¹s/μ``
    and so an upper bound for any ``y``, since ``M ≥ μ D`` (:func:`mass_diagonal_constant`).
    """

    def __init__(self, V: fem.FunctionSpace) -> None:
        self.comm = V.mesh.comm
        self.V = V
        self.nloc = V.dofmap.index_map.size_local
        self._S: Any = None  # SciPy CSR of the owned rows (mult_block), made on first use
        self._cmap: Any = None
        self._vec: Any = None
        u, w = ufl.TrialFunction(V), ufl.TestFunction(V)
        self.M = dolfinx.fem.petsc.assemble_matrix(fem.form(u * w * ufl.dx))
        self.M.assemble()
        diag = self.M.getDiagonal()
        self.D = diag.array[: self.nloc].copy()
        diag.destroy()
        self.mu = mass_diagonal_constant(V)
        self.nu = mass_diagonal_constant(V, upper=True)
        self.x, self.y = self.M.createVecRight(), self.M.createVecLeft()
        self.ksp = PETSc.KSP().create(self.comm)
        self.ksp.setOperators(self.M)
        self.ksp.setType("cg")
        self.ksp.getPC().setType("jacobi")
        # the bound charges the CG residual s rigorously (sᵀD⁻¹s/μ), so a moderate tolerance
        # keeps it sharp: the charge is O(rtol²) relative
        self.ksp.setTolerances(rtol=1e-6, atol=0.0, max_it=500)

    def mult(self, v: FloatArray) -> FloatArray:
        """Owned values of ``M v``; collective (on one rank SciPy's product, 3x PETSc's)."""
        if self.comm.size == 1:
            return self.mult_block(np.asarray(v, dtype=np.float64)[:, None])[:, 0]
        self.x.array[:] = v
        self.M.mult(self.x, self.y)
        return self.y.array[: self.nloc].copy()

    def mult_block(self, X: FloatArray) -> FloatArray:
        """Owned rows of ``M X`` for a block ``X`` of owned rows ``(n, k)``; collective.

        The owned rows of ``M`` as a SciPy CSR matrix over local columns (owned + ghosts,
        DOLFINx's ``MatrixCSR``; on one rank PETSc's own rows), the block's ghost rows by one
        scatter of a block-size-``k`` vector, then one sparse-dense product (6x faster than
        PETSc's ``MatMatMult`` with a dense matrix here, 4x faster than a ``mult`` per column).
        """
        import dolfinx.la

        k = X.shape[1]
        if self._S is None and self.comm.size == 1:  # no ghosts: PETSc's rows as they are
            import scipy.sparse

            ai, aj, av = self.M.getValuesCSR()
            self._S = scipy.sparse.csr_matrix((av, aj, ai), shape=(self.nloc, self.nloc))
        elif self._S is None:
            u, w = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
            Mc = dolfinx.fem.assemble_matrix(fem.form(u * w * ufl.dx))
            Mc.scatter_reverse()
            self._S = Mc.to_scipy(ghosted=False)
            self._cmap = Mc.index_map(1)
        if self.comm.size == 1:
            return np.asarray(self._S @ np.asarray(X, dtype=np.float64), dtype=np.float64)
        if self._vec is None or self._vec.block_size != k:
            self._vec = dolfinx.la.vector(self._cmap, bs=k)
        self._vec.array[: self.nloc * k] = np.ascontiguousarray(X).ravel()
        self._vec.scatter_forward()
        return np.asarray(self._S @ self._vec.array.reshape(-1, k), dtype=np.float64)

    def mult_rows(self, R: FloatArray) -> FloatArray:
        """``M v`` of each row ``v`` of ``R`` ``(k, n)`` (owned values) as rows; collective."""
        return np.asarray(self.mult_block(np.asarray(R, dtype=np.float64).T).T)

    def dual(self, b: FloatArray) -> float:
        """A certified upper bound of ``bᵀ M⁻¹ b`` (see the class docstring); collective."""
        self.x.array[:] = b
        self.y.set(0.0)
        self.ksp.solve(self.x, self.y)
        y = self.y.array[: self.nloc].copy()
        s = b - self.mult(y)
        val = float(y @ (b + s)) + float(np.sum(s**2 / self.D)) / self.mu
        return max(float(self.comm.allreduce(val, MPI.SUM)), 0.0)

    def dual_diagonal(self, b: FloatArray) -> float:
        """``bᵀ D⁻¹ b / μ ≥ bᵀ M⁻¹ b`` (``M ≥ μ D``): no solve, looser; collective."""
        return float(self.comm.allreduce(float(np.sum(b**2 / self.D)), MPI.SUM)) / self.mu

    def destroy(self) -> None:
        """Free the PETSc objects."""
        for obj in (self.ksp, self.M, self.x, self.y):
            obj.destroy()
