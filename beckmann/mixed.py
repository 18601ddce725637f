r"""The mixed (H(div)) solve of Beckmann's problem: Raviart-Thomas flux, discontinuous potential.

Find :math:`(F, \varphi) \in RT_k \times DG_{k-1}` with :math:`F\cdot n = 0` on
:math:`\partial\Omega` (strongly: the facet dofs of the boundary are zero) such that

.. math::
    \int_\Omega F\cdot G\,dx + \int_\Omega \varphi\,\nabla\cdot G\,dx = 0
        \qquad \forall G \in RT_k,\ G\cdot n = 0,

    \int_\Omega (\nabla\cdot F)\,q\,dx = \int_\Omega (p_0 - p_1)\,q\,dx
        \qquad \forall q \in DG_{k-1},

(docs/math.md §10). Integrating the first line by parts gives :math:`F = \nabla\varphi`, the second
:math:`\Delta\varphi = p_0 - p_1`: the same φ and F as the primal
:class:`~beckmann.poisson.NeumannPoisson`. Because :math:`\nabla\cdot RT_k = DG_{k-1}`, the second
line says that :math:`\nabla\cdot F_h` *is* the :math:`L^2`-projection of :math:`p_0 - p_1` onto
DG\ :sub:`k-1`, cell by cell, to round-off; and :math:`F_h\cdot n = 0` holds exactly on every
boundary facet, so the velocity :math:`F_h/p_t` is tangential there. (``RT_k`` is Basix's
numbering: full polynomials of degree ``k``, called :math:`RT_{k-1}` in much of the literature.)

The system :math:`\begin{pmatrix} M & B^T \\ B & 0 \end{pmatrix}` is symmetric indefinite, and
singular with the constant potentials as its kernel; that kernel is given to PETSc as a null
space and φ is shifted to mean zero afterwards. Two solvers:

* ``"mumps"``: LU of the monolithic matrix (MUMPS, with null-pivot detection).
* ``"gamg"``: MINRES with the block-diagonal preconditioner
  :math:`\mathrm{diag}(M, S)`, :math:`S = B\,\mathrm{diag}(M)^{-1}B^T + c\,M_{DG}`: one
  symmetric SOR sweep on the Raviart-Thomas mass matrix :math:`M` (spectrally equivalent to
  its diagonal) and one AMG V-cycle on :math:`S`, a discrete Laplacian on DG\ :sub:`k-1`
  (the two-point-flux finite-volume Laplacian for ``k = 1``). Both blocks are spectrally equivalent
  to the exact ones, so the iteration count does not grow with the mesh. The DG mass term (:math:`c
  = 1/\mathrm{diam}^2`) makes :math:`S` non-singular without changing it on mean-zero potentials by
  more than the Poincaré constant.

Like :class:`~beckmann.poisson.NeumannPoisson`, a :class:`MixedPoisson` is assembled once and
solves many right-hand sides. :class:`MixedSolution` is a :class:`~beckmann.fields.Solution`
whose flux is the Raviart-Thomas function.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from beckmann._dolfinx import MPI, PETSc, basix, dmesh, dolfinx, fem, ufl
from beckmann._mpi import global_bbox
from beckmann.fields import Solution, velocity_expression
from beckmann.poisson import (
    DIRECT_BELOW,
    TIGHT_RTOL,
    default_petsc_options,
    krylov_solve,
    resolve_rtol,
    set_up_ksp,
)

__all__ = [
    "DIVERGENCE_TOL",
    "MixedPoisson",
    "MixedSolution",
    "flux_spaces",
    "mixed_petsc_options",
    "rt_to_dg",
]

_counter = itertools.count()

#: The iterative (``gamg``) solve continues until ``max |div F − Π f|`` over cells is at most
#: this times ``max(1, max |Π f|)``: the Krylov tolerance bounds a norm of the whole residual,
#: which leaves the cellwise divergence of a large mesh far above round-off.
DIVERGENCE_TOL = 1e-11
_MAX_PASSES = 4


def flux_spaces(msh: dmesh.Mesh, degree: int) -> tuple[fem.FunctionSpace, fem.FunctionSpace]:
    """The pair ``(RT_k, DG_{k-1})`` of the mixed formulation on ``msh`` (``k = degree``)."""
    if degree not in (1, 2, 3):
        raise ValueError(f"solver.degree must be 1, 2 or 3, got {degree!r}")
    cell = msh.basix_cell()
    V = fem.functionspace(msh, basix.ufl.element("RT", cell, degree))
    W = fem.functionspace(msh, basix.ufl.element("DG", cell, degree - 1))
    return V, W


def mixed_petsc_options(method: str, rtol: float) -> dict[str, Any]:
    """PETSc options of the mixed solve for ``method`` (``"gamg"`` or ``"mumps"``).

    ``"gamg"`` is MINRES with an additive field split: the ``flux`` split is one symmetric SOR
    sweep on the Raviart-Thomas mass matrix, the ``potential`` split one V-cycle of the same
    GAMG set-up as the primal solve (on the approximate Schur complement). ``"mumps"`` is the
    primal solve's LU.
    """
    if method == "mumps":
        return default_petsc_options("mumps", rtol)
    if method != "gamg":
        raise ValueError(f"unknown solver method {method!r}; use 'gamg' or 'mumps'")
    opts: dict[str, Any] = {
        "ksp_type": "minres",
        "ksp_rtol": rtol,
        "ksp_atol": 0.0,
        "ksp_max_it": 2000,
        "pc_type": "fieldsplit",
        "pc_fieldsplit_type": "additive",
        "fieldsplit_flux_ksp_type": "preonly",
        "fieldsplit_flux_pc_type": "sor",  # local symmetric SOR: symmetric, as MINRES needs
        "fieldsplit_potential_ksp_type": "preonly",
    }
    amg = default_petsc_options("gamg", rtol)
    for key, value in amg.items():
        if key.startswith(("pc_", "mg_")):
            opts["fieldsplit_potential_" + key] = value
    return opts


class MixedPoisson:
    """The saddle-point operator of the mixed formulation, assembled and factorised once.

    Collective on ``msh.comm``: construction and every :meth:`solve`.

    Args:
        msh: The mesh.
        degree: ``k`` of ``RT_k × DG_{k-1}`` (1, 2 or 3; the primal solve's Lagrange degree).
        method: ``"mumps"`` (direct) or ``"gamg"`` (MINRES, block-diagonal AMG preconditioner).
        rtol: Relative tolerance of the MINRES iteration (preconditioned residual).
        petsc_options: Extra PETSc options; they override the defaults of ``method``.
        quadrature_degree: Quadrature degree of the right-hand side ``∫ f q dx``; ``None`` lets
            UFL estimate it from ``f`` and ``q``.
    """

    def __init__(
        self,
        msh: dmesh.Mesh,
        degree: int,
        *,
        method: str = "mumps",
        rtol: float | str = TIGHT_RTOL,
        petsc_options: dict[str, Any] | None = None,
        quadrature_degree: int | None = None,
    ) -> None:
        rtol = resolve_rtol(rtol)  # "auto": TIGHT_RTOL
        self.requested_method = method
        if method == "auto":  # the geometric multigrid is the primal P1 solve's
            method = "gamg"
        if method not in ("gamg", "mumps"):
            raise ValueError(
                f"unknown solver method {method!r} for the mixed formulation; use 'auto', "
                "'gamg' or 'mumps'"
            )
        self.msh = msh
        self.comm = msh.comm
        self.degree = degree
        self.V, self.W = flux_spaces(msh, degree)
        if method == "gamg" and self.ndofs < DIRECT_BELOW and not petsc_options:
            method = "mumps"  # AMG has nothing to coarsen (see beckmann.poisson.DIRECT_BELOW)
        self.method = method
        md = {} if quadrature_degree is None else {"quadrature_degree": quadrature_degree}
        self.dx = ufl.Measure("dx", domain=msh, metadata=md)
        V, W = self.V, self.W
        F, G = ufl.TrialFunction(V), ufl.TestFunction(V)
        phi, q = ufl.TrialFunction(W), ufl.TestFunction(W)
        self._G, self._q = G, q
        dx = ufl.dx(domain=msh)
        self.a = fem.form(
            [[ufl.inner(F, G) * dx, phi * ufl.div(G) * dx], [ufl.div(F) * q * dx, None]]
        )
        tdim = msh.topology.dim
        msh.topology.create_connectivity(tdim - 1, tdim)
        facets = dmesh.exterior_facet_indices(msh.topology)
        self.boundary_dofs = fem.locate_dofs_topological(V, tdim - 1, facets)
        self.bc = fem.dirichletbc(fem.Function(V), self.boundary_dofs)  # F·n = 0
        self.kind = "nest" if method == "gamg" else None
        self.A = dolfinx.fem.petsc.assemble_matrix(self.a, bcs=[self.bc], kind=self.kind)
        self.A.assemble()
        self.A.setOption(PETSc.Mat.Option.SYMMETRIC, True)
        one = fem.Constant(msh, PETSc.ScalarType(1.0))
        self.volume = float(self.comm.allreduce(fem.assemble_scalar(fem.form(one * dx))))
        # m_i = ∫ q_i dx, so that ∫ φ dx = m·φ
        self._m = dolfinx.fem.petsc.assemble_vector(fem.form(one * q * dx))
        self._m.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        self.nullspace = self._constant_potentials()
        self.A.setNullSpace(self.nullspace)
        self.b = dolfinx.fem.petsc.create_vector([V, W], kind=self.kind)
        self.x = dolfinx.fem.petsc.create_vector([V, W], kind=self.kind)
        self._P: PETSc.Mat | None = None
        if method == "gamg":
            self._P = self._preconditioner(one, phi, q, dx)

        self.prefix = f"beckmann_mixed_{next(_counter)}_"
        opts = mixed_petsc_options(method, rtol)
        opts.update(petsc_options or {})
        opts["ksp_error_if_not_converged"] = True
        self.options = opts
        self.ksp = PETSc.KSP().create(self.comm)
        self.ksp.setOptionsPrefix(self.prefix)
        self.ksp.setOperators(self.A, self._P if self._P is not None else self.A)
        if method == "gamg":
            rows, _ = self.A.getNestISs()
            self.ksp.getPC().setType("fieldsplit")
            self.ksp.getPC().setFieldSplitIS(("flux", rows[0]), ("potential", rows[1]))
        # Only the preconditioner: KSPSetUp would make MINRES's work vectors from the nest
        # matrix, not of nest type; at the first solve they are copied from ``b`` instead.
        set_up_ksp(self.ksp, self.comm, self.prefix, opts, f"the mixed {method} solver",
                   set_up=self.ksp.getPC().setUp)  # fmt: skip
        self.iterations = 0
        self.divergence = float("nan")

    @property
    def ndofs(self) -> int:
        """Global number of degrees of freedom (flux and potential)."""
        return sum(
            int(S.dofmap.index_map.size_global * S.dofmap.index_map_bs) for S in (self.V, self.W)
        )

    def _constant_potentials(self) -> PETSc.NullSpace:
        """The kernel ``(F, φ) = (0, 1)`` as a normalised PETSc null space."""
        zero, ones = fem.Function(self.V), fem.Function(self.W)
        ones.x.array[:] = 1.0
        ns = dolfinx.fem.petsc.create_vector([self.V, self.W], kind=self.kind)
        dolfinx.fem.petsc.assign([zero, ones], ns)
        ns.normalize()
        self._ns_vec = ns
        return PETSc.NullSpace().create(vectors=[ns], comm=self.comm)

    def _preconditioner(self, one: fem.Constant, phi: Any, q: Any, dx: Any) -> PETSc.Mat:
        """``diag(M, B diag(M)^{-1} Bᵀ + M_DG / diam²)`` as a nest matrix (see module doc)."""
        M = self.A.getNestSubMatrix(0, 0)
        B = self.A.getNestSubMatrix(1, 0)  # boundary columns are zero (F·n = 0)
        dinv = M.getDiagonal()
        dinv.reciprocal()
        Bs = B.duplicate(copy=True)
        Bs.diagonalScale(R=dinv)
        S = Bs.matTransposeMult(B)
        Bs.destroy()
        dinv.destroy()
        lo, hi = global_bbox(self.msh.geometry.x[:, : self.msh.geometry.dim], self.comm)
        diam2 = float(np.sum((hi - lo) ** 2))
        c = fem.Constant(self.msh, PETSc.ScalarType(1.0 / diam2))
        Mdg = dolfinx.fem.petsc.assemble_matrix(fem.form(c * phi * q * dx))
        Mdg.assemble()
        S.axpy(1.0, Mdg, structure=PETSc.Mat.Structure.DIFFERENT_NONZERO_PATTERN)
        Mdg.destroy()
        S.setOption(PETSc.Mat.Option.SPD, True)
        self._S = S
        P = PETSc.Mat().createNest([[M, None], [None, S]], comm=self.comm)
        P.assemble()
        return P

    def rhs_form(self, f: Any) -> fem.Form:
        """The blocked linear form ``[0, ∫ f q dx]`` of a UFL expression or function ``f``."""
        return fem.form([ufl.ZeroBaseForm((self._G,)), f * self._q * self.dx])

    def assemble_rhs(self, f: Any) -> PETSc.Vec:
        """Assemble ``[0, ∫ f q_i dx]`` into :attr:`b`; collective."""
        b = self.b
        dolfinx.fem.petsc.assign([fem.Function(self.V), fem.Function(self.W)], b)
        dolfinx.fem.petsc.assemble_vector(b, self.rhs_form(f))
        for sub in b.getNestSubVecs() if self.kind == "nest" else [b]:
            sub.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        dolfinx.fem.petsc.set_bc(b, [[self.bc], []])
        return b

    def solve(
        self, f: Any, F: fem.Function | None = None, phi: fem.Function | None = None
    ) -> tuple[fem.Function, fem.Function]:
        """Solve for ``div F = f`` (for Beckmann ``f = p0 − p1``); collective.

        Args:
            f: Right-hand side: a UFL expression or a function in any scalar space on the mesh.
            F: Output flux in ``RT_k`` (created when ``None``).
            phi: Output potential in ``DG_{k-1}`` (created when ``None``).

        Returns:
            ``(F, φ)`` with ``F = ∇φ`` weakly and ``∫ φ = 0``; :attr:`iterations` holds the
            Krylov iteration count (1 for MUMPS), :attr:`divergence` the cellwise
            ``max |div F − Π f|``. The iterative solve is resumed from its iterate (at most
            three times, each with the tolerance the defect asks for) until that defect is at
            most :data:`DIVERGENCE_TOL` ``· max(1, max |Π f|)``.
        """
        b = self.assemble_rhs(f)
        F, phi = self.solve_vector(b, F, phi)
        proj = project_dg(f, self.W, self.dx)
        self.divergence = self._defect(F, proj)
        if self.method == "mumps":
            return F, phi
        n = self.W.dofmap.index_map.size_local
        scale = max(1.0, float(self.comm.allreduce(
            float(np.max(np.abs(proj.x.array[:n]), initial=0.0)), op=MPI.MAX)))
        total = self.iterations
        rtol = float(self.options.get("ksp_rtol", 1e-10))
        current = rtol  # PETSc's test is relative to ‖b‖, also from a non-zero initial guess
        try:
            for _ in range(_MAX_PASSES - 1):
                if self.divergence <= DIVERGENCE_TOL * scale:
                    break
                self.ksp.setInitialGuessNonzero(True)
                current *= float(np.clip(0.1 * DIVERGENCE_TOL * scale / self.divergence, 1e-8, 0.1))
                self.ksp.setTolerances(rtol=current)
                self._krylov(b)
                total += self.iterations
                self._assign(F, phi)
                self.divergence = self._defect(F, proj)
        finally:
            self.ksp.setInitialGuessNonzero(False)
            self.ksp.setTolerances(rtol=rtol)
        self.iterations = total
        return F, phi

    def solve_vector(
        self, b: PETSc.Vec, F: fem.Function | None = None, phi: fem.Function | None = None
    ) -> tuple[fem.Function, fem.Function]:
        """Solve with an assembled right-hand side ``b`` (modified: made consistent)."""
        F = fem.Function(self.V, name="flux") if F is None else F
        phi = fem.Function(self.W, name="potential") if phi is None else phi
        self.nullspace.remove(b)  # = make ∫ f dx = 0 (the DG basis sums to one)
        self._krylov(b)
        self._assign(F, phi)
        return F, phi

    def _krylov(self, b: PETSc.Vec) -> None:
        self.iterations = krylov_solve(self.ksp, b, self.x, f"the mixed {self.method} solve")

    def _assign(self, F: fem.Function, phi: fem.Function) -> None:
        """Copy :attr:`x` into ``(F, φ)``, φ shifted to mean zero (``x`` keeps the iterate)."""
        dolfinx.fem.petsc.assign(self.x, [F, phi])
        F.x.scatter_forward()
        phi.x.scatter_forward()
        phi.x.array[:] -= self._m.dot(phi.x.petsc_vec) / self.volume

    def residual(self, b: PETSc.Vec | None = None) -> float:
        """Relative algebraic residual ``‖A x − b‖ / ‖b‖`` of the last solve."""
        b = self.b if b is None else b
        r = b.duplicate()
        self.A.mult(self.x, r)
        r.axpy(-1.0, b)
        nb = b.norm()
        out = r.norm() / nb if nb > 0 else r.norm()
        r.destroy()
        return float(out)

    def divergence_defect(self, F: fem.Function, f: Any) -> float:
        """``max`` over cells and nodes of ``|div F − Π f|``, Π the L²-projection onto DG_{k-1}.

        ``div F`` lies in DG_{k-1} exactly and is interpolated; ``Π f`` is computed with the
        (cell-block-diagonal) DG mass matrix to round-off. Collective.
        """
        return self._defect(F, project_dg(f, self.W, self.dx))

    def _defect(self, F: fem.Function, proj: fem.Function) -> float:
        W = self.W
        divF = fem.Function(W)
        divF.interpolate(fem.Expression(ufl.div(F), W.element.interpolation_points))
        n = W.dofmap.index_map.size_local
        local = float(np.max(np.abs(divF.x.array[:n] - proj.x.array[:n]), initial=0.0))
        return float(self.comm.allreduce(local, op=MPI.MAX))

    def destroy(self) -> None:
        """Free the PETSc objects."""
        objs = [self.ksp, self.A, self.b, self.x, self._m, self.nullspace, self._ns_vec]
        if self._P is not None:
            objs += [self._P, self._S]
        for obj in objs:
            obj.destroy()


def rt_to_dg(F: fem.Function, name: str = "flux") -> fem.Function:
    """The Raviart-Thomas function ``F`` (RT_k) as a vector DG_k function; exact. Collective.

    ``RT_k ⊂ [P_k]^d`` on each cell, so the interpolation only copies; ghosts are up to date.
    """
    msh = F.function_space.mesh
    k = int(F.function_space.ufl_element().embedded_superdegree)
    Wk = fem.functionspace(msh, ("DG", k, (msh.geometry.dim,)))
    out = fem.Function(Wk, name=name)
    out.interpolate(fem.Expression(F, Wk.element.interpolation_points))
    out.x.scatter_forward()
    return out


def project_dg(f: Any, W: fem.FunctionSpace, dx: Any = ufl.dx) -> fem.Function:
    """The L²-projection of ``f`` onto the DG space ``W``; collective.

    The DG mass matrix is block-diagonal (one block per cell), so CG with Jacobi converges to
    round-off in a few iterations.
    """
    u, q = ufl.TrialFunction(W), ufl.TestFunction(W)
    M = dolfinx.fem.petsc.assemble_matrix(fem.form(u * q * dx))
    M.assemble()
    b = dolfinx.fem.petsc.assemble_vector(fem.form(f * q * dx))
    b.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
    out = fem.Function(W, name="projection")
    ksp = PETSc.KSP().create(W.mesh.comm)
    ksp.setOperators(M)
    ksp.setType("cg")
    ksp.getPC().setType("jacobi")
    ksp.setTolerances(rtol=1e-15, atol=1e-300, max_it=500)
    ksp.solve(b, out.x.petsc_vec)
    out.x.scatter_forward()
    for obj in (ksp, M, b):
        obj.destroy()
    return out


@dataclass
class MixedSolution(Solution):
    """A Beckmann solution of the mixed formulation (linear path).

    ``phi`` is the DG_{k-1} potential, ``p0``/``p1`` the densities (Lagrange degree ``k``, as
    in the primal solve), ``flux_rt`` the Raviart-Thomas flux. :meth:`flux` returns it in the
    discontinuous Lagrange vector space of degree ``k``, which contains ``RT_k`` (the
    interpolation is exact, so ``F·n = 0`` on the boundary survives it).
    """

    flux_rt: fem.Function | None = None
    order: int = 1

    @property
    def V(self) -> fem.FunctionSpace:  # noqa: N802 - math name
        """The scalar Lagrange space of the densities (the potential is in DG_{k-1})."""
        return self.p0.function_space

    @property
    def degree(self) -> int:
        """``k`` of ``RT_k × DG_{k-1}`` (the densities' Lagrange degree)."""
        return self.order

    def _rt(self) -> fem.Function:
        if self.flux_rt is None:
            raise ValueError("a MixedSolution needs its Raviart-Thomas flux (flux_rt)")
        return self.flux_rt

    def flux(self) -> fem.Function:
        """``F`` in DG_k (vector), exact copy of the RT flux. Cached; collective on first call."""
        if self._flux is None:
            self._flux = rt_to_dg(self._rt())
        return self._flux

    def velocity(self, t: float) -> fem.Function:
        """``v_t = F / p_t`` interpolated into DG_k (vector). Collective."""
        if not (0.0 <= float(t) <= 1.0):
            raise ValueError(f"time t must lie in [0, 1], got {t!r}")
        Wk = fem.functionspace(self.msh, ("DG", self.order, (self.gdim,)))
        v = fem.Function(Wk, name="velocity")
        expr = velocity_expression(self._rt(), self.p0, self.p1, t)
        v.interpolate(fem.Expression(expr, Wk.element.interpolation_points))
        return v

    def cost(self) -> float:
        """Beckmann cost ``½ ∫ |F|² dx`` of the RT flux. Collective."""
        F = self._rt()
        local = fem.assemble_scalar(fem.form(0.5 * ufl.inner(F, F) * ufl.dx))
        return float(self.comm.allreduce(local, op=MPI.SUM))
