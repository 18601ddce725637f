r"""Geometric multigrid for P1 on the structured unit square: the nested grid hierarchy.

DOLFINx's ``create_unit_square(n, n, DiagonalType.right)`` cuts every square of the
:math:`n \times n` grid along its bottom-left to top-right diagonal. The grid of
:math:`n/2 \times n/2` squares cut the same way is *nested* in it: each coarse triangle is the
union of four fine ones (the uniform red refinement of a right-diagonal triangle is again
right-diagonal). So the coarse P1 space is a subspace of the fine one and the prolongation is
exact interpolation, arithmetic on grid indices: a fine vertex :math:`p = (i, j)` with odd
coordinates :math:`O` is the midpoint of the coarse edge from :math:`p - e_O` to
:math:`p + e_O` (horizontal, vertical or the diagonal), and a vertex with no odd coordinate is a
coarse vertex. The coarse operators are Galerkin products :math:`P^T A P`, which for nested P1
spaces are the stiffness matrices of the coarse grids themselves, so no coarse mesh is built.

Ownership follows the fine mesh's partition: a coarse vertex belongs to the rank that owns it on
the level below, so restriction and prolongation communicate only along the partition's
boundary. Coarse vertices are numbered rank by rank; the parents' natural indices
:math:`i (m + 1) + j` are turned into that numbering by a memory-scalable PETSc ``AO``.

:func:`grid_hierarchy` checks the mesh before it builds anything: every vertex on the grid,
every cell a right-diagonal half square. Any other mesh (a file, a gmsh domain, a refined or
perturbed grid) gets ``None`` and the caller keeps algebraic multigrid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, PETSc, basix, dolfinx, fem
from beckmann.mesh import p1_dof_nodes

__all__ = [
    "COARSEST_MAX",
    "COARSEST_MIN",
    "GridHierarchy",
    "grid_cells_per_side",
    "grid_hierarchy",
    "levels",
    "stencil_matrix",
]

#: The coarsening stops at a grid of at most this many squares per side (or earlier, at an odd
#: one); the coarsest grid is solved directly.
COARSEST_MIN = 16
#: A hierarchy whose coarsest grid has more squares per side than this (``n`` with a large odd
#: factor, e.g. 1000 = 8 x 125 is fine, 1022 = 2 x 511 is not) is not used: its direct coarse
#: solve would cost more than AMG.
COARSEST_MAX = 128

IntArray = npt.NDArray[np.int64]


def grid_cells_per_side(V: fem.FunctionSpace) -> int | None:
    """``n`` if ``V`` is P1 on DOLFINx's right-diagonal ``n x n`` unit square, else ``None``.

    Collective. Checked, not assumed: the vertex count is :math:`(n+1)^2`, the cell count
    :math:`2n^2`, every vertex lies on the grid (to 1e-9 of a square) and every locally owned
    cell is a half square containing its bottom-left to top-right diagonal.
    """
    found = _grid_nodes(V)
    return None if found is None else found[0]


def _grid_nodes(V: fem.FunctionSpace) -> tuple[int, IntArray] | None:
    """``n`` and the grid indices ``(i, j)`` of every local geometry node, or ``None``.

    The check of :func:`grid_cells_per_side`; collective.
    """
    msh = V.mesh
    comm = msh.comm
    el, cmap = V.element.basix_element, msh.geometry.cmaps[0]
    if (msh.topology.dim != 2 or msh.geometry.dim != 2 or V.dofmap.index_map_bs != 1
            or el.degree != 1 or el.discontinuous or cmap.degree != 1):  # fmt: skip
        return None
    nv = msh.topology.index_map(0).size_global
    n = math.isqrt(nv) - 1
    ncells = msh.topology.index_map(2)
    ok = n >= 1 and (n + 1) ** 2 == nv and ncells.size_global == 2 * n * n
    if ok:
        x = msh.geometry.x[:, :2] * n
        ij = np.rint(x)
        ok = bool(np.all(np.abs(x - ij) < 1e-9) and ij.min() >= 0 and ij.max() <= n)
    if ok:
        g = msh.geometry.dofmaps[0][: ncells.size_local]
        ok = _right_half_squares(ij[:, 0].astype(np.int32)[g], ij[:, 1].astype(np.int32)[g])
    ok = bool(comm.allreduce(ok, op=MPI.LAND))
    return (n, ij.astype(np.int64)) if ok else None


def _right_half_squares(i: npt.NDArray[np.int32], j: npt.NDArray[np.int32]) -> bool:
    """Whether every row of the (cells, 3) grid indices ``i``, ``j`` is a right half square.

    That is: the corner offsets ``2 di + dj`` from the cell's lowest corner are {0, 2, 3} or
    {0, 1, 3}. Column by column (numpy's reductions over a length-3 axis are ~10x slower).
    """
    i0 = np.minimum(np.minimum(i[:, 0], i[:, 1]), i[:, 2])
    j0 = np.minimum(np.minimum(j[:, 0], j[:, 1]), j[:, 2])
    codes = []
    for k in range(3):
        di, dj = i[:, k] - i0, j[:, k] - j0
        if np.any((di > 1) | (dj > 1)):
            return False
        codes.append(2 * di + dj)
    lo = np.minimum(np.minimum(codes[0], codes[1]), codes[2])
    hi = np.maximum(np.maximum(codes[0], codes[1]), codes[2])
    total = codes[0] + codes[1] + codes[2]
    return bool(np.all(lo == 0) and np.all(hi == 3) and np.all((total == 4) | (total == 5)))


def levels(n: int) -> list[int]:
    """Squares per side of each grid, fine to coarse: ``n``, ``n/2``, ... (empty: no hierarchy).

    Halving stops at an odd ``m`` or at ``m <= COARSEST_MIN``; a hierarchy with no coarse
    grid or whose coarsest grid exceeds :data:`COARSEST_MAX` is empty.
    """
    out = [n]
    while out[-1] % 2 == 0 and out[-1] > COARSEST_MIN:
        out.append(out[-1] // 2)
    return out if len(out) > 1 and out[-1] <= COARSEST_MAX else []


@dataclass
class GridHierarchy:
    """The nested grids of a P1 unit square, coarsest first.

    Attributes:
        sizes: Squares per side, fine to coarse (as :func:`levels`).
        prolongations: ``P[l]`` maps level ``l`` to level ``l + 1``; level ``len(P)`` is the
            space's own (DOLFINx's dof numbering), as ``PCMGSetInterpolation(l + 1, P[l])``
            wants them.
        vertices: Per level, the grid indices ``(i, j)`` of the vertices this rank owns, in
            their numbering order.
    """

    sizes: list[int]
    prolongations: list[PETSc.Mat]
    vertices: list[IntArray]
    #: Grid indices ``(i, j)`` of every local dof of the finest P1 level, owned then ghost
    #: (DOLFINx's local numbering); what :func:`stencil_matrix` needs.
    local_vertices: IntArray | None = None
    #: Degree of the finest level: above the P1 grids, a P_k space (k > 1) on the finest mesh,
    #: reached by P1 -> P_k interpolation (p-multigrid); its vertices are not listed.
    degree: int = 1

    def destroy(self) -> None:
        """Free the prolongations."""
        for P in self.prolongations:
            P.destroy()


def grid_hierarchy(V: fem.FunctionSpace) -> GridHierarchy | None:
    """The grid hierarchy of ``V``; ``None``: no hierarchy. Collective.

    ``None`` when ``V`` is not P1 on the right-diagonal unit square (:func:`grid_cells_per_side`)
    or ``n`` has no usable hierarchy (:func:`levels`), the same on every rank. For scalar P_k,
    k > 1, the P1 hierarchy of its mesh gets one more level: ``V`` itself, with DOLFINx's
    interpolation matrix from P1 (the P1 space is a subspace of P_k on the same mesh).
    """
    el = V.element.basix_element
    if (el.degree > 1 and el.family == basix.ElementFamily.P and not el.discontinuous
            and V.dofmap.index_map_bs == 1):  # fmt: skip
        V1 = fem.functionspace(V.mesh, ("Lagrange", 1))
        hierarchy = grid_hierarchy(V1)
        if hierarchy is not None:
            interp = dolfinx.fem.petsc.interpolation_matrix(V1, V)
            interp.assemble()
            hierarchy.prolongations.append(interp)
            hierarchy.degree = el.degree
        return hierarchy
    found = _grid_nodes(V)
    sizes = levels(found[0]) if found is not None else []
    if found is None or not sizes:
        return None
    comm = V.mesh.comm
    nloc = V.dofmap.index_map.size_local
    # the dofs' grid indices are their vertices' (P1 on the affine mesh _grid_nodes checked)
    local = found[1][p1_dof_nodes(V)]
    ij = local[:nloc]
    prolongations, vertices = [], [ij]
    for mc in sizes[1:]:
        P, ij = _prolongation(comm, ij, mc)
        prolongations.append(P)
        vertices.append(ij)
    return GridHierarchy(sizes, prolongations[::-1], vertices[::-1], local)


def stencil_matrix(V: fem.FunctionSpace, local: IntArray, n: int) -> PETSc.Mat:
    r"""The P1 stiffness matrix of the right-diagonal ``n x n`` unit square, from its stencil.

    No quadrature: on this grid :math:`A_{ij} = -\tfrac12 \sum \cot` of the angles opposite
    the edge :math:`ij` in its (one or two) triangles. A horizontal or vertical edge is opposite
    a 45° angle in each triangle (−½ per triangle: −1 inside, −½ on the boundary), a diagonal
    edge is opposite right angles (0, so it is left out), and the rows sum to zero. The matrix
    is the 5-point Laplacian with Neumann boundary rows (4 inside, 2 on an edge, 1 at a corner)
    and does not depend on ``n``: what DOLFINx assembles, to round-off, without the diagonal
    edges' zeros (5 entries per row instead of 7: cheaper mat-vecs).

    Args:
        V: P1 on the mesh (its index map numbers the rows and columns as DOLFINx's matrix).
        local: Grid indices ``(i, j)`` of every local dof, owned then ghost
            (:attr:`GridHierarchy.local_vertices`).
        n: Squares per side.

    Collective. The neighbours' numbers come from a memory-scalable PETSc ``AO`` from the
    natural index :math:`i (n + 1) + j`: on a partition's boundary a neighbour may belong to a
    cell this rank does not hold.
    """
    im = V.dofmap.index_map
    nloc = im.size_local
    comm = V.mesh.comm
    i, j = local[:nloc, 0], local[:nloc, 1]
    own = np.arange(im.local_range[0], im.local_range[1], dtype=PETSc.IntType)
    ao = PETSc.AO().createMemoryScalable((i * (n + 1) + j).astype(PETSc.IntType), own, comm=comm)
    # entry k of every row as row k of (5, rows) arrays (contiguous, fast); an absent
    # neighbour (outside the square) has column -1
    cols = np.full((5, nloc), -1, dtype=PETSc.IntType)
    vals = np.zeros((5, nloc))
    cols[0] = own
    count = np.ones(nloc, dtype=PETSc.IntType)
    # (di, dj), and whether the edge lies on the boundary: horizontal edges on y = 0 or 1,
    # vertical ones on x = 0 or 1
    for k, (di, dj) in enumerate(((-1, 0), (1, 0), (0, -1), (0, 1)), start=1):
        ni, nj = i + di, j + dj
        inside = (ni >= 0) & (ni <= n) & (nj >= 0) & (nj <= n)
        on_boundary = ((j == 0) | (j == n)) if dj == 0 else ((i == 0) | (i == n))
        # only existing vertices: a memory-scalable AO garbles -1 queries in parallel
        cols[k, inside] = ao.app2petsc((ni[inside] * (n + 1) + nj[inside]).astype(PETSc.IntType))
        vals[k] = np.where(inside, np.where(on_boundary, -0.5, -1.0), 0.0)
        vals[0] -= vals[k]
        count += inside
    ao.destroy()
    _sort_rows(cols, vals)  # the absent (-1) first, then ascending columns
    keep = np.ascontiguousarray(cols.T).ravel()
    mask = keep >= 0
    indptr = np.zeros(nloc + 1, dtype=PETSc.IntType)
    np.cumsum(count, out=indptr[1:])
    csr = (indptr, keep[mask], np.ascontiguousarray(vals.T).ravel()[mask])
    size = ((nloc, im.size_global), (nloc, im.size_global))
    if comm.size == 1:  # the arrays become the matrix's own (sorted rows, no insertion)
        A = PETSc.Mat().createAIJWithArrays(size, csr, comm=comm)
    else:
        A = PETSc.Mat().createAIJ(size, comm=comm, csr=csr)
    A.assemble()
    return A


def _sort_rows(cols: npt.NDArray[np.int32], vals: npt.NDArray[np.float64]) -> None:
    """Sort the 5 entries of every row by column, in place; row ``k`` of ``(5, rows)`` arrays.

    An optimal 9-comparator sorting network, each comparator on whole rows (vectorised): numpy's
    ``sort`` along a length-5 axis is several times slower.
    """
    for a, b in ((0, 1), (3, 4), (2, 4), (2, 3), (0, 3), (0, 2), (1, 4), (1, 3), (1, 2)):
        swap = cols[a] > cols[b]
        for arr in (cols, vals):
            lo = np.where(swap, arr[b], arr[a])
            arr[b] = np.where(swap, arr[a], arr[b])
            arr[a] = lo


def _prolongation(comm: MPI.Comm, ij: IntArray, mc: int) -> tuple[PETSc.Mat, IntArray]:
    """P from the ``mc``-grid to the ``2 mc``-grid whose owned vertices are ``ij``.

    ``ij[k]`` is the grid index of the ``k``-th owned fine vertex (numbered rank by rank, as
    PETSc's layout of ``len(ij)`` local rows is). Returns ``P`` and the coarse grid's owned
    vertices in their numbering order.
    """
    i, j = ij[:, 0].astype(PETSc.IntType), ij[:, 1].astype(PETSc.IntType)  # columns: fast
    oi, oj = i & 1, j & 1
    coarse = (oi | oj) == 0
    ci, cj = i[coarse] >> 1, j[coarse] >> 1
    nc = len(ci)
    cstart = int(comm.exscan(nc) or 0)
    ao = PETSc.AO().createMemoryScalable(
        ci * (mc + 1) + cj, np.arange(cstart, cstart + nc, dtype=PETSc.IntType), comm=comm
    )
    # the parents p -/+ e_O, halved (the same vertex twice for a coarse vertex: one entry 1)
    lo = ((i - oi) >> 1) * (mc + 1) + ((j - oj) >> 1)
    hi = ((i + oi) >> 1) * (mc + 1) + ((j + oj) >> 1)
    indptr = np.zeros(len(i) + 1, dtype=PETSc.IntType)
    np.cumsum(2 - coarse, out=indptr[1:])
    cols = np.empty(int(indptr[-1]), dtype=PETSc.IntType)
    vals = np.full(int(indptr[-1]), 0.5)
    first, second = indptr[:-1], indptr[:-1][~coarse] + 1
    cols[first] = lo
    vals[first[coarse]] = 1.0
    cols[second] = hi[~coarse]
    cols = ao.app2petsc(cols)
    ao.destroy()
    P = PETSc.Mat().createAIJ(((len(i), PETSc.DECIDE), (nc, PETSc.DECIDE)), comm=comm)
    P.setPreallocationNNZ((2, 2))
    P.setValuesCSR(indptr, cols, vals)
    P.assemble()
    return P, np.column_stack([ci, cj]).astype(np.int64)
