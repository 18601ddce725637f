r"""Greedy empirical interpolation (EIM) of the target family, over distributed dof rows.

Snapshots are the raw (unnormalised) nodal values :math:`f(\theta)` of the target at the owned
dofs of ``V`` on a training set. Step ``m`` picks the training θ with the largest certified
relative bound (docs/reduced.md), takes its interpolation residual ``q``, the dof ``x_m`` where
``|q|`` is largest (over all ranks) and adds ``ξ_m = q / q(x_m)``. The residuals of all
snapshots ``R = F − Ξ C`` (``C`` the EIM coefficients) are never stored: the column sums the
criterion needs (``mᵀR``, ``R ∘ M R``, ``R ∘ M F``) follow from ``H = (M Ξ)ᵀ F``,
``Ξᵀ M Ξ`` and ``Ξᵀ m``, which grow by one row per step by recurrences from the snapshots'
Gram matrix ``F M Fᵀ`` (once, by blocks of snapshots: no ``M F`` kept), so a step costs one
GEMV over the basis (``ξ_m``) and no pass over the snapshots; before a stop the sums are
recomputed from ``R`` itself (blocks of rows, ``M R`` by sparse products), so round-off in the
expansion or the recurrences cannot stop it early.
``B[i, j] = ξ_j(x_i)`` is unit lower triangular. The Neumann solves of the basis functions
wait and run in blocks (:data:`SOLVE_BLOCK`): the picks need the EIM residuals only, the stop
test the norms ``‖∇φ_M‖``, taken from the last solved basis until the test comes close
(:data:`NORM_SLACK`), then solved and tested exactly.

With ``Z = mᵀ f`` the mass of a snapshot (``m = M 1``) and ``R = f − Ξ c`` its EIM residual, the
normalised residual is ``r = f / Z − Ξ c / Z_M = (R − (mᵀR / Z) f) / Z_M`` with
``Z_M = Z − mᵀR`` the interpolant's mass, whose ``M``-norm follows from the columns of ``R``,
``M R``, ``F`` and ``M F``. This nodal criterion (the interpolant's nodal values in the
``M``-norm) is the certified bound of ``reduced_rhs = "interpolant"`` at the training θ, and the
greedy's guide for ``"quadrature"``; the bounds reported are computed afresh by
:class:`beckmann.sweep.reduced.ReducedModel`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.linalg import solve_triangular

from beckmann._dolfinx import MPI

__all__ = ["Greedy", "greedy_eim", "relative_bound"]

FloatArray = npt.NDArray[np.float64]

#: A new basis function's right-hand side (its solve waits: :data:`SolveBasis`). In: the nodal
#: ``ξ_m``, the training index ``k`` of its snapshot, that snapshot's coefficients ``c_k`` in
#: the previous basis and the scale ``q(x_m)`` (``ξ_m = (f_k − Σ_j c_kj ξ_j) / q(x_m)``). Out:
#: the mass ``Z_m`` of ``ξ_m`` by the right-hand side's quadrature.
AddBasis = Callable[[FloatArray, int, FloatArray, float], float]

#: Solves every basis function added since the last call (one block solve); returns the whole
#: energy Gram matrix ``ψ_iᵀAψ_j`` and the bounds ``η_alg`` of all functions so far.
SolveBasis = Callable[[], tuple[FloatArray, FloatArray]]

#: The mass matrix on rows: ``(k, n_owned)`` owned values to their ``M v`` rows; collective.
RowMult = Callable[[FloatArray], FloatArray]

#: Rows per sparse product with the mass matrix (:data:`RowMult`) in the Gram matrix and the
#: exact sums.
MULT_BLOCK = 16

#: Basis functions solved together, at most (one MUMPS block solve: ~5 ms per function at 66k
#: P1 dofs against ~20 ms for one solve alone); fewer while the basis is small.
SOLVE_BLOCK = 16

#: A step whose relative bounds, with the norms ``‖∇φ_M‖`` of the last solved basis, come
#: within this factor of ``tol`` solves the pending functions and tests the stop exactly.
NORM_SLACK = 1.1


@dataclass
class Greedy:
    """The result of :func:`greedy_eim` (arrays over the owned rows are per rank).

    Attributes:
        xi: ``(n_owned, M)`` basis ``ξ_m`` (raw-density units).
        points: ``(M, 3)`` magic points.
        B: ``(M, M)`` unit lower-triangular ``ξ_j(x_i)``.
        Z: ``(M,)`` masses ``∫ ξ_m`` (by the right-hand side's quadrature, from ``add_basis``).
        G: ``(M, M)`` energy Gram matrix ``ψ_iᵀ A ψ_j`` of the solved basis.
        eta_alg: ``(M,)`` bounds on ``‖∇(ψ_m − A⁺b_m)‖`` (algebraic error of each solve).
        history: per basis size, the largest certified relative bound on the training set.
        stop: ``"tol"``, ``"max"`` or ``"exact"`` (the residuals vanished: the family is spanned).
    """

    xi: FloatArray
    points: FloatArray
    B: FloatArray
    Z: FloatArray
    G: FloatArray
    eta_alg: FloatArray
    history: list[float] = field(default_factory=list)
    stop: str = "max"


def relative_bound(eta: FloatArray, norm: FloatArray) -> FloatArray:
    """Certified ``‖∇e‖ / ‖∇φ_h‖ ≤ η / (‖∇φ_M‖ − η)`` (``inf`` when ``η ≥ ‖∇φ_M‖``).

    A θ whose field is zero to round-off (``‖∇φ_M‖ ≤ 1e-12 max ‖∇φ_M‖``, e.g. a target equal to
    the source) counts as ``0`` once its bound is at that level too: no relative accuracy exists
    there.
    """
    eta, norm = np.asarray(eta, dtype=np.float64), np.asarray(norm, dtype=np.float64)
    floor = 1e-12 * float(norm.max(initial=0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(norm > eta, eta / (norm - eta), np.inf)
    return np.asarray(np.where((norm <= floor) & (eta <= floor), 0.0, rel), dtype=np.float64)


def _sum(comm: MPI.Comm, a: FloatArray) -> FloatArray:
    out = np.empty_like(a)
    comm.Allreduce(np.ascontiguousarray(a), out, op=MPI.SUM)
    return out


def _argmax_global(comm: MPI.Comm, v: FloatArray, offset: int) -> tuple[float, int, int]:
    """``(max |v|, owner rank, local index)`` over all ranks (ties: the lowest global index)."""
    if v.size:
        j = int(np.argmax(np.abs(v)))
        best = (float(abs(v[j])), -(offset + j))
    else:
        j, best = -1, (-1.0, 0)
    val, neg_g = comm.allreduce(best, op=MPI.MAX)
    owner = comm.allreduce(comm.rank if (best == (val, neg_g) and v.size) else comm.size, MPI.MIN)
    return float(val), int(owner), j


def _bounds(
    small: tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, float],
    mR: FloatArray,
    RMR: FloatArray,
    RMF: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """``(η, relative bound)`` per snapshot from the column sums of its EIM residual."""
    c, G, eta_alg, Zs, FMF, lam1 = small
    a = mR / Zs
    ZM = Zs - mR
    rr = np.maximum(RMR - 2.0 * a * RMF + a**2 * FMF, 0.0) / ZM**2
    d = c / ZM
    eta = np.sqrt(rr / lam1) + eta_alg @ np.abs(d)
    norm = np.sqrt(np.maximum(np.einsum("mk,mn,nk->k", d, G, d, optimize=True), 0.0))
    return eta, relative_bound(eta, norm)


def _exact_sums(
    comm: MPI.Comm,
    FT: FloatArray,
    m: FloatArray,
    XiT: FloatArray,
    c: FloatArray,
    mult: RowMult,
    block: int = MULT_BLOCK,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(mᵀR, Rᵀ M R, Rᵀ M F)`` column sums of ``R = F − Ξ c`` from ``R`` itself.

    ``FT`` and ``XiT`` hold the rows ``f_k`` and ``ξ_m``; the residuals of ``block`` snapshots
    at a time as rows, and their ``M R`` by one :data:`RowMult`.
    """
    size = c.shape[0]
    acc = np.zeros((3, FT.shape[0]))
    for s in range(0, FT.shape[0], block):
        sl = slice(s, s + block)
        RT = FT[sl] - c[:, sl].T @ XiT[:size]
        MRT = mult(RT)
        acc[:, sl] = np.stack([RT @ m, np.einsum("ki,ki->k", RT, MRT),
                               np.einsum("ki,ki->k", FT[sl], MRT)])
    mR, RMR, RMF = _sum(comm, acc)
    return mR, RMR, RMF


def greedy_eim(
    FT: FloatArray,
    m: FloatArray,
    x: FloatArray,
    comm: MPI.Comm,
    add_basis: AddBasis,
    solve_basis: SolveBasis,
    *,
    mult: RowMult,
    lam1: float,
    tol: float,
    max_size: int,
    log: Callable[[str], Any] | None = None,
) -> Greedy:
    """Greedy EIM with basis solves until the certified relative bound is below ``tol``.

    Args:
        FT: ``(K, n_owned)`` raw training snapshots, one per row.
        m: ``(n_owned,)`` ``M 1``.
        x: ``(n_owned, 3)`` owned dof coordinates.
        comm: Communicator of the rows; collective.
        add_basis: A new basis function's right-hand side (see :data:`AddBasis`).
        solve_basis: Solves the pending ones (see :data:`SolveBasis`).
        lam1: ``λ_{1,h}``.
        tol: Target of ``max_θ η(θ) / (‖∇φ_M(θ)‖ − η(θ))`` over the training set.
        max_size: Largest basis size.
        mult: The mass matrix on rows of owned values (see :data:`RowMult`).
        log: Called with a line per step.

    The picks (the largest bound ``η``) count the algebraic errors of the solved functions
    only (``η_alg`` is round-off with MUMPS); the stop is tested with every function solved.
    """
    K, n = FT.shape
    offset = comm.exscan(n) or 0
    Zs = _sum(comm, FT @ m)
    # the snapshots' Gram matrix F M Fᵀ once (one GEMM): each step's new rows of H and Gx follow
    # from it by small recurrences, with no pass over the snapshots
    GF = np.empty((K, K))
    for s in range(0, K, MULT_BLOCK):  # M f_k for a block of snapshots at a time: no M F kept
        GF[:, s : s + MULT_BLOCK] = FT @ mult(FT[s : s + MULT_BLOCK]).T
    GF = _sum(comm, GF)
    FMF = np.diag(GF).copy()
    fmax = float(comm.allreduce(max(FT.max(initial=0.0), -FT.min(initial=0.0)), MPI.MAX))
    # The residuals R = F − Ξ C are never stored: their column sums follow from small arrays,
    # mᵀR = Zs − Znᵀ C, Rᵀ M F = FMF − Σ C ∘ H, Rᵀ M R = FMF − 2 Σ C ∘ H + diag(Cᵀ Gx C), with
    # H = (M Ξ)ᵀ F (a row per step, from F M Fᵀ), Gx = Ξᵀ M Ξ and Zn = Ξᵀ m; before a stop they
    # are recomputed from R itself (rows in chunks).
    # ξ_m as rows (preallocated: growing would copy O(M² N); rows: the leading block is
    # contiguous, so no GEMV copies it)
    XiT = np.zeros((max_size, n))
    H = np.zeros((max_size, K))
    Gx = np.zeros((max_size, max_size))
    Zn = np.zeros(max_size)
    points = np.zeros((0, 3))
    B = np.zeros((0, 0))
    Z = np.zeros(0)
    G = np.zeros((0, 0))
    eta_alg = np.zeros(0)
    fmag = np.zeros((0, K))  # F at the magic points
    out = Greedy(XiT[:0].T, points, B, Z, G, eta_alg)
    c = np.zeros((0, K))
    norm_last = np.zeros(K)  # ‖∇φ_M‖ per snapshot with the last solved basis

    def solve() -> None:
        nonlocal G, eta_alg
        G, eta_alg = solve_basis()
        out.G, out.eta_alg = G, eta_alg

    for size in range(max_size + 1):
        if size == 0:
            crit = np.sqrt(np.maximum(FMF, 0.0)) / Zs  # ‖f/Z‖_M: the largest target first
        else:
            c = solve_triangular(B, fmag, lower=True, unit_diagonal=True)
            cH = np.einsum("mk,mk->k", c, H[:size])
            cGc = np.einsum("mk,mn,nk->k", c, Gx[:size, :size], c, optimize=True)
            sums = (Zs - Zn[:size] @ c, FMF - 2.0 * cH + cGc, FMF - cH)
            nsol = G.shape[0]
            small = (c[:nsol], G, eta_alg, Zs, FMF, lam1)
            eta, _ = _bounds(small, *sums)  # picks: the solved functions' η_alg only
            # the stop test: with the last solved norms, solved and exact when close
            with np.errstate(divide="ignore", invalid="ignore"):
                est = np.where(norm_last > eta, eta / (norm_last - eta), np.inf)
            near = float(est.max()) <= NORM_SLACK * tol or size == max_size
            # pending blocks grow with the solved basis (1, 2, 4, ... SOLVE_BLOCK): the norms
            # of the last solve stay close to the current ones
            if near or size - nsol >= min(SOLVE_BLOCK, max(nsol, 1)):
                solve()
                small = (c, G, eta_alg, Zs, FMF, lam1)
                eta, rel = _bounds(small, *sums)
                if float(rel.max()) <= tol or size == max_size:
                    eta, rel = _bounds(small, *_exact_sums(comm, FT, m, XiT, c, mult))
                ZM = Zs - sums[0]
                d = c / ZM
                dGd = np.einsum("mk,mn,nk->k", d, G, d, optimize=True)
                norm_last = np.sqrt(np.maximum(dGd, 0.0))
                worst = float(rel.max())
                out.history.append(worst)
                if log is not None:
                    log(f"reduced basis: M = {size}, max certified relative bound {worst:.3e}")
                if worst <= tol:
                    out.stop = "tol"
                    break
                if size == max_size:
                    out.stop = "max"
                    break
            crit = eta  # the next snapshot: the largest absolute bound
        k = int(np.argmax(crit))
        c_k = c[:, k]
        q = FT[k] - c_k @ XiT[:size]
        qmax, owner, j = _argmax_global(comm, q, offset)
        if size and qmax <= 1e-13 * fmax:
            out.stop = "exact"
            break
        here = comm.rank == owner
        qx, pt, xi_row, f_row = comm.bcast(
            (q[j], x[j], XiT[:size, j].copy(), FT[:, j].copy()) if here else None, root=owner
        )
        q /= qx
        XiT[size] = q
        # ξ_s = (f_k − Ξ c_k) / qx: Zn_s = mᵀξ_s, H_s = (M ξ_s)ᵀ F and Gx_js = ξ_jᵀ M ξ_s from
        # m ᵀ q, GF and the previous rows
        Zn[size] = float(_sum(comm, np.array([m @ q]))[0])
        H[size] = (GF[k] - c_k @ H[:size]) / qx
        g = (H[:size, k] - Gx[:size, :size] @ c_k) / qx
        Gx[size, :size] = Gx[:size, size] = g
        Gx[size, size] = (H[size, k] - g @ c_k) / qx
        points = np.vstack([points, np.asarray(pt, dtype=np.float64)[None, :3]])
        B = np.block([[B, np.zeros((size, 1))], [xi_row[None, :], np.ones((1, 1))]])
        fmag = np.vstack([fmag, f_row[None, :]])
        Z = np.append(Z, add_basis(q, k, c_k, qx))
        out.xi, out.points, out.B, out.Z = XiT[: size + 1].T, points, B, Z
    if G.shape[0] < Z.size:  # "exact": the last functions still wait for their solve
        solve()
    if out.stop == "exact" and log is not None:
        log(f"reduced basis: M = {out.xi.shape[1]}, the residuals vanished (exact)")
    return out
