r"""Probability paths :math:`p_t` from :math:`p_0` to :math:`p_1` and their velocity fields.

For any path (docs/math.md §3) the flux at time :math:`t` solves the Neumann problem

.. math::  \Delta\varphi_t = -\partial_t p_t,\quad \partial_n\varphi_t = 0,\quad
           \int_\Omega\varphi_t\,dx = 0,\qquad F_t = \nabla\varphi_t,\quad v_t = F_t / p_t,

so that :math:`\partial_t p_t + \nabla\cdot(p_t v_t) = 0`. Every path shares one operator, the
Neumann Laplacian: a single :class:`~beckmann.poisson.NeumannPoisson` serves all right-hand sides.

* :class:`LinearPath`: :math:`p_t = (1-t)p_0 + t p_1`, :math:`\partial_t p_t = p_1 - p_0`; one
  solve for all :math:`t` (the solve of :func:`beckmann.pipeline.solve`).
* :class:`FisherRaoPath`: :math:`p_s = p_0^{1-s} p_1^s / Z_s` with
  :math:`\partial_s p_s = p_s(\ell - E_{p_s}[\ell])`, :math:`\ell = \log(p_1/p_0)`; one solve
  per time of a grid, the flux interpolated linearly in :math:`s` between grid times.

A new path is a small subclass of :class:`ProbabilityPath`: its pointwise density (a function of
:math:`t` and the values of :math:`p_0, p_1`), its rate :math:`\partial_t p_t` at the degrees of
freedom, and the same density as a UFL expression. :func:`solve_path` turns it into a
:class:`PathFlux`, which :mod:`beckmann.transport` evaluates at samples; :func:`path_energy`
gives its kinetic energy and maximum speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, PETSc, basix, fem, ufl
from beckmann._resources import require_memory
from beckmann.fields import Solution, gradient
from beckmann.locate import MeshCells, cell_values

MAX_PATH_TIMES = 10_001
"""Most grid times of a time-dependent path (one Poisson solve each)."""

__all__ = [
    "PATHS",
    "FisherRaoPath",
    "LinearPath",
    "PathFlux",
    "ProbabilityPath",
    "compare_paths",
    "make_path",
    "path_energy",
    "solve_path",
    "solver_options",
]

FloatArray = npt.NDArray[np.float64]

#: Densities are clamped below at this value where a logarithm or a power needs positivity.
TINY = 1e-300


def _integral(expr: Any, comm: MPI.Comm, degree: int | None = None) -> float:
    md = {"quadrature_degree": degree} if degree is not None else {}
    local = fem.assemble_scalar(fem.form(expr * ufl.dx(metadata=md)))
    return float(comm.allreduce(local, op=MPI.SUM))


class ProbabilityPath:
    """A path of densities ``p_t``, ``t ∈ [0, 1]``, from ``p0`` to ``p1``.

    Subclasses set :attr:`name`, implement :meth:`density`, :meth:`rate` and
    :meth:`ufl_density`, and may override :meth:`bind` for collective set-up (normalising
    constants). :attr:`constant_rate` marks paths whose ``∂_t p_t`` does not depend on ``t``
    (one solve for all times).
    """

    name: ClassVar[str] = "path"
    constant_rate: ClassVar[bool] = False

    def __init__(self) -> None:
        self.p0: fem.Function | None = None
        self.p1: fem.Function | None = None
        self._t: fem.Constant | None = None

    def bind(self, p0: fem.Function, p1: fem.Function) -> None:
        """Attach the end densities (same space, normalised); collective."""
        self.p0, self.p1 = p0, p1
        self._t = fem.Constant(p0.function_space.mesh, PETSc.ScalarType(0.0))

    @property
    def t(self) -> fem.Constant:
        """The time as a UFL constant (set its ``value`` before assembling)."""
        if self._t is None:
            raise RuntimeError(f"path {self.name!r} is not bound to densities; call bind()")
        return self._t

    def density(self, t: float, q0: FloatArray, q1: FloatArray) -> FloatArray:
        """``p_t`` at points where ``p0 = q0`` and ``p1 = q1``; local, vectorised."""
        raise NotImplementedError

    def rate(self, t: float, out: fem.Function) -> None:
        """Write ``∂_t p_t`` at the degrees of freedom of ``out``'s space; collective."""
        raise NotImplementedError

    def ufl_density(self) -> ufl.core.expr.Expr:
        """``p_t`` as a UFL expression in :attr:`t`, :attr:`p0` and :attr:`p1`."""
        raise NotImplementedError


class LinearPath(ProbabilityPath):
    """``p_t = (1 − t) p0 + t p1`` (Beckmann/Moser); ``∂_t p_t = p1 − p0``, one solve."""

    name = "linear"
    constant_rate = True

    def density(self, t: float, q0: FloatArray, q1: FloatArray) -> FloatArray:
        """``(1 − t) q0 + t q1``."""
        return (1.0 - t) * q0 + t * q1

    def rate(self, t: float, out: fem.Function) -> None:
        """``p1 − p0`` (exact at the degrees of freedom)."""
        assert self.p0 is not None and self.p1 is not None
        out.x.array[:] = self.p1.x.array - self.p0.x.array

    def ufl_density(self) -> ufl.core.expr.Expr:
        """``(1 − t) p0 + t p1``."""
        return (1.0 - self.t) * self.p0 + self.t * self.p1


class FisherRaoPath(ProbabilityPath):
    """Geometric path ``p_s = p0^(1−s) p1^s / Z_s`` (Fisher–Rao flow of ``KL(·‖p1)``).

    ``∂_s p_s = p_s (ℓ − E_{p_s}[ℓ])`` with ``ℓ = log(p1/p0)``. The normaliser ``log Z_s`` is
    assembled on a grid of ``s`` (refining the solve grid) and interpolated with a cubic
    spline, so pointwise densities need no collective call.

    Args:
        spline_points: Number of ``s`` values at which ``log Z_s`` is assembled.
    """

    name = "fisher-rao"

    def __init__(self, spline_points: int = 65) -> None:
        super().__init__()
        if spline_points < 4:
            raise ValueError(f"spline_points must be >= 4, got {spline_points!r}")
        self.spline_points = spline_points
        self._log_z: Any = None

    def bind(self, p0: fem.Function, p1: fem.Function) -> None:
        """Check positivity at the degrees of freedom and tabulate ``log Z_s``; collective."""
        from scipy.interpolate import CubicSpline

        super().bind(p0, p1)
        comm = p0.function_space.mesh.comm
        n = p0.function_space.dofmap.index_map.size_local
        lo = min(
            float(np.min(p0.x.array[:n], initial=np.inf)),
            float(np.min(p1.x.array[:n], initial=np.inf)),
        )
        lo = comm.allreduce(lo, op=MPI.MIN)
        if not lo > 0:
            raise ValueError(
                f"the Fisher-Rao path needs p0, p1 > 0 (log(p1/p0)); the minimum is {lo:.3g}; "
                "add a floor to the densities"
            )
        s_grid = np.linspace(0.0, 1.0, self.spline_points)
        form = fem.form(self._unnormalised() * ufl.dx)
        log_z = np.empty_like(s_grid)
        for i, s in enumerate(s_grid):
            self.t.value = s
            log_z[i] = np.log(comm.allreduce(fem.assemble_scalar(form), op=MPI.SUM))
        self._log_z = CubicSpline(s_grid, log_z)

    def _unnormalised(self) -> ufl.core.expr.Expr:
        q0 = ufl.max_value(self.p0, TINY)
        q1 = ufl.max_value(self.p1, TINY)
        return ufl.exp((1.0 - self.t) * ufl.ln(q0) + self.t * ufl.ln(q1))

    def log_z(self, s: float) -> float:
        """``log Z_s`` (spline through assembled values)."""
        if self._log_z is None:
            raise RuntimeError("FisherRaoPath is not bound to densities; call bind()")
        return float(self._log_z(s))

    def density(self, t: float, q0: FloatArray, q1: FloatArray) -> FloatArray:
        """``q0^(1−t) q1^t / Z_t``."""
        l0 = np.log(np.maximum(q0, TINY))
        l1 = np.log(np.maximum(q1, TINY))
        return np.exp((1.0 - t) * l0 + t * l1 - self.log_z(t))

    def rate(self, t: float, out: fem.Function) -> None:
        """``p_s (ℓ − E_{p_s}[ℓ])`` at the degrees of freedom; ``E`` is assembled."""
        assert self.p0 is not None and self.p1 is not None
        comm = out.function_space.mesh.comm
        self.t.value = t
        ell = ufl.ln(ufl.max_value(self.p1, TINY)) - ufl.ln(ufl.max_value(self.p0, TINY))
        mean = _integral(self._unnormalised() * ell, comm) / np.exp(self.log_z(t))
        q0, q1 = self.p0.x.array, self.p1.x.array
        ps = self.density(t, q0, q1)
        out.x.array[:] = ps * (np.log(np.maximum(q1, TINY)) - np.log(np.maximum(q0, TINY)) - mean)

    def ufl_density(self) -> ufl.core.expr.Expr:
        """``exp((1 − s) log p0 + s log p1) / Z_s`` (``Z_s`` from the spline at ``t.value``)."""
        return self._unnormalised() / self._z_const

    def set_time(self, t: float) -> None:
        """Set :attr:`t` and the normaliser constant used by :meth:`ufl_density`."""
        self.t.value = t
        self._z_const.value = np.exp(self.log_z(t))

    @property
    def _z_const(self) -> fem.Constant:
        if not hasattr(self, "_zc"):
            self._zc = fem.Constant(self.p0.function_space.mesh, PETSc.ScalarType(1.0))
        return self._zc


#: Path names accepted by :func:`make_path` and the CLI.
PATHS: dict[str, type[ProbabilityPath]] = {"linear": LinearPath, "fisher-rao": FisherRaoPath}


def make_path(name: str) -> ProbabilityPath:
    """A fresh path object by name (``linear`` or ``fisher-rao``)."""
    if name not in PATHS:
        raise ValueError(f"unknown path {name!r}; use one of {', '.join(PATHS)}")
    return PATHS[name]()


def _set_time(path: ProbabilityPath, t: float) -> None:
    if isinstance(path, FisherRaoPath):
        path.set_time(t)
    else:
        path.t.value = t


@dataclass
class PathFlux:
    """A path with its solved fluxes ``F_t = ∇φ_t`` on a grid of times.

    Attributes:
        path: The bound path.
        sol: The solution whose mesh, ``p0`` and ``p1`` the path runs between.
        times: Grid times (one time, ``[0]``, for a constant-rate path).
        fluxes: ``F`` at each grid time, in DG_{k-1} (vector), ghost values up to date.
        info: Solve statistics (iterations per time).
    """

    path: ProbabilityPath
    sol: Solution
    times: FloatArray
    fluxes: list[fem.Function]
    info: dict[str, Any] = field(default_factory=dict)

    def weights(self, t: float) -> list[tuple[int, float]]:
        """Linear interpolation weights in time: ``F_t = Σ w_j F_{t_j}``."""
        if len(self.times) == 1:
            return [(0, 1.0)]
        t = min(max(float(t), 0.0), 1.0)
        j = int(np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, len(self.times) - 2))
        a, b = self.times[j], self.times[j + 1]
        w = (t - a) / (b - a)
        return [(j, 1.0 - w), (j + 1, w)]

    def flux_expression(self, t: float) -> ufl.core.expr.Expr:
        """``F_t`` as a UFL expression (linear in time between grid fluxes)."""
        terms = [float(w) * self.fluxes[j] for j, w in self.weights(t) if w != 0.0]
        return sum(terms[1:], terms[0]) if terms else 0.0 * self.fluxes[0]

    def velocity(self, t: float) -> fem.Function:
        """``v_t = F_t / p_t`` interpolated into DG_k (vector); collective."""
        sol = self.sol
        W = fem.functionspace(sol.msh, ("DG", sol.degree, (sol.gdim,)))
        v = fem.Function(W, name=f"velocity_{self.path.name}")
        _set_time(self.path, t)
        expr = self.flux_expression(t) / self.path.ufl_density()
        v.interpolate(fem.Expression(expr, W.element.interpolation_points))
        return v

    def energy(self, substeps: int = 8) -> dict[str, float]:
        """Kinetic energy ``∫_0^1 ∫ p_t |v_t|² dx dt`` and ``max_t max_x |v_t|``; collective.

        See :func:`path_energy`.
        """
        return path_energy(self, substeps)

    def kinetic_energy(self) -> float:
        """``∫_0^1 ∫ p_t |v_t|² dx dt`` (see :meth:`energy`); collective."""
        return self.energy()["kinetic_energy"]

    def max_speed(self) -> float:
        """``max_t max_x |v_t|`` over quadrature points and nodes (see :meth:`energy`)."""
        return self.energy()["max_speed"]


def path_energy(
    pf: PathFlux, substeps: int = 8, cells: MeshCells | None = None
) -> dict[str, float]:
    """Kinetic energy ``∫∫ |F_t|²/p_t dx dt`` and ``max |v_t|`` of a solved path; collective.

    Space: a degree ``2k + 2`` rule on each owned cell, from the cell-wise DG values of
    ``p0, p1`` (DG_k) and of the grid fluxes (DG_{k-1}); the maximum also looks at the DG_k nodes.
    Time: the linear path exactly (``∫_0^1 dt/p_t`` is the logarithmic mean of ``1/p0`` and
    ``1/p1``; ``|v_t|`` peaks at ``t = 0`` or ``1``), other paths by Simpson's rule with
    ``substeps`` (even) intervals in each interval of the solve grid.

    Args:
        pf: The solved path.
        substeps: Simpson intervals per grid interval (time-dependent paths).
        cells: The mesh's :class:`~beckmann.locate.MeshCells`, when already built.
    """
    sol = pf.sol
    mc = cells if cells is not None else MeshCells(sol.msh)
    k = sol.degree
    P0, el_p = cell_values(sol.p0, k, mc)
    P1, _ = cell_values(sol.p1, k, mc)
    kf = int(pf.fluxes[0].function_space.ufl_element().embedded_superdegree)  # k − 1, mixed: k
    fl = [cell_values(F, kf, mc) for F in pf.fluxes]
    el_f = fl[0][1]
    d = mc.d
    n = mc.n_owned
    ct = basix.CellType.triangle if d == 2 else basix.CellType.tetrahedron
    qp, qw = basix.make_quadrature(ct, 2 * k + 2)
    pts = np.concatenate([qp, np.asarray(el_p.points)])
    wq = np.concatenate([qw, np.zeros(len(el_p.points))])
    phi = el_p.tabulate(0, pts)[0, :, :, 0]
    psi = el_f.tabulate(0, pts)[0, :, :, 0]
    q0 = P0[:n] @ phi.T  # (cell, point)
    q1 = P1[:n] @ phi.T
    Fq = [np.einsum("qj,cjd->cqd", psi, F[:n]) for F, _ in fl]
    dx = wq[None, :] * (mc.volume[:n, None] * math.factorial(d))
    if isinstance(pf.path, LinearPath):
        a, b = np.maximum(q0, TINY), np.maximum(q1, TINY)
        with np.errstate(divide="ignore", invalid="ignore"):
            lm = np.where(
                np.abs(b - a) < 1e-9 * (a + b), 2.0 / (a + b), (np.log(b) - np.log(a)) / (b - a)
            )
        F2 = (Fq[0] ** 2).sum(axis=2)
        ke = float((F2 * lm * dx).sum())
        vmax = float(np.sqrt(F2 / np.minimum(a, b) ** 2).max()) if F2.size else 0.0
    else:
        m = substeps + substeps % 2
        ke, vmax = 0.0, 0.0
        for a_t, b_t in zip(pf.times[:-1], pf.times[1:], strict=True):
            ts = np.linspace(a_t, b_t, m + 1)
            w = np.ones(m + 1)
            w[1:-1:2], w[2:-1:2] = 4.0, 2.0
            w *= (b_t - a_t) / (3.0 * m)
            for t, wt in zip(ts, w, strict=True):
                F = sum(wj * Fq[j] for j, wj in pf.weights(float(t)))
                p = pf.path.density(float(t), q0, q1)
                F2 = (F**2).sum(axis=2)
                ke += wt * float((F2 / p * dx).sum())
                if F2.size:
                    vmax = max(vmax, float(np.sqrt(F2 / p**2).max()))
    comm = mc.comm
    return {
        "kinetic_energy": float(comm.allreduce(ke, op=MPI.SUM)),
        "max_speed": float(comm.allreduce(vmax, op=MPI.MAX)),
    }


def solver_options(sol: Solution) -> dict[str, Any]:
    """The ``method``, ``rtol`` and ``petsc_options`` of the run's solver (for a path solve)."""
    cfg = sol.info.get("config") or {}
    s = cfg.get("solver", {}) if isinstance(cfg, dict) else {}
    out: dict[str, Any] = {}
    for key in ("method", "rtol", "petsc_options"):
        if key in s:
            out[key] = s[key]
    return out


def solve_path(
    sol: Solution,
    path: ProbabilityPath | str,
    *,
    n_times: int = 21,
    poisson: Any = None,
    solver: dict[str, Any] | None = None,
) -> PathFlux:
    """Solve ``Δφ_t = −∂_t p_t`` for the fluxes of ``path`` on a grid of times; collective.

    Args:
        sol: A solved run (mesh, ``p0``, ``p1`` and, for the linear path, ``phi``).
        path: A :class:`ProbabilityPath` (bound here) or its name.
        n_times: Grid size for paths whose rate depends on time (>= 2).
        poisson: A :class:`~beckmann.poisson.NeumannPoisson` on ``sol.V`` to reuse; built (and
            destroyed) here when ``None`` and a solve is needed.
        solver: Keyword arguments for that operator (``method``, ``rtol``, ``petsc_options``).

    Returns:
        The :class:`PathFlux`.
    """
    from beckmann.mixed import MixedPoisson, MixedSolution, rt_to_dg
    from beckmann.poisson import NeumannPoisson

    if isinstance(path, str):
        path = make_path(path)
    if not path.constant_rate and (not isinstance(n_times, int) or n_times < 2):
        raise ValueError(f"the path time grid needs at least 2 times, got {n_times!r}")
    if not path.constant_rate and n_times > MAX_PATH_TIMES:
        raise ValueError(
            f"the path time grid has {n_times} times, more than {MAX_PATH_TIMES}: each time is a "
            "Poisson solve; lower --grid (default 21)"
        )
    if not path.constant_rate:
        # one stored flux per grid time: gdim DG values per flux dof
        V = sol.V
        local = V.dofmap.index_map.size_local * V.dofmap.index_map_bs
        ndofs = sol.comm.allreduce(local, op=MPI.SUM)
        require_memory(
            8.0 * n_times * ndofs * sol.gdim * 2,
            f"the fluxes of a {n_times}-time path grid",
            "lower --grid",
            ranks=sol.comm.size,
        )
    path.bind(sol.p0, sol.p1)
    if isinstance(path, LinearPath):
        return PathFlux(path, sol, np.zeros(1), [sol.flux()], {"solves": 0})
    times = np.linspace(0.0, 1.0, 1 if path.constant_rate else n_times)
    own = poisson is None
    mixed = isinstance(sol, MixedSolution)  # a mixed run's fluxes: RT_k solves (div F = −∂_t p)
    if own:
        poisson = (
            MixedPoisson(sol.msh, sol.degree, **(solver or {}))
            if mixed
            else NeumannPoisson(sol.V, **(solver or {}))
        )
    f = fem.Function(sol.V, name="rate")
    phi = fem.Function(sol.V, name="potential_t")
    fluxes, iters = [], []
    try:
        for t in times:
            path.rate(float(t), f)
            # make ∫ f = 0 exactly: the continuity equation conserves mass
            mean = _integral(f, sol.comm) / poisson.volume
            f.x.array[:] -= mean
            if mixed:
                fluxes.append(rt_to_dg(poisson.solve(-f)[0], name=f"flux_{t:.4f}"))
            else:
                poisson.solve(f, phi)
                fluxes.append(gradient(phi, name=f"flux_{t:.4f}"))
            iters.append(poisson.iterations)
    finally:
        if own:
            poisson.destroy()
    return PathFlux(path, sol, times, fluxes, {"solves": len(times), "iterations": iters})


def compare_paths(
    sol: Solution,
    names: tuple[str, ...] = ("linear", "fisher-rao"),
    *,
    n_times: int = 21,
    solver: dict[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """Kinetic energy ``∫∫ p_t|v_t|²`` and ``max |v_t|`` of each path; collective."""
    out: dict[str, dict[str, float]] = {}
    for name in names:
        pf = solve_path(sol, name, n_times=n_times, solver=solver)
        out[name] = {**pf.energy(), "solves": float(pf.info["solves"])}
    return out
