"""Derivatives of finite-element fields for the estimators, and nodal point clouds; collective."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "cellwise",
    "closer_than",
    "interior_mask",
    "multi_indices",
    "nodal_average",
    "nodal_values",
    "project",
    "recover_derivatives",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: :func:`closer_than` compares at most this many (point, target) pairs, else it asks a k-d tree.
CLOSER_THAN_PAIRS = 4_000_000


def project(expr: Any, W: Any, degree: int) -> Any:
    """L2 projection of a UFL expression into the continuous space ``W``; collective."""
    from beckmann._dolfinx import fem, ufl

    u, v = ufl.TrialFunction(W), ufl.TestFunction(W)
    dx = ufl.dx(metadata={"quadrature_degree": 2 * degree + 2})
    problem = fem.petsc.LinearProblem(
        ufl.inner(u, v) * dx,
        ufl.inner(expr, v) * dx,
        petsc_options_prefix=f"beckmann_holder_project_{id(W)}_",
        petsc_options={
            "ksp_type": "cg",
            "pc_type": "jacobi",
            "ksp_rtol": 1e-13,
            "ksp_atol": 1e-300,
            "ksp_max_it": 2000,
            "ksp_error_if_not_converged": True,
        },
    )
    try:
        uh = problem.solve()
    except Exception as err:  # PETSc errors are not ValueError/RuntimeError
        raise RuntimeError(f"the L2 projection for gradient recovery failed: {err}") from err
    assert isinstance(uh, fem.Function)
    uh.x.scatter_forward()
    for obj in (problem.solver, problem.A, problem.b):
        obj.destroy()
    return uh


def cellwise(expr: Any, msh: Any, degree: int) -> Any:
    """A UFL expression interpolated cell by cell into discontinuous Lagrange ``DG_degree``.

    Exact where ``expr`` is a polynomial of degree ``<= degree`` in each cell, e.g. ``D^j u_h``
    of a ``P_q`` function with ``degree = q − j``: the cellwise exact derivative, which jumps
    across facets. This is the one definition of "the derivative of a discrete field inside a
    cell" that the estimators (through :func:`nodal_average`) and the ReQu training data use.
    Collective only through the mesh (no communication).
    """
    from beckmann._dolfinx import fem

    shape = tuple(expr.ufl_shape)
    W = fem.functionspace(msh, ("DG", int(degree), shape) if shape else ("DG", int(degree)))
    f = fem.Function(W)
    f.interpolate(fem.Expression(expr, W.element.interpolation_points))
    return f


def nodal_average(expr: Any, W: Any) -> Any:
    """Nodal averages of ``expr`` on the continuous Lagrange space ``W``; collective.

    The value at each node is the mean, over the cells containing the node, of ``expr``
    evaluated inside that cell. Patch-local: no linear solve, nothing beyond the cells around a
    node. Exact for an ``expr`` that is continuous and in ``W`` (every cell gives the same
    value); for the cellwise exact derivative of a discrete field it is the classical
    nodal-averaging recovery. The sums run over owned cells and are added across ranks, so the
    result does not depend on the partition (up to the order of a few additions).
    """
    from beckmann._dolfinx import fem, la

    msh = W.mesh
    tdim = msh.topology.dim
    cells = np.arange(msh.topology.index_map(tdim).size_local, dtype=np.int32)
    bs = W.dofmap.index_map_bs
    e = fem.Expression(expr, W.element.interpolation_points)
    vals = np.asarray(e.eval(msh, cells)).reshape(cells.size, -1, bs)
    dofs = W.dofmap.list[cells]
    total = fem.Function(W)
    count = fem.Function(W)
    # bincount adds in the order of the cells, as np.add.at does, several times faster
    idx, flat = dofs.ravel(), vals.reshape(-1, bs)
    tot, cnt = total.x.array.reshape(-1, bs), count.x.array.reshape(-1, bs)
    hits = np.bincount(idx, minlength=tot.shape[0]).astype(np.float64)
    for c in range(bs):
        tot[:, c] += np.bincount(idx, weights=flat[:, c], minlength=tot.shape[0])
        cnt[:, c] += hits
    for f in (total, count):
        f.x.scatter_reverse(la.InsertMode.add)
    n = W.dofmap.index_map.size_local * bs
    out = fem.Function(W)
    out.x.array[:n] = total.x.array[:n] / count.x.array[:n]
    out.x.scatter_forward()
    return out


def recover_derivatives(
    u: Any,
    k: int,
    *,
    msh: Any = None,
    degree: int | None = None,
    exact_order: int | None = None,
    recovery: str = "local",
) -> list[Any]:
    """Continuous Lagrange functions ``[u, Du, …, D^k u]`` of a field, on ``CG_degree``; collective.

    ``recovery="local"`` (the default; docs/holder.md): ``D^j u`` for ``j <= exact_order`` is
    the cellwise exact derivative of the discrete field (UFL ``grad`` applied ``j`` times,
    evaluated inside each cell) averaged at the nodes (:func:`nodal_average`). Beyond, where the
    cellwise derivative of a ``P_q`` field vanishes, the patch-local recovery: the previous
    derivative is averaged at the vertices (continuous ``P_1``), and its cellwise gradient is
    averaged at the nodes again (the Zienkiewicz–Zhu averaging, ``O(h)`` accurate, meaningful on
    scales ``≫ h`` only). No linear solve, nothing non-local. ``recovery="projection"``: the
    former repeated global L2 projection (kept for comparison; it overshoots near corners).

    Args:
        u: A ``fem.Function``, a UFL expression on a mesh, or a callable ``f(x) -> values`` with
            ``x`` of shape ``(d, n)`` (as for ``Function.interpolate``; needs ``msh``).
        k: Highest derivative order, ``>= 0``.
        msh: The mesh, for callables (and UFL expressions whose mesh cannot be found).
        degree: Lagrange degree of the sampling spaces (default: ``u``'s degree, or 2).
        exact_order: Up to which order the cellwise derivatives are used (the polynomial degree
            of ``u`` in a cell; default ``degree``: ``D^j`` of ``∇φ_h`` for ``φ_h ∈ P_q``
            needs ``exact_order = q − 1``).
        recovery: ``"local"`` or ``"projection"``.
    """
    from beckmann._dolfinx import fem, ufl

    if int(k) != k or k < 0:
        raise ValueError(f"derivative order k must be an integer >= 0, got {k!r}")
    if recovery not in ("local", "projection"):
        raise ValueError(f"recovery must be 'local' or 'projection', got {recovery!r}")
    if isinstance(u, fem.Function):
        msh = u.function_space.mesh
        el = u.function_space.ufl_element()
        q = degree or max(1, int(el.embedded_superdegree))
        expr: Any = u
    elif callable(u) and not isinstance(u, ufl.core.expr.Expr):
        if msh is None:
            raise ValueError("a callable field needs the mesh (msh=...)")
        q = degree or 2
        probe = np.asarray(u(np.zeros((3, 1))))
        shape = tuple(probe.shape[:-1]) if probe.ndim > 1 else ()
        W0 = fem.functionspace(msh, ("Lagrange", q, shape) if shape else ("Lagrange", q))
        expr = fem.Function(W0)
        expr.interpolate(u)
        expr.x.scatter_forward()
    else:
        if msh is None:
            from ufl.domain import extract_unique_domain

            dom = extract_unique_domain(u)
            msh = getattr(dom, "ufl_cargo", lambda: None)()
            if msh is None:
                raise ValueError("cannot find the mesh of this UFL expression; pass msh=...")
        q = degree or 2
        expr = u
    shape = tuple(expr.ufl_shape)
    d = int(msh.geometry.dim)

    def space(deg: int, j: int) -> Any:
        sh = shape + (d,) * j
        return fem.functionspace(msh, ("Lagrange", deg, sh) if sh else ("Lagrange", deg))

    if recovery == "projection":
        el0 = expr.function_space.ufl_element() if isinstance(expr, fem.Function) else None
        continuous = el0 is not None and not el0.discontinuous and el0.embedded_subdegree
        if continuous and int(el0.embedded_superdegree) == q:
            w0 = expr
        else:
            w0 = project(expr, space(q, 0), q)
        out = [w0]
        for j in range(1, int(k) + 1):
            out.append(project(ufl.grad(out[-1]), space(q, j), q))
        return out

    exact = q if exact_order is None else int(exact_order)
    el0 = expr.function_space.ufl_element() if isinstance(expr, fem.Function) else None
    if el0 is not None and not el0.discontinuous and int(el0.embedded_superdegree) == q:
        out = [expr]
    else:
        out = [nodal_average(expr, space(q, 0))]
    cell_expr = expr  # the cellwise j-th derivative, as a UFL expression
    for j in range(1, int(k) + 1):
        if j <= exact:
            cell_expr = ufl.grad(cell_expr)
        else:
            # patch-local recovery: vertex averages of D^{j-1}, then its cellwise gradient
            cell_expr = ufl.grad(nodal_average(cell_expr, space(1, j - 1)))
        out.append(nodal_average(cell_expr, space(q, j)))
    return out


def nodal_values(w: Any) -> tuple[FloatArray, FloatArray]:
    """Owned DOF coordinates ``(n, d)`` and values ``(n, bs)`` of a continuous Lagrange function."""
    V = w.function_space
    n = V.dofmap.index_map.size_local
    bs = V.dofmap.index_map_bs
    d = V.mesh.geometry.dim
    X = V.tabulate_dof_coordinates()[:n, :d]
    return np.ascontiguousarray(X), np.ascontiguousarray(w.x.array[: n * bs].reshape(n, bs))


def quadrature_values(w: Any, degree: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(points, values, weights)`` of ``w`` at the quadrature points of the owned cells.

    ``degree`` is the degree of the cell's quadrature rule (basix's default scheme); the weights
    are the rule's times ``|det J|``, so that sums over the points are integrals. Not collective.
    """
    import basix

    from beckmann._dolfinx import fem, ufl

    msh = w.function_space.mesh
    tdim = msh.topology.dim
    cell = getattr(basix.CellType, msh.topology.cell_name())
    pts, wts = basix.make_quadrature(cell, int(degree))
    ncell = msh.topology.index_map(tdim).size_local
    cells = np.arange(ncell, dtype=np.int32)
    nq = len(wts)
    X = fem.Expression(ufl.SpatialCoordinate(msh), pts).eval(msh, cells)
    V = fem.Expression(w, pts).eval(msh, cells)
    J = fem.Expression(abs(ufl.JacobianDeterminant(msh)), pts).eval(msh, cells)
    X = np.asarray(X).reshape(ncell * nq, -1)
    V = np.asarray(V).reshape(ncell * nq, -1)
    W = (np.asarray(J).reshape(ncell, nq) * wts[None, :]).ravel()
    return np.ascontiguousarray(X), np.ascontiguousarray(V), W


def interior_mask(w: Any, margin: float, points: FloatArray | None = None) -> npt.NDArray[np.bool_]:
    """Owned nodes of ``w``'s space (or ``points``) at distance ``>= margin`` from the boundary.

    The distance is to the nearest boundary vertex (:func:`closer_than`). Collective.
    """
    from beckmann._dolfinx import dmesh

    msh = w.function_space.mesh
    comm = msh.comm
    d = msh.geometry.dim
    tdim = msh.topology.dim
    msh.topology.create_connectivity(tdim - 1, tdim)
    msh.topology.create_connectivity(0, tdim)
    facets = dmesh.exterior_facet_indices(msh.topology)
    verts = dmesh.compute_incident_entities(msh.topology, facets, tdim - 1, 0)
    xb = dmesh.entities_to_geometry(msh, 0, verts).ravel()
    local = msh.geometry.x[np.unique(xb), :d]
    allb = np.concatenate(comm.allgather(local), axis=0)
    X = nodal_values(w)[0] if points is None else points
    return ~closer_than(X, allb, float(margin))


def closer_than(X: FloatArray, T: FloatArray, r: float) -> npt.NDArray[np.bool_]:
    """Per point of ``X``: is some point of ``T`` at distance ``< r`` (``|x − t|``, Euclidean)?

    Bins of side ``>= r``: a target closer than ``r`` lies in a bin next to the point's. The
    same answers as a k-d tree's nearest distance compared with ``r`` (``scipy.spatial``, whose
    import alone took 0.6-1.6 s of the 10 s budget of ``holder --field all``). Not collective.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    T = np.ascontiguousarray(T, dtype=np.float64)
    n, d = X.shape
    out = np.zeros(n, dtype=bool)
    if n == 0 or T.shape[0] == 0 or not r > 0:
        return out
    lo = np.minimum(X.min(axis=0), T.min(axis=0))
    ext = float(np.max(np.maximum(X.max(axis=0), T.max(axis=0)) - lo))
    # the slack keeps rounding of the bin coordinates from moving a target two bins away;
    # the floor on the side keeps the bin keys in int64
    side = max(r * (1.0 + 1e-9), ext / 2.0**20)
    kt = np.floor((T - lo) / side).astype(np.int64) + 1
    kx = np.floor((X - lo) / side).astype(np.int64) + 1
    dims = tuple(int(v) for v in np.maximum(kt.max(axis=0), kx.max(axis=0)) + 2)
    keys = np.ravel_multi_index(tuple(kt.T), dims)
    order = np.argsort(keys, kind="stable")
    keys, T = keys[order], np.take(T, order, axis=0)
    ranges = []
    for off in itertools.product((-1, 0, 1), repeat=d):
        kk = np.ravel_multi_index(tuple((kx + np.asarray(off)).T), dims)
        first = np.searchsorted(keys, kk, side="left")
        ranges.append((first, np.searchsorted(keys, kk, side="right") - first))
    if sum(int(c.sum()) for _, c in ranges) > CLOSER_THAN_PAIRS:
        # dense targets against r (a large margin): the k-d tree is cheaper than the pairs
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(T).query(X, distance_upper_bound=r * (1.0 + 1e-9))
        return np.asarray(dist < r)
    for first, count in ranges:
        p = np.repeat(np.arange(n), count)
        if p.size == 0:
            continue
        t = np.arange(p.size) - np.repeat(np.cumsum(count) - count, count) + first[p]
        dx = np.take(X, p, axis=0) - np.take(T, t, axis=0)
        near = np.sqrt(np.einsum("ij,ij->i", dx, dx)) < r
        out[p[near]] = True
    return out


def multi_indices(value_size: int, d: int, j: int) -> list[tuple[tuple[int, ...], IntArray]]:
    """Multi-indices ``β`` with ``|β| = j`` and their value columns.

    ``β`` is a sorted index tuple; the columns pick ``D^β u`` (one per value component) out of the
    flattened ``(value_size, d, …, d)`` tensor of ``D^j u``.
    """
    out = []
    for t in itertools.product(range(d), repeat=j):
        if list(t) != sorted(t):
            continue
        cols = np.array(
            [c * d**j + (np.ravel_multi_index(t, (d,) * j) if j else 0) for c in range(value_size)],
            dtype=np.int64,
        )
        out.append((t, cols))
    return out
