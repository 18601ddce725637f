r"""Offline phase of the reduced sweep: λ_{1,h}, the greedy EIM and one solve per basis function.

Builds the :class:`~beckmann.sweep.reduced.ReducedModel` whose bound and fields the online phase
evaluates (formulas in :mod:`beckmann.sweep.reduced` and docs/reduced.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from beckmann._dolfinx import MPI
from beckmann._mpi import agree
from beckmann.sweep.eigen import exact_neumann_eigenvalue, first_neumann_eigenvalue
from beckmann.sweep.eim import Greedy, greedy_eim
from beckmann.sweep.engine import Engine
from beckmann.sweep.mass import MassNorm
from beckmann.sweep.reduced import ReducedModel
from beckmann.sweep.tensor import separated_target

__all__ = ["build_reduced"]

FloatArray = npt.NDArray[np.float64]


def _sum_rows(comm: MPI.Comm, a: FloatArray) -> FloatArray:
    out = np.empty_like(a)
    comm.Allreduce(np.ascontiguousarray(a), out, op=MPI.SUM)
    return out


# one BLAS thread: the GEMVs of the greedy are memory-bound and a second BLAS thread only competes
# with MUMPS and the sparse products (offline 1.4-1.6 s -> 0.9 s at 66k P1 dofs on 2 cores)
@threadpool_limits.wrap(limits=1, user_api="blas")
def build_reduced(
    eng: Engine,
    thetas: FloatArray,
    names: list[str],
    *,
    tol: float,
    max_size: int,
    rhs: str | None = None,
    log: Callable[[str], Any] | None = None,
    lam1: float | None = None,
) -> tuple[ReducedModel, Greedy]:
    """Offline: ``λ_{1,h}``, the greedy EIM on ``thetas`` with one solve per basis function.

    ``lam1`` is ``λ_{1,h}`` (or a lower bound) when already known (a greedy run again on the
    same engine); else the exact ``λ_1`` where known (``unit_square``, ``unit_cube``: a lower
    bound of ``λ_{1,h}``), else SLEPc's ``λ_{1,h}``.

    ``rhs`` is the truth's right-hand side (:data:`RHS_KINDS`; default
    ``eng.cfg["sweep"]["reduced_rhs"]``). With ``"interpolant"`` the greedy's nodal criterion
    *is* the certified bound at the training θ. Collective on ``eng.comm``.

    Raises:
        ValueError: The target does not depend on the parameters, or the source does, or
            (``rhs = "quadrature"``) the quadrature is not exact for ``v²``
            (``solver.quadrature_degree < 2·degree``), on every rank.
    """
    if rhs is None:
        rhs = str(eng.cfg.get("sweep", {}).get("reduced_rhs", "interpolant"))
    agree(
        eng.comm,
        "sweep.method = 'reduced' needs a target that depends on the sweep parameters"
        if "target" not in eng.ev
        else "sweep.method = 'reduced' needs a source that does not depend on the parameters"
        if "source" in eng.ev
        else "sweep.method = 'reduced' with reduced_rhs = 'quadrature' needs "
        "solver.quadrature_degree >= 2*degree (or -1)"
        if rhs == "quadrature" and eng.points.degree < 2 * eng.degree
        else None,
    )
    comm, nloc = eng.comm, eng.nloc
    # the basis is spanned by training snapshots at distinct nodes: never larger than either
    # (a huge reduced_max would otherwise be allocated as is)
    max_size = int(min(max_size, len(thetas), comm.allreduce(nloc, MPI.SUM)))
    thetas_d = [dict(zip(names, map(float, t), strict=True)) for t in thetas]
    mass = MassNorm(eng.V)
    # the snapshots f_k as rows (a separated target on a grid of nodes from its one-dimensional
    # factors, round-off apart: the certificate evaluates the nodal truth)
    st = separated_target(eng.cfg["target"], names, eng.x, comm)
    if st is not None:
        FT = st[1].nodal(st[0], np.asarray(thetas, dtype=np.float64).reshape(len(thetas_d), -1),
                         float(eng.cfg["target"].get("floor", 0.0)))
    else:
        FT = np.empty((len(thetas_d), nloc))
        for k, t in enumerate(thetas_d):
            FT[k] = eng.raw("target", t)
    m = mass.mult(np.ones(nloc))
    if lam1 is None:  # the exact λ_1 ≤ λ_1,h where known (min-max), else the eigensolve
        lam1 = exact_neumann_eigenvalue(eng.cfg["mesh"])
    if lam1 is None:
        lam1 = first_neumann_eigenvalue(eng.poisson.A, mass.M, comm)
    model = ReducedModel(
        eng.V,
        {"bxi": np.zeros((nloc, 0)), "psi": np.zeros((nloc, 0)), "xi": np.zeros((nloc, 0)),
         "points": np.zeros((0, 3)), "B": np.zeros((0, 0)), "Z": np.zeros(0),
         "G": np.zeros((0, 0)), "eta_alg": np.zeros(0)},
        lam1,
        eng.cfg,
        names,
        rhs=rhs,
        mass=mass,
        points=eng.points,
    )
    src = eng.fixed["source"]
    # ∫ q0 w (mass 1), by the engine's quadrature right-hand side (no null-space removal here)
    b0 = model.source_rhs(src)
    # the basis as rows while it grows (contiguous leading blocks: no copies in the GEMVs)
    # (the nodal ξ_m are the greedy's; b_m only for the quadrature truth, which reads them)
    psis = np.zeros((max_size, nloc))
    bxis = np.zeros((max_size if rhs == "quadrature" else 0, nloc))
    rhss: dict[int, FloatArray] = {}  # b_m − Z_m b_0 of the pending solves, null space removed
    Zs: list[float] = []
    G = np.zeros((max_size, max_size))
    eta_alg = np.zeros(max_size)
    solved = [0]

    def add_basis(q: FloatArray, k: int, c_k: FloatArray, qx: float) -> float:
        # ξ_m = (f_k − Σ_j c_kj ξ_j) / q(x_m): its right-hand side and mass, M ξ_m and mᵀξ_m
        # (interpolant) or by quadrature; the solve waits for solve_basis
        j = len(Zs)
        if rhs == "interpolant":
            bm = mass.mult(q)
            Zm = float(comm.allreduce(float(bm.sum()), MPI.SUM))
        else:
            bk = model.raw_rhs(thetas_d[k])
            Zk = float(comm.allreduce(float(bk.sum()), MPI.SUM))
            bm = (bk - bxis[:j].T @ c_k) / qx
            Zm = (Zk - float(np.dot(Zs, c_k))) / qx
        eng.b.array[:] = bm - Zm * b0
        eng.poisson.nullspace.remove(eng.b)
        rhss[j] = eng.b.array[:nloc].copy()
        if bxis.shape[0]:
            bxis[j] = bm
        Zs.append(Zm)
        return Zm

    def solve_basis() -> tuple[FloatArray, FloatArray]:
        # the pending functions in one MUMPS block solve; their A ψ, Gram rows and η_alg
        j0, j1 = solved[0], len(Zs)
        if j1 > j0:
            sols, _ = eng.solve_rhs([rhss[j] for j in range(j0, j1)])
            Apsi = np.empty((j1 - j0, nloc))
            for j, psi in zip(range(j0, j1), sols, strict=True):
                psis[j] = psi
                eng.phi.x.array[:nloc] = psi
                eng.phi.x.scatter_forward()
                eng.poisson.A.mult(eng.phi.x.petsc_vec, eng.Aphi)
                Apsi[j - j0] = eng.Aphi.array[:nloc]
                # the solve's residual is round-off (MUMPS): the solve-free diagonal bound
                eta_alg[j] = np.sqrt(mass.dual_diagonal(rhss.pop(j) - Apsi[j - j0]) / lam1)
            # the new Gram columns ψ_iᵀAψ_j by one GEMM, symmetric
            g = _sum_rows(comm, psis[:j1] @ Apsi.T)
            G[:j1, j0:j1] = g
            G[j0:j1, :j1] = g.T
            G[j0:j1, j0:j1] = 0.5 * (g[j0:j1] + g[j0:j1].T)
            solved[0] = j1
        return G[:j1, :j1].copy(), eta_alg[:j1].copy()

    res = greedy_eim(FT, m, eng.x, comm, add_basis, solve_basis, mult=mass.mult_rows,
                     lam1=lam1, tol=tol, max_size=max_size, log=log)
    size = len(Zs)
    model.bxi = np.ascontiguousarray(bxis[:size].T)
    model.psi = np.ascontiguousarray(psis[:size].T)
    model.xi = np.ascontiguousarray(res.xi if rhs == "interpolant" else res.xi[:, :0])
    model.points, model.B, model.Z, model.G, model.eta_alg = (
        res.points, res.B, res.Z, res.G, res.eta_alg
    )
    model.owns_mass = True  # the model frees the mass matrix
    return model, res
