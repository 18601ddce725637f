r"""Flux :math:`F = \nabla\varphi`, velocity :math:`v_t = F/p_t` and evaluation at points.

For a potential in Lagrange degree :math:`k`, the flux :math:`\nabla\varphi` lies exactly in the
discontinuous vector space DG\ :sub:`k-1`, so :meth:`Solution.flux` is an interpolation without
error. The velocity :math:`F/((1-t)p_0 + t p_1)` is not polynomial; :meth:`Solution.velocity`
interpolates it into DG\ :sub:`k` (vector), while :meth:`Solution.evaluate` computes it exactly
at points from :math:`F`, :math:`p_0` and :math:`p_1` there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, basix, dmesh, fem, la, ufl
from beckmann.locate import PointLocator

__all__ = [
    "PointLocator",
    "Solution",
    "gradient",
    "gradient_matrix",
    "is_vertex_function",
    "to_vertex_function",
    "velocity_expression",
    "vertex_gradient",
    "vertex_vector_space",
]


def velocity_expression(
    F: ufl.core.expr.Expr, p0: fem.Function, p1: fem.Function, t: float
) -> ufl.core.expr.Expr:
    """UFL expression of ``v_t = F / ((1 - t) p0 + t p1)`` (linear path, docs/math.md §2)."""
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
            self._flux = gradient(self.phi)
        return self._flux

    def vertex_flux(self, space: fem.FunctionSpace | None = None) -> fem.Function:
        """``F = ∇φ`` averaged over the cells around each vertex (P1 vector); collective.

        The same field as the vertex average of :meth:`flux` (ParaView output), computed from
        the cells' geometry without building the DG flux (:func:`vertex_gradient`). A subclass
        whose flux is not ``∇φ`` (the mixed solve's Raviart-Thomas flux) averages its
        :meth:`flux`.
        """
        if type(self).flux is not Solution.flux:
            return to_vertex_function(self.flux(), "flux", space)
        return vertex_gradient(self.phi, space)

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


def is_vertex_function(u: fem.Function) -> bool:
    """Whether ``u`` is already a vertex (P1/Q1) Lagrange field, as XDMF stores it."""
    el = u.function_space.ufl_element()
    return not el.discontinuous and el.embedded_superdegree == 1 and el.family_name in ("P", "Q")


def to_vertex_function(
    u: fem.Function, name: str | None = None, space: fem.FunctionSpace | None = None
) -> fem.Function:
    """Represent ``u`` in the vertex Lagrange space (P1) of its mesh, for XDMF output.

    Continuous Lagrange fields are interpolated (exact at the vertices); discontinuous ones are
    averaged over the cells around each vertex. A P1 field is returned as it is. ``space`` is
    the P1 space of ``u``'s shape, when the caller has one already. Collective.
    """
    if is_vertex_function(u):
        return u
    msh = u.function_space.mesh
    Q = space if space is not None else fem.functionspace(msh, ("Lagrange", 1, u.ufl_shape))
    label = name or u.name
    el = u.function_space.ufl_element()
    if not el.discontinuous:
        q = fem.Function(Q, name=label)
        q.interpolate(u)
        return q
    bs = Q.dofmap.bs
    nown = msh.topology.index_map(msh.topology.dim).size_local
    if el.embedded_superdegree == 0:
        # DG0: a cell's one value goes to each of its vertices (no (cell, vertex, component)
        # copy of the values, no interpolation kernel)
        own = u.x.array.reshape(-1, bs)[u.function_space.dofmap.list[:nown, 0]]
        columns = [own[:, j] for j in range(bs)]
        return _average_at_vertices(Q, label, lambda v: columns)
    cells = np.arange(nown, dtype=np.int32)
    vals = fem.Expression(u, Q.element.interpolation_points).eval(msh, cells)
    vals = vals.reshape(nown, -1, bs)  # (cell, vertex, component)
    return _average_at_vertices(Q, label, lambda v: [vals[:, v, j] for j in range(bs)])


def _average_at_vertices(
    Q: fem.FunctionSpace, name: str, at_vertex: Callable[[int], Sequence[npt.NDArray[Any]]]
) -> fem.Function:
    """The P1 function on ``Q`` whose value at a vertex is the mean over the cells around it.

    ``at_vertex(v)`` gives, per component, every owned cell's value at its vertex position
    ``v`` (the columns of ``Q``'s dof list). Only owned cells contribute; the ghosts' partial
    sums are then added to their owners. Collective.
    """
    msh = Q.mesh
    nown = msh.topology.index_map(msh.topology.dim).size_local
    bs = Q.dofmap.bs
    qdofs = Q.dofmap.list[:nown]
    nblocks = Q.dofmap.index_map.size_local + Q.dofmap.index_map.num_ghosts
    acc = la.vector(Q.dofmap.index_map, bs)
    cnt = la.vector(Q.dofmap.index_map, 1)
    a = acc.array.reshape(nblocks, bs)
    a[:] = 0.0
    for v in range(qdofs.shape[1]):  # one vertex position at a time: no (cell, vertex) copy
        col = np.ascontiguousarray(qdofs[:, v])
        for j, g in enumerate(at_vertex(v)):
            a[:, j] += np.bincount(col, weights=g, minlength=nblocks)
    cnt.array[:] = np.bincount(qdofs.ravel(), minlength=nblocks)
    for vec in (acc, cnt):  # the ghosts' partial sums to their owners, then back
        vec.scatter_reverse(la.InsertMode.add)
        vec.scatter_forward()
    out = fem.Function(Q, name=name)
    np.divide(a, np.maximum(cnt.array, 1.0)[:, None], out=out.x.array.reshape(nblocks, bs))
    return out


def _check_time(t: float) -> None:
    if not (0.0 <= float(t) <= 1.0):
        raise ValueError(f"time t must lie in [0, 1], got {t!r}")


def gradient(phi: fem.Function, name: str = "flux") -> fem.Function:
    """``∇φ`` of a Lagrange function of degree ``k`` in DG_{k-1} (vector); exact. Collective.

    Ghost values are up to date, so cell-wise readers (transport) may use ghost cells.
    """
    msh = phi.function_space.mesh
    k = int(phi.function_space.ufl_element().embedded_superdegree)
    W = fem.functionspace(msh, ("DG", k - 1, (msh.geometry.dim,)))
    F = fem.Function(W, name=name)
    F.interpolate(fem.Expression(ufl.grad(phi), W.element.interpolation_points))
    F.x.scatter_forward()
    return F


def gradient_matrix(V: fem.FunctionSpace) -> tuple[Any, fem.FunctionSpace]:
    """The map ``φ ↦ ∇φ`` from Lagrange degree ``k`` into DG_{k-1} (vector) as a sparse matrix.

    The same exact interpolation as :func:`gradient`, assembled once: row ``d * j + c`` is
    component ``c`` at the rank's owned DG dof ``j``, column ``i`` is the local dof ``i`` of
    ``V`` (ghosts included), so ``G @ phi.x.array`` gives the owned flux values of a potential
    with up-to-date ghosts. For many potentials on one mesh (sweeps, reduced bases) this is far
    cheaper than re-running the interpolation kernel. Not collective.

    Returns:
        ``(G, W)``: a ``scipy.sparse.csr_matrix`` and the DG_{k-1} vector space ``W``.
    """
    from scipy.sparse import csr_matrix

    msh = V.mesh
    d = msh.geometry.dim
    k = int(V.ufl_element().embedded_superdegree)
    W = fem.functionspace(msh, ("DG", k - 1, (d,)))
    ncells = msh.topology.index_map(msh.topology.dim).size_local
    cells = np.arange(ncells, dtype=np.int32)
    expr = fem.Expression(ufl.grad(ufl.TrialFunction(V)), W.element.interpolation_points)
    vals = expr.eval(msh, cells).reshape(ncells, -1, d, V.dofmap.list.shape[1])
    wdofs = W.dofmap.list[:ncells]  # (cell, point) -> block
    rows = np.broadcast_to(
        wdofs[:, :, None, None] * d + np.arange(d)[None, None, :, None], vals.shape
    )
    cols = np.broadcast_to(V.dofmap.list[:ncells][:, None, None, :], vals.shape)
    nw = W.dofmap.index_map.size_local
    nv = V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts
    G = csr_matrix(
        (vals.ravel(), (rows.ravel().astype(np.int64), cols.ravel())), shape=(nw * d, nv)
    )
    G.sum_duplicates()
    return G, W


def vertex_gradient(
    phi: fem.Function, space: fem.FunctionSpace | None = None, name: str = "flux"
) -> fem.Function:
    r"""``∇φ`` at each vertex, averaged over the cells around it, as a P1 vector function.

    The vertex average of :func:`gradient` (:func:`to_vertex_function`
    of the DG_{k-1} flux: each cell's gradient at the vertex, summed over the owned cells
    around it and divided by their number), computed directly: on an affine simplex
    :math:`\nabla\varphi = J^{-T} \hat\nabla \varphi` with the reference gradients of the
    basis at the reference vertices (one per cell for P1, where it is constant), no DG space,
    no interpolation kernel. Meshes that are not affine simplices of full dimension take the
    DG route. ``space`` is the mesh's P1 vector space, when the caller has it. Collective.
    """
    msh = phi.function_space.mesh
    tdim, gdim = msh.topology.dim, msh.geometry.dim
    Q = space if space is not None else fem.functionspace(msh, ("Lagrange", 1, (gdim,)))
    simplex = msh.topology.cell_type in (dmesh.CellType.triangle, dmesh.CellType.tetrahedron)
    if not (simplex and tdim == gdim and msh.geometry.cmaps[0].degree == 1):
        return to_vertex_function(gradient(phi, name), name, Q)
    element = phi.function_space.ufl_element().basix_element
    # reference gradients of the basis at the reference vertices: D[v, r, j] = ∂_r N_j(ξ_v)
    D = element.tabulate(1, basix.geometry(element.cell_type))[1:, :, :, 0].transpose(1, 0, 2)
    nown = msh.topology.index_map(tdim).size_local
    # whole columns, one coordinate at a time: gathering (cells, vertices, 3) blocks is several
    # times slower (at 2.1M cells 0.5 s against 0.1 s)
    X = [np.ascontiguousarray(msh.geometry.x[:, d]) for d in range(gdim)]
    # contiguous index columns, each vertex's coordinates gathered once
    geo = [np.ascontiguousarray(c) for c in msh.geometry.dofmaps[0][:nown].T[: tdim + 1]]
    x0 = [X[d][geo[0]] for d in range(gdim)]
    A = [[X[d][geo[r + 1]] - x0[d] for d in range(gdim)] for r in range(tdim)]
    del x0
    u, dofs = phi.x.array, phi.function_space.dofmap.list[:nown]  # dofs in reference order
    if element.degree == 1:  # the gradient is constant on a cell: φ_{r+1} − φ_0 (D's entries)
        u0 = u[np.ascontiguousarray(dofs[:, 0])]
        ghat = [[u[np.ascontiguousarray(dofs[:, r + 1])] - u0 for r in range(tdim)]]
    else:  # at each vertex; einsum, not BLAS (slow when threaded on a busy machine)
        values = u[dofs]
        ghat = [[np.einsum("cj,j->c", values, D[v, r]) for r in range(tdim)]
                for v in range(tdim + 1)]  # fmt: skip
    grads = [_solve_transposed(A, g) for g in ghat]  # per vertex position: gdim columns
    del A, ghat
    return _average_at_vertices(Q, name, lambda v: grads[0 if len(grads) == 1 else v])


def _solve_transposed(A: list[list[np.ndarray]], ghat: list[np.ndarray]) -> list[np.ndarray]:
    """``g`` per cell with ``Σ_d A[r][d] g[d] = ĝ[r]`` (``A = Jᵀ``, square).

    Columns in, columns out; closed form for 2 x 2, a batched solve otherwise.
    """
    if len(A) == 2:
        (a, b), (c, d) = A
        det = a * d - b * c
        return [(d * ghat[0] - b * ghat[1]) / det, (a * ghat[1] - c * ghat[0]) / det]
    M = np.stack([np.stack(row, axis=-1) for row in A], axis=1)  # (cells, r, d)
    g = np.linalg.solve(M, np.stack(ghat, axis=-1)[:, :, None])[:, :, 0]
    return [np.ascontiguousarray(g[:, d]) for d in range(g.shape[1])]


def vertex_vector_space(V: fem.FunctionSpace) -> fem.FunctionSpace:
    """The P1 vector space of ``V``'s mesh, on ``V``'s own dofmap when ``V`` is scalar P1.

    DOLFINx blocks the scalar dofmap to build a vector one, so
    ``fem.functionspace(msh, ("Lagrange", 1, (gdim,)))`` has ``V``'s dof list and index map
    with block size ``gdim``; this takes them from ``V`` instead of building them again (0.1 s
    at 1M vertices; tests/test_vertex_flux.py compares the two). Any other ``V``: the usual
    ``fem.functionspace``. Not collective when reusing (collective otherwise).
    """
    from dolfinx import cpp

    msh = V.mesh
    gdim = msh.geometry.dim
    el = V.ufl_element()
    dtype = msh.geometry.x.dtype
    scalar_p1 = el.embedded_superdegree == 1 and V.dofmap.bs == 1 and not el.reference_value_shape
    if el.discontinuous or not scalar_p1:
        return fem.functionspace(msh, ("Lagrange", 1, (gdim,)))
    ufl_e = basix.ufl.element("Lagrange", msh.basix_cell(), 1, shape=(gdim,), dtype=dtype)
    element = fem.finiteelement(msh.topology.cell_type, ufl_e, dtype)
    layout = cpp.fem.create_element_dof_layout(element._cpp_object, [])
    dofs = cpp.graph.AdjacencyList_int32(np.ascontiguousarray(V.dofmap.list))
    dofmap = cpp.fem.DofMap(layout, V.dofmap.index_map, gdim, dofs, gdim)
    make = cpp.fem.FunctionSpace_float64 if dtype == np.float64 else cpp.fem.FunctionSpace_float32
    return fem.FunctionSpace(msh, ufl_e, make(msh._cpp_object, element._cpp_object, dofmap))
