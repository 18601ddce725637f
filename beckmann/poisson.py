r"""The pure-Neumann Poisson solve: assemble once, solve many right-hand sides.

Find :math:`\varphi \in V_h \subset H^1(\Omega)` (Lagrange, degree 1-3) with
:math:`\int_\Omega \varphi\,dx = 0` and

.. math::  \int_\Omega \nabla\varphi\cdot\nabla w\,dx = \int_\Omega (p_1 - p_0)\,w\,dx
           \qquad \forall w \in V_h,

i.e. :math:`\Delta\varphi = p_0 - p_1`, :math:`\partial_n\varphi = 0` (docs/math.md §1). The
stiffness matrix is singular with the constants as its kernel; it is handed to PETSc with that
null space (and as GAMG's near null space). The right-hand side is made orthogonal to the
constants and the solution is shifted to mean zero afterwards, so every method returns the
same φ.

Methods: ``gmg`` (CG + geometric multigrid on the nested grids of the unit square, for P_k
above P1 with one more P1 -> P_k level: :mod:`beckmann.multigrid`), ``gamg`` (CG +
smoothed-aggregation AMG, any mesh and degree), ``mumps`` (direct), and ``auto`` (the
default): ``gmg`` where the mesh has the grid hierarchy,
else ``gamg``, and ``mumps`` below :data:`DIRECT_BELOW` dofs.

The operator depends only on the mesh and the degree, never on the densities: a
:class:`NeumannPoisson` is built once and :meth:`NeumannPoisson.solve` is called for each right-hand
side (linear path, Fisher-Rao time grid, parameter sweeps).
"""

from __future__ import annotations

import itertools
from typing import Any

from beckmann._dolfinx import MPI, PETSc, dolfinx, fem, ufl
from beckmann._mpi import agree
from beckmann.multigrid import grid_hierarchy, stencil_matrix

__all__ = [
    "DIRECT_BELOW",
    "METHODS",
    "NeumannPoisson",
    "SolverError",
    "default_petsc_options",
    "describe_error",
    "krylov_solve",
    "petsc_value",
    "set_up_ksp",
]

_counter = itertools.count()

#: Global problems with fewer dofs than this are solved directly (MUMPS) even when GAMG is asked
#: for: AMG has nothing to coarsen there, and on a handful of dofs spread over several ranks
#: PETSc's GAMG set-up can fail on one rank while the others wait (a hang, not an error).
DIRECT_BELOW = 1000

#: The values of ``solver.method`` (the primal solve).
METHODS = ("auto", "gmg", "gamg", "mumps")

#: What ``solver.rtol = "auto"`` means where no discretisation-matched tolerance is defined
#: (sweeps, whose fields are compared across θ and certified; paths; the mixed solve).
TIGHT_RTOL = 1e-10


def matched_rtol(h_over_d: float, degree: int) -> float:
    """``solver.rtol = "auto"`` of one primal solve: ``1e-3 (h/d)^k``, within [1e-12, 1e-6].

    The relative energy-norm (flux) error of P_k is about ``(h/d)^k`` for smooth data, and the
    relative residual ``‖r‖/‖b‖`` of CG bounds the relative energy-norm algebraic error for a
    right-hand side in the lowest modes (``‖e‖_A ≤ ‖r‖/√λ_min(A)``, ``‖φ‖_A ≈ ‖b‖/√λ_min(A)``):
    the algebraic error is kept three orders below the discretisation error. At most 1e-6,
    whatever the mesh (docs/performance.md has the table against the exact φ).
    """
    return float(min(1e-6, max(1e-12, 1e-3 * h_over_d**degree)))


def resolve_rtol(rtol: float | str) -> float:
    """A numeric ``solver.rtol``; ``"auto"`` is :data:`TIGHT_RTOL` (:func:`matched_rtol`: solve)."""
    if rtol == "auto":
        return TIGHT_RTOL
    if isinstance(rtol, bool) or not isinstance(rtol, int | float) or not 0 < rtol < 1:
        # rtol >= 1 would accept the zero initial guess as converged
        raise ValueError(f"solver.rtol must be in (0, 1) or 'auto', got {rtol!r}")
    return float(rtol)


class SolverError(RuntimeError):
    """PETSc failed to solve (diverged, broken preconditioner, bad option)."""


def default_petsc_options(method: str, rtol: float) -> dict[str, Any]:
    """PETSc options for ``method`` (``"gmg"``, ``"gamg"`` or ``"mumps"``) at tolerance ``rtol``.

    GAMG: CG with smoothed-aggregation AMG, Chebyshev/Jacobi smoothing; tuned in
    ``scripts/bench_solve.py``. GMG: CG with a V-cycle on the grid hierarchy (the levels and
    prolongations are given by :class:`NeumannPoisson`), Galerkin coarse operators, two
    Chebyshev/Jacobi steps before and after on the interval [0.2, 2.2] (the spectrum of the
    Jacobi-scaled 5-point Laplacian lies in [0, 2]), LU of the coarsest grid as MUMPS does the
    singular one. MUMPS: LU with null-pivot detection (ICNTL(24)) so the singular Neumann matrix
    factorises; the null space is projected out afterwards.
    """
    # CG on the unpreconditioned residual, shared by both multigrid methods
    cg = {"ksp_type": "cg", "ksp_rtol": rtol, "ksp_atol": 0.0,
          "ksp_norm_type": "unpreconditioned", "ksp_max_it": 1000}
    if method == "gmg":
        return {
            **cg,
            "pc_type": "mg",
            "pc_mg_type": "multiplicative",
            "pc_mg_cycle_type": "v",
            "pc_mg_galerkin": "both",
            "mg_levels_ksp_type": "chebyshev",
            "mg_levels_pc_type": "jacobi",
            "mg_levels_ksp_max_it": 2,
            "mg_coarse_ksp_type": "preonly",
            "mg_coarse_pc_type": "lu",
            "mg_coarse_pc_factor_mat_solver_type": "mumps",
            "mg_coarse_mat_mumps_icntl_24": 1,
            "mg_coarse_mat_mumps_icntl_25": 0,
        }
    if method == "gamg":
        return {
            **cg,
            "pc_type": "gamg",
            "pc_gamg_type": "agg",
            "pc_gamg_agg_nsmooths": 1,
            "pc_gamg_threshold": 0.02,
            "pc_gamg_aggressive_coarsening": 2,
            "pc_gamg_coarse_eq_limit": 1000,
            "mg_levels_ksp_type": "chebyshev",
            "mg_levels_pc_type": "jacobi",
            "mg_levels_ksp_max_it": 2,
        }
    if method == "mumps":
        return {
            "ksp_type": "preonly",
            "pc_type": "lu",
            "pc_factor_mat_solver_type": "mumps",
            "mat_mumps_icntl_24": 1,
            "mat_mumps_icntl_25": 0,
        }
    raise ValueError(f"unknown solver method {method!r}; use 'gmg', 'gamg' or 'mumps'")


class NeumannPoisson:
    """The Neumann Laplacian on ``V``, assembled and preconditioned once.

    Collective on ``V.mesh.comm``: construction and every :meth:`solve`.

    Args:
        V: Scalar Lagrange space of the potential.
        method: ``"auto"``, ``"gmg"`` (CG + geometric multigrid, on the unit square),
            ``"gamg"`` (CG + AMG) or ``"mumps"`` (direct); see the module docstring.
            ``"auto"`` with ``petsc_options`` that set the preconditioner (``pc_*``,
            ``mg_*``) means ``"gamg"``: such options are AMG's.
        rtol: Relative residual tolerance of the Krylov iteration.
        petsc_options: Extra PETSc options; they override the defaults of ``method``.

    Raises:
        ValueError: On every rank, for a bad ``rtol`` or ``method``, or ``"gmg"`` on a mesh
            without the grid hierarchy.
    """

    def __init__(
        self,
        V: fem.FunctionSpace,
        *,
        method: str = "auto",
        rtol: float | str = TIGHT_RTOL,
        petsc_options: dict[str, Any] | None = None,
    ) -> None:
        rtol = resolve_rtol(rtol)
        if method not in METHODS:
            raise ValueError(
                f"unknown solver method {method!r}; use {', '.join(map(repr, METHODS))}"
            )
        self.V = V
        self.requested_method = method
        if method in ("auto", "gamg") and self.ndofs < DIRECT_BELOW and not petsc_options:
            method = "mumps"
        hierarchy = None
        if method == "gmg" or (method == "auto" and not any(
                k.startswith(("pc_", "mg_")) for k in petsc_options or {})):  # fmt: skip
            hierarchy = grid_hierarchy(V)  # collective: the same answer on every rank
            if hierarchy is None and method == "gmg":
                raise ValueError(
                    "solver.method = 'gmg' needs the primal Lagrange solve on mesh.kind = "
                    "'unit_square' with mesh.n = m * 2^k, k >= 1, m <= 128 (coarsest grid) and "
                    "n > 16; use 'gamg' or 'auto'"
                )
            method = "gmg" if hierarchy is not None else "gamg"
        elif method == "auto":
            method = "gamg"
        self.comm = V.mesh.comm
        msh = V.mesh
        u, w = ufl.TrialFunction(V), ufl.TestFunction(V)
        # The right-hand side is ∫ f w dx with f = p1 - p0 (or -∂_t p_t) held in ``self.f``;
        # its form is compiled on first use (``solve`` from a function, not from a vector).
        self.f = fem.Function(V, name="rhs")
        self._L: fem.Form | None = None
        self._mass_form = fem.form(fem.Constant(msh, PETSc.ScalarType(1.0)) * w * ufl.dx)
        # m_i = ∫ w_i dx, so that ∫ φ dx = m·φ; the basis sums to one, so Σ m_i = |Ω|.
        self._m = dolfinx.fem.petsc.assemble_vector(self._mass_form)
        self._m.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        self.volume = float(self._m.sum())

        if hierarchy is not None and hierarchy.degree == 1:
            # P1 on the structured square: the 5-point stencil, exact and without quadrature
            self.A = stencil_matrix(V, hierarchy.local_vertices, hierarchy.sizes[0])
        else:
            a = fem.form(ufl.inner(ufl.grad(u), ufl.grad(w)) * ufl.dx)
            self.A = dolfinx.fem.petsc.assemble_matrix(a)
            self.A.assemble()
        # Telling PETSc the matrix is symmetric lets GAMG skip symmetrising its graph, and
        # (semi-)definite lets it estimate eigenvalues with CG: ~20% off the AMG setup.
        self.A.setOption(PETSc.Mat.Option.SYMMETRIC, True)
        self.A.setOption(PETSc.Mat.Option.SYMMETRY_ETERNAL, True)
        if method in ("gamg", "gmg"):
            self.A.setOption(PETSc.Mat.Option.SPD, True)
        self.nullspace = PETSc.NullSpace().create(constant=True, comm=self.comm)
        self.A.setNullSpace(self.nullspace)
        self.A.setNearNullSpace(self.nullspace)
        self.b = dolfinx.fem.petsc.create_vector(V)

        self.prefix = f"beckmann_poisson_{next(_counter)}_"
        opts = default_petsc_options(method, rtol)
        opts.update(petsc_options or {})
        opts["ksp_error_if_not_converged"] = True
        self.ksp = PETSc.KSP().create(self.comm)
        self.ksp.setOptionsPrefix(self.prefix)
        self.ksp.setOperators(self.A)
        self.levels = 1
        if hierarchy is not None:  # PCMG wants its levels before its options
            pc = self.ksp.getPC()
            pc.setType("mg")
            self.levels = len(hierarchy.prolongations) + 1
            pc.setMGLevels(self.levels)
            for level, P in enumerate(hierarchy.prolongations, start=1):
                pc.setMGInterpolation(level, P)
            hierarchy.destroy()  # PCMG holds its own references
            # Every P1 grid's matrix is the 5-point Laplacian (Galerkin = the coarse grid's own
            # stiffness matrix): zero row sums, off-diagonals <= 0, so Gershgorin bounds the
            # spectrum of diag(A)^-1 A by 2; fixed Chebyshev bounds save the estimate's CG runs
            # (~0.3 s at 1M dofs). A P_k top level (k > 1) keeps PETSc's estimate.
            opts = {**{f"mg_levels_{level}_ksp_chebyshev_eigenvalues": "0.2,2.2"
                       for level in range(1, len(hierarchy.sizes))}, **opts}  # fmt: skip
        self.options = opts
        set_up_ksp(self.ksp, self.comm, self.prefix, opts, f"the {method} solver",
                   hint=" or other solver.petsc_options" if petsc_options else "")  # fmt: skip
        self.method = method
        #: The Krylov tolerance used (``None`` for the direct solve, which has none).
        self.rtol: float | None = None if method == "mumps" else rtol
        self.iterations = 0

    @property
    def ndofs(self) -> int:
        """Global number of degrees of freedom."""
        im = self.V.dofmap.index_map
        return int(im.size_global * self.V.dofmap.index_map_bs)

    @property
    def L(self) -> fem.Form:  # noqa: N802 - math name
        """The compiled right-hand side form ``∫ f w dx`` of :attr:`f`."""
        if self._L is None:
            self._L = fem.form(self.f * ufl.TestFunction(self.V) * ufl.dx)
        return self._L

    def assemble_rhs(self, f: fem.Function | None = None) -> PETSc.Vec:
        """Assemble ``b_i = ∫ f w_i dx`` (``f`` defaults to :attr:`f`) into :attr:`b`."""
        if f is not None:
            self.f.x.array[:] = f.x.array
        with self.b.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(self.b, self.L)
        self.b.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        return self.b

    def solve(self, f: fem.Function | None = None, phi: fem.Function | None = None) -> fem.Function:
        """Solve ``-Δφ = f`` weakly with ``∂φ/∂n = 0`` and ``∫φ = 0``; collective.

        Args:
            f: Right-hand side function in ``V`` (for Beckmann: ``p1 - p0``). If ``None``, the
                current values of :attr:`f` are used.
            phi: Output function (created when ``None``).

        Returns:
            The mean-zero solution φ. :attr:`iterations` holds the Krylov iteration count.
        """
        b = self.assemble_rhs(f)
        return self.solve_vector(b, phi)

    def solve_vector(self, b: PETSc.Vec, phi: fem.Function | None = None) -> fem.Function:
        """Solve with an assembled right-hand side vector ``b`` (modified: made consistent)."""
        if phi is None:
            phi = fem.Function(self.V, name="potential")
        self.nullspace.remove(b)
        self.iterations = krylov_solve(self.ksp, b, phi.x.petsc_vec, f"the {self.method} solve")
        phi.x.scatter_forward()
        self.remove_mean(phi)
        return phi

    def remove_mean(self, phi: fem.Function) -> None:
        """Shift ``phi`` so that ``∫ φ dx = 0`` (exactly, with the assembled ``∫ w_i``)."""
        mean = self._m.dot(phi.x.petsc_vec) / self.volume
        phi.x.array[:] -= mean

    def energy(self, phi: fem.Function) -> float:
        """``½ φᵀ A φ``: the Beckmann cost ``½ ∫ |∇φ|² dx`` by one mat-vec, no assembly."""
        y = self.A.createVecLeft()
        try:
            self.A.mult(phi.x.petsc_vec, y)
            return 0.5 * float(y.dot(phi.x.petsc_vec))
        finally:
            y.destroy()

    def residual(self, phi: fem.Function, b: PETSc.Vec | None = None) -> float:
        """Relative algebraic residual ``‖Aφ − b‖ / ‖b‖`` of the last right-hand side."""
        b = self.b if b is None else b
        r = b.duplicate()
        self.A.mult(phi.x.petsc_vec, r)
        r.axpy(-1.0, b)
        nb = b.norm()
        out = r.norm() / nb if nb > 0 else r.norm()
        r.destroy()
        return float(out)

    def destroy(self) -> None:
        """Free the PETSc objects."""
        for obj in (self.ksp, self.A, self.b, self._m, self.nullspace):
            obj.destroy()


def set_up_ksp(
    ksp: PETSc.KSP,
    comm: MPI.Comm,
    prefix: str,
    opts: dict[str, Any],
    what: str,
    *,
    set_up: Any = None,
    hint: str = "",
) -> None:
    """Give ``ksp`` the options ``opts`` (under ``prefix``) and set it up; collective.

    The options are removed from PETSc's database afterwards. ``set_up`` replaces
    ``ksp.setUp`` (the mixed solver sets up only its preconditioner).

    Raises:
        SolverError: On every rank, when the set-up failed on any rank (a set-up that failed on
            one rank only must fail on every rank); the message names ``what`` and suggests
            ``solver.method = 'mumps'`` (and ``hint``).
    """
    for key, value in opts.items():  # the same on every rank: raised everywhere alike
        if not isinstance(value, bool | int | float | str) and value is not None:
            raise ValueError(
                f"solver.petsc_options: {key} = {value!r} is not a PETSc option value (a "
                "number, a string or a boolean)"
            )
    db = PETSc.Options()
    for key, value in opts.items():
        db[prefix + key] = petsc_value(value)
    failure: str | None = None
    try:
        ksp.setFromOptions()
        (set_up or ksp.setUp)()
    except PETSc.Error as err:
        failure = (
            f"PETSc could not set up {what} ({describe_error(err)}); try "
            f"solver.method = 'mumps'{hint}"
        )
    finally:
        for key in opts:
            db.delValue(prefix + key)
    agree(comm, failure, SolverError)


def krylov_solve(ksp: PETSc.KSP, b: PETSc.Vec, x: PETSc.Vec, what: str) -> int:
    """``ksp.solve(b, x)`` and its iteration count; collective.

    Raises:
        SolverError: PETSc failed (``ksp_error_if_not_converged``); the message names ``what``,
            the iterations, PETSc's reason and what to try.
    """
    try:
        ksp.solve(b, x)
    except PETSc.Error as err:
        reason = ksp.getConvergedReason()
        raise SolverError(
            f"{what} failed after {ksp.getIterationNumber()} iterations (PETSc reason "
            f"{reason}: {_reason_name(reason)}); try solver.method = 'mumps' or loosen "
            "solver.rtol"
        ) from err
    return int(ksp.getIterationNumber())


def petsc_value(value: Any) -> Any:
    """A Python option value as PETSc's options database wants it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return value


_REASONS = {
    v: k for k, v in vars(PETSc.KSP.ConvergedReason).items() if isinstance(v, int)
}


def _reason_name(reason: int) -> str:
    return _REASONS.get(reason, "unknown")


def describe_error(err: Exception) -> str:
    """The last line of a PETSc error, for a one-line message."""
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__

