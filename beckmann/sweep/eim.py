r"""Greedy empirical interpolation (EIM) of the target family, over distributed dof rows.

Snapshots are the raw (unnormalised) nodal values :math:`f(\theta)` of the target at the owned
dofs of ``V`` on a training set. Step ``m`` picks the training θ with the largest certified
relative bound (docs/reduced.md), takes its interpolation residual ``q``, the dof ``x_m`` where
``|q|`` is largest (over all ranks) and adds ``ξ_m = q / q(x_m)``. The residuals of all
snapshots ``R = F − Ξ C`` (``C`` the EIM coefficients) are never stored: the column sums the
criterion needs (``mᵀR``, ``R ∘ M R``, ``R ∘ M F``) follow from ``H = (M Ξ)ᵀ F``,
``Ξᵀ M Ξ`` and ``Ξᵀ m``, which grow by one row per step (one GEMV over ``F``; ``M ξ_m`` is the
picked column of ``M F − (M Ξ) C`` over ``q(x_m)``), so a step costs one pass over the
``K · N / ranks`` snapshot values and no mass-matrix product; before a stop the sums are
recomputed from ``R`` itself (row chunks), so round-off in the expansion cannot stop it early.
``B[i, j] = ξ_j(x_i)`` is unit lower triangular.

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

#: A basis function's right-hand side and solve. In: the nodal ``ξ_m``, the training index
#: ``k`` of its snapshot, that snapshot's coefficients ``c_k`` in the previous basis and the
#: scale ``q(x_m)`` (``ξ_m = (f_k − Σ_j c_kj ξ_j) / q(x_m)``). Out: ``ψ_jᵀAψ_m`` for
#: ``j <= m``, ``η_alg,m`` and the mass ``Z_m`` of ``ξ_m`` by the right-hand side's quadrature.
AddBasis = Callable[[FloatArray, int, FloatArray, float], tuple[FloatArray, float, float]]


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
    norm = np.sqrt(np.maximum(np.einsum("mk,mn,nk->k", d, G, d), 0.0))
    return eta, relative_bound(eta, norm)


def _exact_sums(
    comm: MPI.Comm,
    F: FloatArray,
    MF: FloatArray,
    m: FloatArray,
    XiT: FloatArray,
    MXiT: FloatArray,
    c: FloatArray,
    chunk: int = 8192,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(mᵀR, Rᵀ M R, Rᵀ M F)`` column sums of ``R = F − Ξ c`` from ``R`` itself.

    ``XiT`` and ``MXiT`` hold the rows ``ξ_m`` and ``M ξ_m``; ``R`` is formed in row chunks.
    """
    size = c.shape[0]
    acc = np.zeros((3, F.shape[1]))
    for i in range(0, F.shape[0], chunk):
        sl = slice(i, i + chunk)
        R = F[sl] - XiT[:size, sl].T @ c
        MR = MF[sl] - MXiT[:size, sl].T @ c
        acc += np.stack([m[sl] @ R, np.einsum("ik,ik->k", R, MR), np.einsum("ik,ik->k", R, MF[sl])])
    mR, RMR, RMF = _sum(comm, acc)
    return mR, RMR, RMF


def greedy_eim(
    F: FloatArray,
    MF: FloatArray,
    m: FloatArray,
    x: FloatArray,
    comm: MPI.Comm,
    add_basis: AddBasis,
    *,
    lam1: float,
    tol: float,
    max_size: int,
    log: Callable[[str], Any] | None = None,
) -> Greedy:
    """Greedy EIM with basis solves until the certified relative bound is below ``tol``.

    Args:
        F: ``(n_owned, K)`` raw training snapshots.
        MF: ``M F`` (owned rows).
        m: ``(n_owned,)`` ``M 1``.
        x: ``(n_owned, 3)`` owned dof coordinates.
        comm: Communicator of the rows; collective.
        add_basis: Solves for a new basis function (see :data:`AddBasis`).
        lam1: ``λ_{1,h}``.
        tol: Target of ``max_θ η(θ) / (‖∇φ_M(θ)‖ − η(θ))`` over the training set.
        max_size: Largest basis size.
        log: Called with a line per step.
    """
    n, K = F.shape
    offset = comm.exscan(n) or 0
    Zs = _sum(comm, m @ F)
    FMF = _sum(comm, np.einsum("ik,ik->k", F, MF))
    fmax = float(comm.allreduce(np.abs(F).max(initial=0.0), MPI.MAX))
    # The residuals R = F − Ξ C are never stored: their column sums follow from small arrays,
    # mᵀR = Zs − Znᵀ C, Rᵀ M F = FMF − Σ C ∘ H, Rᵀ M R = FMF − 2 Σ C ∘ H + diag(Cᵀ Gx C), with
    # H = (M Ξ)ᵀ F (one GEMV over F per step), Gx = Ξᵀ M Ξ and Zn = Ξᵀ m; before a stop they
    # are recomputed from R itself (rows in chunks).
    # ξ_m and M ξ_m as rows (preallocated: growing would copy O(M² N); rows: the leading
    # block is contiguous, so no GEMV copies it)
    XiT = np.zeros((max_size, n))
    MXiT = np.zeros((max_size, n))
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
    for size in range(max_size + 1):
        if size == 0:
            crit = np.sqrt(np.maximum(FMF, 0.0)) / Zs  # ‖f/Z‖_M: the largest target first
        else:
            c = solve_triangular(B, fmag, lower=True, unit_diagonal=True)
            small = (c, G, eta_alg, Zs, FMF, lam1)
            cH = np.einsum("mk,mk->k", c, H[:size])
            cGc = np.einsum("mk,mn,nk->k", c, Gx[:size, :size], c)
            eta, rel = _bounds(small, Zs - Zn[:size] @ c, FMF - 2.0 * cH + cGc, FMF - cH)
            if float(rel.max()) <= tol or size == max_size:
                eta, rel = _bounds(small, *_exact_sums(comm, F, MF, m, XiT, MXiT, c))
            worst = float(rel.max())
            crit = eta  # the next snapshot: the largest absolute bound
            out.history.append(worst)
            if log is not None:
                log(f"reduced basis: M = {size}, max certified relative bound {worst:.3e}")
            if worst <= tol:
                out.stop = "tol"
                break
            if size == max_size:
                out.stop = "max"
                break
        k = int(np.argmax(crit))
        c_k = c[:, k]
        q = F[:, k] - XiT[:size].T @ c_k
        qmax, owner, j = _argmax_global(comm, q, offset)
        if size and qmax <= 1e-13 * fmax:
            out.stop = "exact"
            break
        here = comm.rank == owner
        qx, pt, xi_row, f_row = comm.bcast(
            (q[j], x[j], XiT[:size, j].copy(), F[j].copy()) if here else None, root=owner
        )
        q /= qx
        Mq = (MF[:, k] - MXiT[:size].T @ c_k) / qx  # M R[:, k] / qx
        XiT[size] = q
        MXiT[size] = Mq
        sums = _sum(comm, np.concatenate([[m @ q], XiT[: size + 1] @ Mq, F.T @ Mq]))
        Zn[size] = sums[0]
        Gx[size, : size + 1] = Gx[: size + 1, size] = sums[1 : size + 2]
        H[size] = sums[size + 2 :]
        points = np.vstack([points, np.asarray(pt, dtype=np.float64)[None, :3]])
        B = np.block([[B, np.zeros((size, 1))], [xi_row[None, :], np.ones((1, 1))]])
        fmag = np.vstack([fmag, f_row[None, :]])
        g_row, e_alg, Zq = add_basis(q, k, c_k, qx)
        Z = np.append(Z, Zq)
        G = np.block([[G, g_row[:size, None]], [g_row[None, :size], g_row[None, size:]]])
        eta_alg = np.append(eta_alg, e_alg)
        out.xi, out.points, out.B, out.Z, out.G, out.eta_alg = (
            XiT[: size + 1].T, points, B, Z, G, eta_alg
        )
    if out.stop == "exact" and log is not None:
        log(f"reduced basis: M = {out.xi.shape[1]}, the residuals vanished (exact)")
    return out
