r"""Point location on an affine simplex mesh, and finite-element fields gathered per cell.

Two users locate points:

* :class:`PointLocator` (``probe``, ``Solution.evaluate``, the sweep probe): points known on
  every rank, each gets exactly one owning rank and cell;
* :class:`MeshCells` (transport): rank-local points that remember their cell, walked to a
  neighbour when they leave it, searched in a bounding-box tree only when lost.

**Which cell holds a point.** DOLFINx's collision test counts every cell within about
:math:`10^{-6}` of a point as colliding, so a point near a facet or a vertex can collide with
cells that do not contain it. Both locators therefore rank the colliding cells by the same rule
(:func:`pick_cells`): first the cells that really contain the point, with every barycentric
coordinate :math:`\lambda_i \ge -` :data:`INSIDE_TOL` (barycentric coordinates are already
relative to the cell's size), then -- among those, or among all colliding cells when none
contains it -- the cell whose midpoint has the smallest projection on a fixed generic direction.
The rule depends on geometry only, so it survives repartitioning and checkpoint reloads: the same
point gets the same cell on any number of ranks.

**Fields per cell** (:func:`cell_values`): the nodal values of a function interpolated into
DG\ :sub:`k`, one row per owned or ghost cell, for batched evaluation with basix tabulations or
the Bernstein form of :mod:`beckmann.transport`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, dmesh, fem, geometry
from beckmann._mpi import format_point, global_bbox

__all__ = [
    "INSIDE_TOL",
    "TIE_DIRECTION",
    "MeshCells",
    "PointLocator",
    "cell_values",
    "facet_neighbors",
    "pick_cells",
    "select_rank",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
CellArray = npt.NDArray[np.int32]

#: A point is inside a cell when all its barycentric coordinates are ``>= -INSIDE_TOL``.
INSIDE_TOL = 1e-10

#: The generic direction of the geometric tie-break between cells (midpoint projections).
TIE_DIRECTION = np.array([1.0, np.sqrt(2.0) / 10.0, np.sqrt(3.0) / 100.0])


def _pad3(x: FloatArray) -> FloatArray:
    out = np.zeros((x.shape[0], 3))
    out[:, : x.shape[1]] = x
    return out


def _pair_min_barycentric(vertices: FloatArray, x: FloatArray) -> FloatArray:
    """Smallest barycentric coordinate of each point ``x[i]`` in the simplex ``vertices[i]``."""
    if x.shape[0] == 0:
        return np.zeros(0)
    J = np.transpose(vertices[:, 1:] - vertices[:, :1], (0, 2, 1))
    X = np.linalg.solve(J, (x - vertices[:, 0])[:, :, None])[:, :, 0]
    return np.minimum(1.0 - X.sum(axis=1), X.min(axis=1))


def pick_cells(
    n: int,
    point_of: IntArray,
    cand: CellArray,
    lam_min: FloatArray,
    key: FloatArray,
) -> tuple[CellArray, FloatArray, FloatArray]:
    """Choose one cell per point among candidate ``(point, cell)`` pairs; local.

    Args:
        n: Number of points.
        point_of: The point of each candidate pair.
        cand: The candidate cell of each pair.
        lam_min: The point's smallest barycentric coordinate in that cell.
        key: The cell's tie-break key (midpoint projection on :data:`TIE_DIRECTION`).

    Returns:
        ``(cells, tier, key)`` per point: the chosen cell (-1 if none), its tier (0 when it
        contains the point, 1 when it only collides, ``inf`` when there is no candidate) and its
        key (``inf`` when none). Smaller ``(tier, key)`` wins, also across ranks.
    """
    cells = np.full(n, -1, dtype=np.int32)
    tier = np.full(n, np.inf)
    best = np.full(n, np.inf)
    if cand.size == 0:
        return cells, tier, best
    t = np.where(lam_min >= -INSIDE_TOL, 0.0, 1.0)
    order = np.lexsort((key, t, point_of))  # by point, then tier, then key: first one wins
    p = point_of[order]
    first = order[np.r_[0, np.flatnonzero(np.diff(p)) + 1]]
    cells[point_of[first]] = cand[first]
    tier[point_of[first]] = t[first]
    best[point_of[first]] = key[first]
    return cells, tier, best


def select_rank(
    comm: MPI.Comm, tier: FloatArray, key: FloatArray
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Which rank holds each point, by the smallest ``(tier, key)`` over all ranks; collective.

    Returns:
        ``(mine, found)``: this rank is the point's owner; some rank has a cell for the point.
    """
    gtier = np.empty_like(tier)
    comm.Allreduce(np.ascontiguousarray(tier), gtier, op=MPI.MIN)
    k = np.where(tier == gtier, key, np.inf)
    gkey = np.empty_like(k)
    comm.Allreduce(k, gkey, op=MPI.MIN)
    found = np.isfinite(gtier)
    return found & (tier == gtier) & (k == gkey), found


class MeshCells:
    """Affine maps, volumes and facet neighbours of the rank's owned and ghost cells.

    Args:
        msh: An affine simplex mesh (geometric and topological dimension equal).
    """

    def __init__(self, msh: Any) -> None:
        tdim = msh.topology.dim
        d = msh.geometry.dim
        if d != tdim:
            raise ValueError(f"transport needs a mesh with gdim == tdim, got {d} and {tdim}")
        nodes = np.asarray(msh.geometry.dofmaps[0])
        if nodes.shape[1] != tdim + 1:
            raise ValueError("transport needs an affine simplex mesh (linear geometry)")
        imap = msh.topology.index_map(tdim)
        self.msh = msh
        self.comm = msh.comm
        self.d = d
        self.n_owned = int(imap.size_local)
        self.n_local = int(imap.size_local + imap.num_ghosts)
        self.ghost_owner = np.asarray(imap.owners, dtype=np.int64)
        nodes = nodes[: self.n_local]
        x = msh.geometry.x[:, :d]
        v = x[nodes]  # (cell, vertex, coord)
        self.vertices = v
        self.x0 = np.ascontiguousarray(v[:, 0])
        J = np.transpose(v[:, 1:] - v[:, :1], (0, 2, 1))  # J[:, :, j] = v_{j+1} - v_0
        self.K = np.linalg.inv(J) if self.n_local else np.zeros((0, d, d))
        self.volume = np.abs(np.linalg.det(J)) / math.factorial(d) if self.n_local else np.zeros(0)
        self.key = v.mean(axis=1) @ TIE_DIRECTION[:d] if self.n_local else np.zeros(0)
        self.neighbors = facet_neighbors(nodes)
        self.original = np.asarray(msh.topology.original_cell_index[: self.n_owned], dtype=np.int64)
        self.tree_local = geometry.bb_tree(
            msh, tdim, entities=np.arange(self.n_local, dtype=np.int32)
        )
        owned = np.arange(self.n_owned, dtype=np.int32)
        self.tree_owned = geometry.bb_tree(msh, tdim, entities=owned)
        self.midpoint_tree = geometry.create_midpoint_tree(msh, tdim, owned)
        self.walk_steps = 0
        self.tree_searches = 0

    def barycentric(self, x: FloatArray, cells: CellArray) -> FloatArray:
        """Barycentric coordinates ``(n, d+1)`` of points ``x`` in ``cells``."""
        X = np.einsum("nij,nj->ni", self.K[cells], x - self.x0[cells])
        return np.concatenate([1.0 - X.sum(axis=1, keepdims=True), X], axis=1)

    def search(
        self, x: FloatArray, owned: bool = False
    ) -> tuple[CellArray, FloatArray, FloatArray]:
        """Tree search with the containment-first rule (:func:`pick_cells`); local.

        Args:
            x: Points ``(n, d)``.
            owned: Search owned cells only (else owned and ghost cells).

        Returns:
            ``(cells, tier, key)`` as :func:`pick_cells`.
        """
        n = x.shape[0]
        if n == 0:
            return pick_cells(0, np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0),
                              np.zeros(0))  # fmt: skip
        self.tree_searches += n
        x3 = _pad3(x)
        tree = self.tree_owned if owned else self.tree_local
        coll = geometry.compute_colliding_cells(
            self.msh, geometry.compute_collisions_points(tree, x3), x3
        )
        cand = np.asarray(coll.array, dtype=np.int32)
        point_of = np.repeat(np.arange(n), np.diff(np.asarray(coll.offsets)))
        lam = self.barycentric(x[point_of], cand) if cand.size else np.zeros((0, self.d + 1))
        return pick_cells(n, point_of, cand, lam.min(axis=1), self.key[cand])

    def find_local(
        self, x: FloatArray, guess: CellArray, max_walk: int = 8
    ) -> tuple[CellArray, FloatArray]:
        """Cells (owned or ghost, ``-1`` if none) containing ``x``, starting from ``guess``.

        A point still inside its guess stays there; one that left walks to the neighbour across
        the most violated facet (at most ``max_walk`` times); the rest are searched in the tree
        (:meth:`search`). Local.

        Returns:
            ``(cells, lam)``: the cells and the barycentric coordinates of the points in them.
        """
        n = x.shape[0]
        cells = np.array(guess, dtype=np.int32, copy=True)
        X = np.zeros((n, self.d + 1))
        todo = np.flatnonzero(cells >= 0)
        search = [np.flatnonzero(cells < 0)]
        for _ in range(max_walk + 1):
            if todo.size == 0:
                break
            lam = self.barycentric(x[todo], cells[todo])
            worst = lam.argmin(axis=1)
            inside = lam[np.arange(todo.size), worst] >= -INSIDE_TOL
            X[todo[inside]] = lam[inside]
            todo, worst = todo[~inside], worst[~inside]
            if todo.size == 0:
                break
            nxt = self.neighbors[cells[todo], worst]
            self.walk_steps += todo.size
            stuck = nxt < 0
            search.append(todo[stuck])
            todo = todo[~stuck]
            cells[todo] = nxt[~stuck]
        search.append(todo)
        lost = np.concatenate(search).astype(np.int64)
        if lost.size:
            found, _, _ = self.search(x[lost])
            cells[lost] = found
            ok = found >= 0
            if ok.any():
                X[lost[ok]] = self.barycentric(x[lost[ok]], found[ok])
        return cells, X

    def closest_point(self, x: FloatArray) -> tuple[FloatArray, FloatArray, CellArray]:
        """For each point, the distance to, closest point of and index of the closest owned cell.

        Local; ``(inf, 0, -1)`` on a rank without cells.
        """
        n = x.shape[0]
        if n == 0 or self.n_owned == 0:
            return np.full(n, np.inf), np.zeros((n, self.d)), np.full(n, -1, dtype=np.int32)
        x3 = _pad3(x)
        cells = geometry.compute_closest_entity(
            self.tree_owned, self.midpoint_tree, self.msh, x3
        ).astype(np.int32)
        dist = np.full(n, np.inf)
        close = np.zeros((n, self.d))
        for i in range(n):
            c = cells[i]
            if c < 0:
                continue
            verts = np.zeros((self.d + 1, 3))
            verts[:, : self.d] = self.vertices[c]
            delta = geometry.compute_distance_gjk(verts, x3[i])
            q = x[i] + delta[: self.d]
            # nudge onto the closed cell so the point locates: clip barycentric coordinates
            lam = np.clip(self.barycentric(q[None, :], np.array([c]))[0], 0.0, None)
            lam /= lam.sum()
            close[i] = lam @ self.vertices[c]
            dist[i] = float(np.linalg.norm(delta))
        return dist, close, cells


def facet_neighbors(nodes: npt.NDArray[np.int32]) -> CellArray:
    """``nb[c, i]``: the cell across the facet opposite local vertex ``i`` of ``c``, or -1."""
    n, nv = nodes.shape
    nb = np.full((n, nv), -1, dtype=np.int32)
    if n == 0:
        return nb
    keys, owner, local = [], [], []
    for i in range(nv):
        keys.append(np.sort(np.delete(nodes, i, axis=1), axis=1))
        owner.append(np.arange(n))
        local.append(np.full(n, i))
    k = np.concatenate(keys)
    c = np.concatenate(owner)
    li = np.concatenate(local)
    order = np.lexsort(k.T[::-1])
    k, c, li = k[order], c[order], li[order]
    same = np.all(k[1:] == k[:-1], axis=1)
    a = np.flatnonzero(same)
    nb[c[a], li[a]] = c[a + 1]
    nb[c[a + 1], li[a + 1]] = c[a]
    return nb


class PointLocator:
    """Finds, for points known on every rank, one owning rank and cell each.

    The cell is chosen by :func:`pick_cells` (containing cells first, then the geometric
    tie-break) over all ranks, so a point on a facet between cells, where the flux jumps, gets
    the same cell whatever the partition. The bounding-box tree over the rank's owned cells is
    built once and reused.

    Args:
        msh: A linear simplex mesh (every mesh of :func:`beckmann.mesh.create_mesh`).
    """

    def __init__(self, msh: dmesh.Mesh) -> None:
        self.msh = msh
        tdim = msh.topology.dim
        d = msh.geometry.dim
        ncells = msh.topology.index_map(tdim).size_local
        owned = np.arange(ncells, dtype=np.int32)
        self.tree = geometry.bb_tree(msh, tdim, entities=owned)
        mid = dmesh.compute_midpoints(msh, tdim, owned)
        self.key = mid @ TIE_DIRECTION
        nodes = np.asarray(msh.geometry.dofmaps[0])[:ncells]
        self.vertices = msh.geometry.x[:, :d][nodes]
        self.simplex = nodes.shape[1] == tdim + 1 and d == tdim

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
        x = _pad3(p)
        coll = geometry.compute_colliding_cells(
            msh, geometry.compute_collisions_points(self.tree, x), x
        )
        cand = np.asarray(coll.array, dtype=np.int32)
        point_of = np.repeat(np.arange(n), np.diff(np.asarray(coll.offsets)))
        if self.simplex:
            lam_min = _pair_min_barycentric(self.vertices[cand], p[point_of])
        else:  # pragma: no cover - every beckmann mesh is an affine simplex mesh
            lam_min = np.zeros(cand.size)
        cells, tier, key = pick_cells(n, point_of, cand, lam_min, self.key[cand])
        mine, found = select_rank(comm, tier, key)
        outside = np.flatnonzero(~found)
        if outside.size:
            lo, hi = global_bbox(msh.geometry.x[:, :d], comm)
            raise ValueError(
                f"{outside.size} of {n} points lie outside the domain, the first at "
                f"{format_point(p[outside[0]], float(np.max(hi - lo)))} (index {outside[0]})"
            )
        return x, np.where(mine, cells, -1).astype(np.int32), mine


def cell_values(u: fem.Function, degree: int, cells: MeshCells) -> tuple[FloatArray, Any]:
    """Nodal values ``(n_local, ndofs[, bs])`` of ``u`` in DG_degree per cell, and its element.

    ``u`` is interpolated into DG_degree (exact when ``u`` is a polynomial of at most that degree
    on each cell), rows follow the local cell numbering of ``cells`` (owned, then ghost).
    Collective (the interpolation's ghost update).

    Returns:
        ``(values, element)`` with the basix element of the DG space.
    """
    msh = u.function_space.mesh
    shape = u.ufl_shape
    W = fem.functionspace(msh, ("DG", degree, shape) if shape else ("DG", degree))
    w = fem.Function(W)
    w.interpolate(u)
    w.x.scatter_forward()
    if W.element.needs_dof_transformations:  # pragma: no cover - DG Lagrange never does
        raise RuntimeError("DG element with dof transformations is not supported")
    dofs = W.dofmap.list[: cells.n_local]
    bs = W.dofmap.bs
    arr = w.x.array.reshape(-1, bs)[dofs]
    if not shape:
        arr = arr[..., 0]
    return np.ascontiguousarray(arr), W.ufl_element().basix_element
