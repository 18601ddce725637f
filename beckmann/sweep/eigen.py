r"""The first non-zero eigenvalue :math:`\lambda_{1,h}` of the discrete Neumann Laplacian.

:math:`\lambda_{1,h} = \min\{x^T A x / x^T M x : x \ne 0,\ 1^T M x = 0\}`, the smallest non-zero
eigenvalue of the pencil :math:`A x = \lambda M x` (``A`` the stiffness matrix of the Neumann
problem, ``M`` the mass matrix of the same space). It is the constant of the discrete Poincaré
inequality :math:`\|e\|_{L^2} \le \|\nabla e\|_{L^2} / \sqrt{\lambda_{1,h}}` for mean-zero
:math:`e \in V_h`, the one the certified bound of the reduced sweep needs (docs/reduced.md). By
the min-max principle it lies above the exact :math:`\lambda_1` (conforming spaces) and tends to
it as ``h → 0`` (``π²`` on the unit square).

SLEPc (slepc4py, shipped with the wheel) solves the pencil by shift-and-invert about
``σ = −λ_shift`` (``A + λ_shift M`` is positive definite and factorised once by MUMPS) with the
constants deflated, so the first eigenvalue found is :math:`\lambda_{1,h}`. The Ritz value is
accurate to the solver's tolerance (``1e-12`` relative); the caller divides by it.

Where the exact :math:`\lambda_1` is known, :func:`exact_neumann_eigenvalue` gives it, and the
reduced sweep uses it instead: by min-max it is a lower bound of every conforming
:math:`\lambda_{1,h}`, so the Poincaré constant it gives is a bound, with no eigensolve (0.4 s at
66k P1 dofs) and no Ritz tolerance, and above ``λ_{1,h}`` by ``O(h^{2k})`` only.
"""

from __future__ import annotations

import math

from beckmann._dolfinx import MPI, PETSc

__all__ = ["exact_neumann_eigenvalue", "first_neumann_eigenvalue"]


def exact_neumann_eigenvalue(mesh: dict) -> float | None:
    """``λ_1`` of the Neumann Laplacian on a built-in domain known exactly, else ``None``.

    ``unit_square`` and ``unit_cube`` (meshed exactly): ``π²``, of ``cos(π x)``. The disk's
    mesh is an inscribed polygon, the L-shape's ``λ_1`` has no closed form, a file's domain is
    unknown: ``None``.
    """
    return math.pi**2 if mesh.get("kind") in ("unit_square", "unit_cube") else None


def _slepc():  # type: ignore[no-untyped-def]
    try:
        import slepc4py

        slepc4py.init()
        from slepc4py import SLEPc
    except ImportError as err:  # pragma: no cover - the wheel ships it
        raise RuntimeError(
            "the reduced sweep needs slepc4py (pip install slepc4py, matching petsc4py)"
        ) from err
    return SLEPc


#: Krylov subspace of the eigensolver (``ncv``).
NCV = 8


def first_neumann_eigenvalue(
    A: PETSc.Mat, M: PETSc.Mat, comm: MPI.Comm, *, tol: float = 1e-12, shift: float = 1.0
) -> float:
    """``λ_{1,h}`` of ``A x = λ M x`` with the constants deflated; collective on ``comm``.

    Args:
        A: Stiffness matrix (symmetric, constants in its kernel), assembled.
        M: Mass matrix of the same space, assembled.
        comm: The matrices' communicator.
        tol: Relative tolerance of the eigensolver.
        shift: ``A + shift·M`` is factorised (any positive number; ``1`` suits ``λ ~ 10``).

    Raises:
        RuntimeError: SLEPc does not converge (on every rank).
    """
    SLEPc = _slepc()
    ones = M.createVecRight()
    ones.set(1.0)
    eps = SLEPc.EPS().create(comm)
    eps.setOperators(A, M)
    eps.setProblemType(SLEPc.EPS.ProblemType.GHEP)
    # a small subspace: the restarts of SLEPc's default (16) cost more solves than they save
    # (0.86 -> 0.60 s at 66k P1 dofs, the same eigenvalue to 1e-15)
    n = A.getSize()[0]
    eps.setDimensions(nev=1, ncv=NCV if n > 4 * NCV else PETSc.DECIDE)
    eps.setTolerances(tol, 500)
    eps.setWhichEigenpairs(SLEPc.EPS.Which.TARGET_REAL)
    eps.setTarget(-shift)
    eps.setDeflationSpace([ones])
    st = eps.getST()
    st.setType(SLEPc.ST.Type.SINVERT)
    st.setShift(-shift)
    ksp = st.getKSP()
    ksp.setType("preonly")
    pc = ksp.getPC()
    pc.setType("cholesky")
    if comm.size == 1:  # PETSc's own sparse Cholesky, nested dissection: its solves lack
        # MUMPS's per-solve overhead (the eigensolve 25-40 % faster at 66k P1 dofs)
        pc.setFactorSolverType("petsc")
        pc.setFactorOrdering("nd")
    else:
        pc.setFactorSolverType("mumps")
    try:
        eps.solve()
        nconv = eps.getConverged()
        lam = float(eps.getEigenvalue(0).real) if nconv > 0 else float("nan")
    except PETSc.Error as err:
        raise RuntimeError("SLEPc failed to compute the first Neumann eigenvalue") from err
    finally:
        eps.destroy()
        ones.destroy()
    lam = float(comm.allreduce(lam, op=MPI.MIN))
    if not lam > 0.0:
        raise RuntimeError(
            f"SLEPc did not find the first non-zero Neumann eigenvalue (got {lam!r})"
        )
    return lam
