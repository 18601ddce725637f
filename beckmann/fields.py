r"""Flux :math:`F = \nabla\varphi`, velocity :math:`v_t = F/p_t` and evaluation at points.

For a potential in Lagrange degree :math:`k`, the flux :math:`\nabla\varphi` lies exactly in the
discontinuous vector space DG\ :sub:`k-1`, so :meth:`Solution.flux` is an interpolation without
error. The velocity :math:`F/((1-t)p_0 + t p_1)` is not polynomial; :meth:`Solution.velocity`
interpolates it into DG\ :sub:`k` (vector), while :meth:`Solution.evaluate` computes it exactly
at points from :math:`F`, :math:`p_0` and :math:`p_1` there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, dmesh, fem, geometry, ufl

__all__ = ["PointLocator", "Solution", "velocity_expression"]


def velocity_expression(
    F: ufl.core.expr.Expr, p0: fem.Function, p1: fem.Function, t: float
) -> ufl.core.expr.Expr:
    """UFL expression of ``v_t = F / ((1 - t) p0 + t p1)`` (linear path, MATH.md §2)."""
    return F / ((1.0 - t) * p0 + t * p1)


@dataclass
class Solution:
    """A solved Beckmann problem on one mesh (linear path).

    Attributes:
        msh: The (distributed) mesh.
        phi: Potential φ, mean zero, in Lagrange degree ``degree``.
        p0: Normalised source density (same space as ``phi``).
        p1: Normalised target density.
        info: Scalars and metadata (summary of the run).
    """

    msh: dmesh.Mesh
    phi: fem.Function
    p0: fem.Function
    p1: fem.Function
    info: dict = field(default_factory=dict)
    _flux: fem.Function | None = None
    _locator: PointLocator | None = None

    @property
    def V(self) -> fem.FunctionSpace:  # noqa: N802 - math name
        """The scalar Lagrange space of the potential and densities."""
        return self.phi.function_space

    @property
    def degree(self) -> int:
        """Lagrange degree of the potential."""
        return int(self.V.ufl_element().embedded_superdegree)

    @property
    def gdim(self) -> int:
        """Geometric dimension."""
        return int(self.msh.geometry.dim)

    @property
    def comm(self) -> MPI.Comm:
        """The mesh communicator."""
        return self.msh.comm

    def flux(self) -> fem.Function:
        """``F = ∇φ`` in DG_{k-1} (vector); exact. Cached; collective on first call."""
        if self._flux is None:
            W = fem.functionspace(self.msh, ("DG", self.degree - 1, (self.gdim,)))
            F = fem.Function(W, name="flux")
            F.interpolate(fem.Expression(ufl.grad(self.phi), W.element.interpolation_points))
            self._flux = F
        return self._flux

    def velocity(self, t: float) -> fem.Function:
        """``v_t = F / p_t`` interpolated into DG_k (vector). Collective."""
        _check_time(t)
        W = fem.functionspace(self.msh, ("DG", self.degree, (self.gdim,)))
        v = fem.Function(W, name="velocity")
        expr = velocity_expression(ufl.grad(self.phi), self.p0, self.p1, t)
        v.interpolate(fem.Expression(expr, W.element.interpolation_points))
        return v

    def cost(self) -> float:
        """Beckmann cost ``½ ∫ |F|² dx``. Collective."""
        local = fem.assemble_scalar(
            fem.form(0.5 * ufl.inner(ufl.grad(self.phi), ufl.grad(self.phi)) * ufl.dx)
        )
        return float(self.comm.allreduce(local, op=MPI.SUM))

    def locator(self) -> PointLocator:
        """The cached point locator of this mesh."""
        if self._locator is None:
            self._locator = PointLocator(self.msh)
        return self._locator

    def evaluate(
        self, points: npt.ArrayLike, t: float = 0.0, *, what: tuple[str, ...] | None = None
    ) -> dict[str, np.ndarray]:
        """Evaluate fields at ``points`` given identically on every rank; collective.

        Args:
            points: Array ``(N, d)`` with ``d`` the mesh's geometric dimension.
            t: Time of the velocity.
            what: Subset of ``potential, flux, velocity, source, target`` (default: the first
                three).

        Returns:
            Arrays, the same on every rank: ``potential`` ``(N,)``, ``flux`` and ``velocity``
            ``(N, d)``, ``source`` and ``target`` ``(N,)``.

        Raises:
            ValueError: A point lies outside the domain (on every rank).
        """
        _check_time(t)
        what = what or ("potential", "flux", "velocity")
        unknown = set(what) - {"potential", "flux", "velocity", "source", "target"}
        if unknown:
            raise ValueError(f"cannot evaluate {sorted(unknown)}")
        loc = self.locator()
        x, cells, mine = loc.locate(points)
        d = self.gdim
        n = x.shape[0]
        need_dens = "velocity" in what or "source" in what or "target" in what
        buf: dict[str, np.ndarray] = {}
        idx = np.flatnonzero(mine)
        c = cells[idx]
        xp = x[idx]
        if "potential" in what:
            buf["potential"] = np.zeros((n, 1))
            if idx.size:
                buf["potential"][idx] = self.phi.eval(xp, c).reshape(-1, 1)
        F = np.zeros((n, d))
        if "flux" in what or "velocity" in what:
            flux = self.flux()  # collective on first use: every rank, points or not
            if idx.size:
                F[idx] = flux.eval(xp, c).reshape(-1, d)
            buf["flux"] = F
        if need_dens:
            q0 = np.zeros((n, 1))
            q1 = np.zeros((n, 1))
            if idx.size:
                q0[idx] = self.p0.eval(xp, c).reshape(-1, 1)
                q1[idx] = self.p1.eval(xp, c).reshape(-1, 1)
            buf["source"], buf["target"] = q0, q1
        out = {k: self.comm.allreduce(v, op=MPI.SUM) for k, v in buf.items()}
        res: dict[str, np.ndarray] = {}
        if "potential" in what:
            res["potential"] = out["potential"][:, 0]
        if "flux" in what:
            res["flux"] = out["flux"]
        if "velocity" in what:
            pt = (1.0 - t) * out["source"] + t * out["target"]
            res["velocity"] = out["flux"] / pt
        for k in ("source", "target"):
            if k in what:
                res[k] = out[k][:, 0]
        return res


def _check_time(t: float) -> None:
    if not (0.0 <= float(t) <= 1.0):
        raise ValueError(f"time t must lie in [0, 1], got {t!r}")


class PointLocator:
    """Finds, for points known on every rank, one owning rank and cell each.

    A point on a facet between cells (where the flux jumps) must get the same cell whatever the
    partition, or answers would depend on the rank count. Among all colliding cells on all
    ranks, the one whose midpoint has the smallest projection on a fixed generic direction wins:
    a rule that depends on geometry only, so it survives repartitioning and checkpoint reloads.
    The bounding-box tree over the rank's owned cells is built once and reused.
    """

    _DIRECTION = np.array([1.0, np.sqrt(2.0) / 10.0, np.sqrt(3.0) / 100.0])

    def __init__(self, msh: dmesh.Mesh) -> None:
        self.msh = msh
        tdim = msh.topology.dim
        ncells = msh.topology.index_map(tdim).size_local
        owned = np.arange(ncells, dtype=np.int32)
        self.tree = geometry.bb_tree(msh, tdim, entities=owned)
        mid = dmesh.compute_midpoints(msh, tdim, owned)
        self.key = mid @ self._DIRECTION

    def locate(self, points: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Locate points given identically on every rank; collective.

        Returns ``(x, cells, mine)``: padded points ``(N, 3)``, a local cell per point (or -1)
        and a mask of the points this rank evaluates (exactly one rank per point).

        Raises:
            ValueError: On every rank, if a point lies outside the domain or has the wrong
                dimension.
        """
        msh = self.msh
        comm = msh.comm
        d = msh.geometry.dim
        p = np.asarray(points, dtype=np.float64)
        if p.ndim == 1 and p.size == d:
            p = p.reshape(1, d)
        if p.ndim != 2 or p.shape[1] != d:
            raise ValueError(f"points must have shape (N, {d}) for this mesh, got {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError("points contain NaN or infinite coordinates")
        n = p.shape[0]
        x = np.zeros((n, 3))
        x[:, :d] = p
        cand = geometry.compute_collisions_points(self.tree, x)
        coll = geometry.compute_colliding_cells(msh, cand, x)
        offsets = np.asarray(coll.offsets)
        counts = np.diff(offsets)
        found = counts > 0
        all_cells = np.asarray(coll.array, dtype=np.int32)
        keys = self.key[all_cells] if all_cells.size else np.zeros(0)
        best = np.full(n, np.inf)
        cells = np.full(n, -1, dtype=np.int32)
        if all_cells.size:
            point_of = np.repeat(np.arange(n), counts)
            order = np.lexsort((keys, point_of))  # by point, then key: first per point wins
            first = order[np.r_[0, np.flatnonzero(np.diff(point_of[order])) + 1]]
            best[point_of[first]] = keys[first]
            cells[point_of[first]] = all_cells[first]
        gbest = np.empty_like(best)
        comm.Allreduce(best, gbest, op=MPI.MIN)
        outside = np.flatnonzero(~np.isfinite(gbest))
        if outside.size:
            first_out = p[outside[0]]
            raise ValueError(
                f"{outside.size} of {n} points lie outside the domain, the first at "
                f"({', '.join(f'{v:.6g}' for v in first_out)}) (index {outside[0]})"
            )
        mine = found & (best == gbest)
        return x, cells, mine
