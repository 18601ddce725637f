"""Derivatives of finite-element fields for the estimators, and nodal point clouds; collective."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["interior_mask", "multi_indices", "nodal_values", "project", "recover_derivatives"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


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


def recover_derivatives(u: Any, k: int, *, msh: Any = None, degree: int | None = None) -> list[Any]:
    """Continuous Lagrange functions ``[u, Du, …, D^k u]`` of a field; collective.

    How derivatives are obtained (the FE space represents ``u`` continuously, ``Du`` only
    piecewise): ``D^0`` is ``u`` itself if it is a continuous Lagrange function, else its L2
    projection into continuous Lagrange of degree ``degree``; then ``D^j = Π ∇(D^{j−1})`` with
    ``Π`` the L2 projection into continuous (tensor-valued) Lagrange of degree ``degree``
    (gradient recovery by projection, applied ``j`` times). ``degree`` defaults to the degree of
    ``u``'s space (at least 1). Recovery smooths on the scale of the mesh size ``h``, which is
    why the estimators measure only above a few ``h``; derivatives beyond the FE degree are
    recovered the same way and are meaningful on scales ``≫ h`` only.

    Args:
        u: A ``fem.Function``, a UFL expression on a mesh, or a callable ``f(x) -> values`` with
            ``x`` of shape ``(d, n)`` (as for ``Function.interpolate``; needs ``msh``).
        k: Highest derivative order, ``>= 0``.
        msh: The mesh, for callables.
        degree: Lagrange degree of the recovery spaces.
    """
    from beckmann._dolfinx import fem, ufl

    if int(k) != k or k < 0:
        raise ValueError(f"derivative order k must be an integer >= 0, got {k!r}")
    if isinstance(u, fem.Function):
        msh = u.function_space.mesh
        q = degree or max(1, int(u.function_space.ufl_element().embedded_superdegree))
        shape = tuple(u.ufl_shape)
        el = u.function_space.ufl_element()
        if (not el.discontinuous) and int(el.embedded_superdegree) == q and el.embedded_subdegree:
            w0 = u
        else:
            w0 = project(
                u, fem.functionspace(msh, ("Lagrange", q, shape) if shape else ("Lagrange", q)), q
            )
    elif callable(u) and not isinstance(u, ufl.core.expr.Expr):
        if msh is None:
            raise ValueError("a callable field needs the mesh (msh=...)")
        q = degree or 2
        probe = np.asarray(u(np.zeros((3, 1))))
        shape = tuple(probe.shape[:-1]) if probe.ndim > 1 else ()
        W0 = fem.functionspace(msh, ("Lagrange", q, shape) if shape else ("Lagrange", q))
        w0 = fem.Function(W0)
        w0.interpolate(u)
        w0.x.scatter_forward()
    else:
        if msh is None:
            from ufl.domain import extract_unique_domain

            dom = extract_unique_domain(u)
            msh = getattr(dom, "ufl_cargo", lambda: None)()
            if msh is None:
                raise ValueError("cannot find the mesh of this UFL expression; pass msh=...")
        q = degree or 2
        shape = tuple(u.ufl_shape)
        W0 = fem.functionspace(msh, ("Lagrange", q, shape) if shape else ("Lagrange", q))
        w0 = project(u, W0, q)
    d = int(msh.geometry.dim)
    out = [w0]
    for j in range(1, int(k) + 1):
        Wj = fem.functionspace(msh, ("Lagrange", q, shape + (d,) * j))
        out.append(project(ufl.grad(out[-1]), Wj, q))
    return out


def nodal_values(w: Any) -> tuple[FloatArray, FloatArray]:
    """Owned DOF coordinates ``(n, d)`` and values ``(n, bs)`` of a continuous Lagrange function."""
    V = w.function_space
    n = V.dofmap.index_map.size_local
    bs = V.dofmap.index_map_bs
    d = V.mesh.geometry.dim
    X = V.tabulate_dof_coordinates()[:n, :d]
    return np.ascontiguousarray(X), np.ascontiguousarray(w.x.array[: n * bs].reshape(n, bs))


def interior_mask(w: Any, margin: float) -> npt.NDArray[np.bool_]:
    """Owned nodes of ``w``'s space at distance ``>= margin`` from the boundary; collective."""
    from scipy.spatial import cKDTree

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
    X, _ = nodal_values(w)
    if allb.shape[0] == 0:
        return np.ones(X.shape[0], dtype=bool)
    dist, _ = cKDTree(allb).query(X)
    return np.asarray(dist >= margin)


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
