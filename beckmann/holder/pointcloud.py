"""Hölder norms, seminorms, moduli of continuity and fitted exponents of point data; collective.

Definitions (docs/math.md §5). For ``g`` sampled at points ``x_i`` (vector values: the
Euclidean norm of the difference),

    ω_g(δ)   = max_{0 < |x_i − x_j| ≤ δ} |g(x_i) − g(x_j)|                 (modulus of continuity)
    [g]_α    = max_{δ_min ≤ |x_i − x_j| ≤ δ_max} |g(x_i) − g(x_j)| / |x_i − x_j|^α   (seminorm)
    ‖g‖_∞    = max_i |g(x_i)|

The lower end ``δ_min`` of the seminorm's window exists for finite-element fields: below the mesh
size ``h`` the discrete field, not the one it approximates, is measured, so FE estimators pass
``delta_min`` a few ``h`` (``delta_min = 0`` is the plain definition). Exponents are fitted by
:func:`beckmann.holder.fit.fit_exponent`.

Every function here is **collective**: the points are distributed (each rank passes its own
``points`` and ``values``), pairs of points on different ranks count, and every rank returns the
same numbers, which do not depend on the number of ranks (up to rounding). Two algorithms:
``exact`` (all pairs, :mod:`beckmann.holder.exact`) and ``fast`` (the tree method,
:mod:`beckmann.holder.multiscale`), which give the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann._mpi import agree, allreduce_array
from beckmann.holder.exact import CHUNK_PAIRS, exact_pairs
from beckmann.holder.fit import (
    EDGE_TOL,
    Exponent,
    classify,
    default_scales,
    fit_exponent,
    headline_exponent,
    profile_slopes,
)
from beckmann.holder.multiscale import Tree, branch_and_bound, gather, tree_modulus

__all__ = [
    "HolderResult",
    "Method",
    "check_alpha",
    "check_method",
    "check_scales",
    "estimate",
    "modulus",
    "seminorm",
    "sup_norm",
    "sup_profile",
]

Method = Literal["exact", "fast"]
FloatArray = npt.NDArray[np.float64]


@dataclass
class HolderResult:
    """What :func:`estimate` measures on one point cloud.

    Attributes:
        sup: ``max |g|`` over the points.
        alpha: The exponent the seminorm was taken with (the headline one for ``alpha="auto"``).
        seminorm: ``[g]_alpha`` over pairs with ``delta_min <= |x - y| <= seminorm_max``.
        scales: The scales ``δ`` of the modulus, ascending.
        modulus: ``ω(δ)`` at ``scales``.
        exponent: The headline exponent with its band, by the estimator ``estimator``
            (:func:`beckmann.holder.fit.headline_exponent`).
        exponent_plain: Slope of ``log ω`` against ``log δ`` on the window, with its band.
        exponent_increment: The increment fit ``ω(2δ) − ω(δ)`` on the window.
        estimator: ``"increment"`` or ``"plain"``: how ``exponent`` was obtained.
        verdict: ``"holder"``, ``"constant"``, ``"unbounded"`` or ``"exponent <= 0 at this
            resolution"`` (:func:`beckmann.holder.fit.classify`).
        peak: The point where ``|g|`` is largest (see :func:`sup_profile`).
        sup_profile: ``M(ρ) = max_{|x − peak| >= ρ} |g(x)|`` at ``scales``.
        delta_min: Lower end of the window (fit and seminorm).
        delta_max: Upper end of the fit window; the seminorm uses ``seminorm_max``.
        seminorm_max: Upper distance limit of the seminorm (``inf``: none).
        method: ``"exact"`` or ``"fast"``.
        n_points: Global number of points.
    """

    sup: float
    alpha: float
    seminorm: float
    scales: FloatArray
    modulus: FloatArray
    exponent: Exponent
    delta_min: float
    delta_max: float
    seminorm_max: float
    exponent_increment: Exponent
    method: str
    n_points: int
    exponent_plain: Exponent = field(default_factory=lambda: Exponent(math.nan, math.nan, math.nan))
    estimator: str = "increment"
    verdict: str = "holder"
    peak: FloatArray = field(default_factory=lambda: np.zeros(0))
    sup_profile: FloatArray = field(default_factory=lambda: np.zeros(0))
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A strict-JSON-ready dict (arrays as lists, ``inf`` and ``nan`` as ``None``)."""
        out = asdict(self)
        for key in ("scales", "modulus", "peak", "sup_profile"):
            out[key] = [float(v) for v in getattr(self, key)]
        for key in ("exponent", "exponent_plain", "exponent_increment"):
            out[key] = getattr(self, key).to_dict()
        if math.isinf(self.seminorm_max):
            out["seminorm_max"] = None
        return out


def prepare_cloud(
    points: npt.ArrayLike, values: npt.ArrayLike, comm: MPI.Comm
) -> tuple[FloatArray, FloatArray]:
    """Check shapes collectively; return ``points`` as (n, d) and ``values`` as (n, m)."""
    X = np.asarray(points, dtype=np.float64)
    V = np.asarray(values, dtype=np.float64)
    err: str | None = None
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    if V.ndim == 1:
        V = V.reshape(-1, 1)
    if X.ndim != 2:
        err = f"points must have shape (n, d), got {X.shape}"
    elif V.ndim != 2:
        err = f"values must have shape (n,) or (n, m), got {V.shape}"
    elif V.shape[0] != X.shape[0]:
        err = f"points and values disagree in length: {X.shape[0]} != {V.shape[0]}"
    elif not (np.all(np.isfinite(X)) and np.all(np.isfinite(V))):
        err = "points and values must be finite (found nan or inf)"
    agree(comm, err)
    dims = comm.allgather((X.shape[1], V.shape[1]) if X.shape[0] > 0 else None)
    dims_set = {s for s in dims if s is not None}
    if len(dims_set) > 1:
        raise ValueError(f"ranks disagree on (point dimension, value size): {sorted(dims_set)}")
    if dims_set:
        d, m = dims_set.pop()
        if X.shape[0] == 0:
            X, V = X.reshape(0, d), V.reshape(0, m)
    return np.ascontiguousarray(X), np.ascontiguousarray(V)


def check_method(method: str) -> None:
    """Raise ``ValueError`` unless ``method`` is ``"exact"`` or ``"fast"``."""
    if method not in ("exact", "fast"):
        raise ValueError(f"method must be 'exact' or 'fast', got {method!r}")


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in ``[0, 1]``, or ``ValueError``."""
    a = float(alpha)
    if not (0.0 <= a <= 1.0) or math.isnan(a):
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    return a


def sup_norm(values: npt.ArrayLike, comm: MPI.Comm) -> float:
    """``max_i |g(x_i)|`` over all ranks (Euclidean norm for vector values). Collective."""
    V = np.asarray(values, dtype=np.float64)
    V = V.reshape(-1, 1) if V.ndim < 2 else V.reshape(V.shape[0], int(np.prod(V.shape[1:])))
    local = float(np.sqrt(np.max(np.sum(V * V, axis=1)))) if V.shape[0] else 0.0
    return float(comm.allreduce(local, op=MPI.MAX))


def check_scales(scales: npt.ArrayLike) -> FloatArray:
    """``scales`` as a positive, finite, strictly increasing 1-d array, or ``ValueError``."""
    s = np.asarray(scales, dtype=np.float64).ravel()
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0) or np.any(np.diff(s) <= 0):
        raise ValueError(f"scales must be positive, finite and strictly increasing, got {s}")
    return s


def modulus(
    points: npt.ArrayLike,
    values: npt.ArrayLike,
    comm: MPI.Comm,
    scales: npt.ArrayLike,
    *,
    method: Method = "fast",
    chunk_pairs: int = CHUNK_PAIRS,
) -> FloatArray:
    """Modulus of continuity ``ω(δ) = max_{0 < |x−y| ≤ δ} |g(x) − g(y)|`` at each scale.

    Args:
        points: Rank-local points, shape ``(n_local, d)``.
        values: Rank-local values, shape ``(n_local,)`` or ``(n_local, m)``.
        comm: The communicator the points are distributed over.
        scales: Strictly increasing positive scales ``δ``.
        method: ``"exact"`` (all pairs) or ``"fast"`` (branch and bound, same numbers).
        chunk_pairs: Pairs per chunk of the exact method (memory bound).

    Returns:
        ``ω`` at ``scales``, the same on every rank. Collective.
    """
    check_method(method)
    s = check_scales(scales)
    X, V = prepare_cloud(points, values, comm)
    edges = s * (1.0 + EDGE_TOL)
    if method == "exact":
        return exact_pairs(X, V, comm, edges, None, 0.0, np.inf, chunk_pairs)[0]
    Xg, Vg = gather(X, V, comm)
    if Xg.shape[0] < 2:
        return np.zeros(s.size)
    return tree_modulus(Tree(Xg, Vg), edges, comm)


def seminorm(
    points: npt.ArrayLike,
    values: npt.ArrayLike,
    comm: MPI.Comm,
    alpha: float,
    *,
    delta_min: float = 0.0,
    delta_max: float | None = None,
    method: Method = "fast",
    chunk_pairs: int = CHUNK_PAIRS,
) -> float:
    """Hölder seminorm ``max |g(x) − g(y)| / |x − y|^α`` over ``delta_min <= |x−y| <= delta_max``.

    ``delta_min`` is the lower end of the scale window: for a finite-element field pass a few
    mesh sizes so that the field between nodes is not what is measured. ``delta_max=None`` puts
    no upper limit. Pairs at distance 0 never count. The edges are counted with the relative
    tolerance :data:`~beckmann.holder.fit.EDGE_TOL`. Collective; the same number on every rank.
    """
    check_method(method)
    a = check_alpha(alpha)
    dhi = np.inf if delta_max is None else float(delta_max)
    if not (0.0 <= delta_min <= dhi):
        raise ValueError(f"need 0 <= delta_min <= delta_max, got {delta_min}, {delta_max}")
    X, V = prepare_cloud(points, values, comm)
    dlo, dhi = float(delta_min) * (1.0 - EDGE_TOL), dhi * (1.0 + EDGE_TOL)
    if method == "exact":
        return exact_pairs(X, V, comm, np.zeros(0), a, dlo, dhi, chunk_pairs)[1]
    Xg, Vg = gather(X, V, comm)
    if Xg.shape[0] < 2:
        return 0.0
    tree = Tree(Xg, Vg)
    return branch_and_bound(tree, dlo, dhi, a, 0.0, comm)


def estimate(
    points: npt.ArrayLike,
    values: npt.ArrayLike,
    comm: MPI.Comm,
    *,
    alpha: float | Literal["auto"] = "auto",
    scales: npt.ArrayLike | None = None,
    delta_min: float | None = None,
    delta_max: float | None = None,
    seminorm_max: float | None = None,
    method: Method = "fast",
    per_octave: int = 4,
    chunk_pairs: int = CHUNK_PAIRS,
) -> HolderResult:
    """Sup norm, modulus of continuity, fitted exponent and Hölder seminorm of point data.

    Args:
        points: Rank-local points ``(n_local, d)``.
        values: Rank-local values ``(n_local,)`` or ``(n_local, m)``.
        comm: Communicator.
        alpha: Seminorm exponent in ``[0, 1]``, or ``"auto"``: the fitted exponent (clipped to
            ``[0, 1]``; ``1`` for a constant field).
        scales: Scales of the modulus; default :func:`default_scales` on the window.
        delta_min: Window's lower end (fit and seminorm); default from :func:`default_scales`
            (2 point spacings); FE callers pass a few mesh sizes.
        delta_max: Window's upper end for the fit; default a quarter of the diameter.
        seminorm_max: Upper distance limit of the seminorm; default none (all pairs above
            ``delta_min``).
        method: ``"exact"`` or ``"fast"``.
        per_octave: Scales per factor 2 for the default scales.
        chunk_pairs: Pairs per chunk of the exact method.

    Returns:
        A :class:`HolderResult`, the same on every rank. Collective.
    """
    check_method(method)
    X, V = prepare_cloud(points, values, comm)
    if scales is None:
        s = default_scales(X, comm, delta_min=delta_min, delta_max=delta_max, per_octave=per_octave)
    else:
        s = check_scales(scales)
    dmin = float(s[0]) if delta_min is None else float(delta_min)
    dmax = float(s[-1]) if delta_max is None else float(delta_max)
    smax = np.inf if seminorm_max is None else float(seminorm_max)
    fixed = None if alpha == "auto" else check_alpha(alpha)  # type: ignore[arg-type]
    if alpha != "auto" and not isinstance(alpha, int | float):
        raise ValueError(f"alpha must be a number in [0, 1] or 'auto', got {alpha!r}")
    n = int(comm.allreduce(X.shape[0], op=MPI.SUM))
    # window edges with a relative tolerance: rounding of node coordinates cannot move a pair
    # across an edge (EDGE_TOL)
    edges = s * (1.0 + EDGE_TOL)
    dlo, shi = dmin * (1.0 - EDGE_TOL), smax * (1.0 + EDGE_TOL)
    tree: Tree | None = None
    if method == "exact":
        omega, semi = exact_pairs(X, V, comm, edges, fixed, dlo, shi, chunk_pairs)
    else:
        Xg, Vg = gather(X, V, comm)
        tree = Tree(Xg, Vg) if n >= 2 else None
        omega = tree_modulus(tree, edges, comm) if tree is not None else np.zeros(s.size)
        semi = 0.0
    plain = fit_exponent(s, omega, delta_min=dmin, delta_max=dmax)
    expo, estimator = headline_exponent(s, omega, dmin, dmax)
    constant = not np.any(omega > 0)
    if fixed is None:
        a = (
            1.0
            if constant or not math.isfinite(expo.estimate)
            else float(np.clip(expo.estimate, 0.0, 1.0))
        )
    else:
        a = fixed
    if method == "exact":
        if fixed is None:
            semi = exact_pairs(X, V, comm, np.zeros(0), a, dlo, shi, chunk_pairs)[1]
    elif tree is not None:
        semi = branch_and_bound(tree, dlo, shi, a, 0.0, comm)
    peak, profile = sup_profile(X, V, comm, s)
    window = (s >= dmin * (1 - 1e-12)) & (s <= dmax * (1 + 1e-12))
    slopes = profile_slopes(s[window], profile[window])
    return HolderResult(
        sup=sup_norm(V, comm),
        alpha=a,
        seminorm=float(semi),
        scales=s,
        modulus=np.asarray(omega, dtype=np.float64),
        exponent=expo,
        delta_min=dmin,
        delta_max=dmax,
        seminorm_max=smax,
        exponent_increment=fit_exponent(s, omega, delta_min=dmin, delta_max=dmax, increments=True),
        method=method,
        n_points=n,
        exponent_plain=plain,
        estimator=estimator,
        verdict=classify(expo, slopes, constant),
        peak=peak,
        sup_profile=profile,
    )


def sup_profile(
    X: FloatArray, V: FloatArray, comm: MPI.Comm, scales: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """``(peak, M)``: where ``|g|`` is largest and ``M(ρ) = max_{|x − peak| >= ρ} |g(x)|``.

    ``peak`` is the lexicographically first point with ``|g| >= (1 − EDGE_TOL) max |g|``, a
    choice that does not depend on the partition. ``ρ`` is compared with the tolerance
    ``EDGE_TOL``. Collective.
    """
    g = np.sqrt(np.einsum("ij,ij->i", V, V)) if V.shape[0] else np.zeros(0)
    best = float(comm.allreduce(float(g.max()) if g.size else -1.0, op=MPI.MAX))
    if best < 0:
        return np.zeros(X.shape[1]), np.zeros(scales.size)
    # ties (a symmetric field) and rounding: the lexicographically first point near the max
    near = X[g >= best * (1.0 - EDGE_TOL)]
    mine = min(map(tuple, near.tolist())) if near.shape[0] else None
    peak = np.asarray(min(c for c in comm.allgather(mine) if c is not None), dtype=np.float64)
    r = np.sqrt(np.einsum("ij,ij->i", X - peak, X - peak)) if X.shape[0] else np.zeros(0)
    prof = np.zeros(scales.size)
    for i, rho in enumerate(scales):
        far = r >= rho * (1.0 - EDGE_TOL)
        prof[i] = float(g[far].max()) if np.any(far) else 0.0
    return peak, allreduce_array(prof, MPI.MAX, comm)
