r"""Training data from a run or a sweep store: points, values and input derivatives.

**Fields.** For each stored θ (or the single solution of a run, with no θ) the potential φ, its
flux :math:`F = \nabla\varphi`, its Hessian :math:`D^2\varphi` (cellwise, DG\ :sub:`k-2`), the
densities :math:`p_0, p_1(\theta)` (recomputed at θ from the stored config) and their gradients
are evaluated once at the sampled points (:func:`member_data`). Values and derivatives of any
field at any time then follow pointwise (:func:`field_values`):

- ``potential``: :math:`\varphi`, with :math:`\nabla_x\varphi`,
- ``flux``: :math:`F`, with :math:`D_x F = D^2\varphi`,
- ``velocity``: :math:`v_t = F/p_t` with :math:`p_t = (1-t)p_0 + tp_1`, and the derivatives
  :math:`D_x v_t = D^2\varphi/p_t - F\otimes\nabla p_t/p_t^2` and
  :math:`\partial_t v_t = -v_t\,(p_1 - p_0)/p_t` (linear path, docs/math.md).

The derivatives are those of the discrete field inside the cells; they jump across facets by
``O(h^{k-1})`` for a smooth solution. ``flux`` and ``velocity`` need degree ``k >= 2``.

**Points** (:func:`sample_points`). With ``sampling="uniform"`` the points are uniform in the
mesh. With ``sampling="path"`` a fraction ``uniform_fraction`` of them is uniform and the rest
is drawn from the path: ``t`` uniform in ``[0, 1]`` (or the fixed time) and ``x`` from
:math:`p_t`, so that the network's capacity goes where the mass is. ``x | t`` is drawn from the
mixture :math:`(1-t)p_0 + tp_1` by picking :math:`p_1` with probability ``t``; a density is
sampled cellwise: a cell with probability proportional to its midpoint-rule mass, then a point
uniform in the cell (exact up to the variation of the density within one cell). Means over such
points estimate integrals for that measure ``μ``; the held-out errors of a fit are for ``μ``.

The network's inputs are ``(x, θ)`` for ``potential``/``flux`` and ``(x, t, θ)`` for
``velocity`` (or ``(x, θ)`` at a fixed time); derivatives enter the loss for ``x`` (and ``t``),
never for θ (the store has no θ-derivatives). Everything here is collective and gives the same
arrays on every rank and on any number of ranks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from beckmann._mpi import allreduce_array, global_bbox, on_root

if TYPE_CHECKING:
    from beckmann._dolfinx import MPI
    from beckmann.fields import Solution

__all__ = [
    "FIELDS",
    "SAMPLINGS",
    "SPACE_NAMES",
    "density_table",
    "eval_function",
    "field_values",
    "is_sweep_store",
    "member_data",
    "members",
    "sample_domain",
    "sample_points",
    "training_set",
]

FloatArray = npt.NDArray[np.float64]

FIELDS = ("potential", "flux", "velocity")
SAMPLINGS = ("path", "uniform")
SPACE_NAMES = ("x", "y", "z")


def is_sweep_store(path: str | Path) -> bool:
    """``True`` when ``path`` is a folder with a ``sweep.json`` (a sweep store). Not collective."""
    return (Path(path) / "sweep.json").is_file()


# ---------------------------------------------------------------------------------------------
# points


def _cells_canonical(
    msh: Any, densities: tuple[Any, ...] = ()
) -> tuple[FloatArray, FloatArray] | None:
    """Cell vertices ``(cells, tdim+1, gdim)`` and midpoint densities, in a canonical order.

    Both arrays are on rank 0 (``None`` on the other ranks). Collective. The order does not
    depend on the partition: vertices sorted lexicographically in each cell, cells by their
    (rounded) centroids.
    """
    from beckmann._dolfinx import dmesh

    tdim, gdim = msh.topology.dim, msh.geometry.dim
    if tdim != gdim:
        raise ValueError(f"sampling needs a mesh of full dimension, got tdim {tdim}, gdim {gdim}")
    ncells = msh.topology.index_map(tdim).size_local
    local = np.arange(ncells, dtype=np.int32)
    nodes = dmesh.entities_to_geometry(msh, tdim, local, False)
    verts = msh.geometry.x[nodes[:, : tdim + 1], :gdim]  # (cells, tdim + 1, gdim)
    mid = np.zeros((ncells, 3))
    mid[:, :gdim] = verts.mean(axis=1)
    vals = np.zeros((ncells, len(densities)))
    for j, p in enumerate(densities):
        if ncells:
            vals[:, j] = p.eval(mid, local).reshape(-1)
    pieces = msh.comm.gather((verts, vals), root=0)
    if msh.comm.rank != 0:
        return None
    assert pieces is not None
    V = np.concatenate([v for v, _ in pieces])
    P = np.concatenate([p for _, p in pieces])
    order = np.lexsort(V.transpose(2, 0, 1)[::-1], axis=-1)
    V = np.take_along_axis(V, order[:, :, None], axis=1)
    key = np.round(V.mean(axis=1), 12)
    perm = np.lexsort(key.T[::-1])
    return V[perm], P[perm]


def _in_cells(rng: np.random.Generator, V: FloatArray, weights: FloatArray, n: int) -> FloatArray:
    """``n`` points: cells drawn with probability ∝ ``weights``, uniform inside each cell."""
    cells = rng.choice(len(V), size=n, p=weights / weights.sum())
    lam = rng.dirichlet(np.ones(V.shape[1]), size=n)
    return np.einsum("nk,nkd->nd", lam, V[cells])


def _volumes(V: FloatArray) -> FloatArray:
    tdim = V.shape[1] - 1
    return np.abs(np.linalg.det(V[:, 1:] - V[:, :1])) / math.factorial(tdim)


def sample_domain(msh: Any, n: int, seed: int) -> FloatArray:
    """``n`` points uniformly distributed in the mesh's domain, the same on every rank.

    Cells are drawn with probability proportional to their volume, then a point in the cell
    with uniform barycentric coordinates (a flat Dirichlet sample). Uses the cells' vertices, so
    a curved (higher-order) geometry is sampled on its straight-sided cells. Collective; uses
    ``numpy.random.default_rng(seed)`` on the canonically ordered cells: the same points on any
    number of ranks.
    """
    cells = _cells_canonical(msh)

    def draw() -> FloatArray:
        assert cells is not None
        return _in_cells(np.random.default_rng(seed), cells[0], _volumes(cells[0]), n)

    return np.asarray(on_root(msh.comm, draw))


def sample_points(
    sol: Solution,
    n: int,
    seed: int,
    *,
    sampling: str = "path",
    uniform_fraction: float = 0.2,
    time: float | None = None,
) -> tuple[FloatArray, FloatArray]:
    """``n`` points ``x`` and times ``t`` for training data (see the module docstring).

    Args:
        sol: The solution whose densities ``p0``, ``p1`` define the path.
        n: Number of points.
        seed: Seeds ``numpy.random.default_rng``.
        sampling: ``"path"`` (``x`` from ``p_t``, a ``uniform_fraction`` uniform) or
            ``"uniform"``.
        uniform_fraction: Share of uniform points with ``sampling="path"``, in ``[0, 1]``.
        time: A fixed ``t`` for every point; ``None`` draws ``t`` uniform in ``[0, 1]``.

    Returns:
        ``x (n, d)`` and ``t (n,)``, the same on every rank. Collective.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")
    if not 0.0 <= uniform_fraction <= 1.0:
        raise ValueError(f"uniform_fraction must lie in [0, 1], got {uniform_fraction!r}")
    cells = _cells_canonical(sol.msh, (sol.p0, sol.p1))

    def draw() -> tuple[FloatArray, FloatArray]:
        assert cells is not None
        V, P = cells
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7A7E]))
        t = rng.uniform(0.0, 1.0, n) if time is None else np.full(n, float(time))
        vol = _volumes(V)
        x = np.empty((n, V.shape[2]))
        if sampling == "uniform":
            kind = np.zeros(n, dtype=int)
        else:
            # 0: uniform; 1: from p0; 2: from p1 (with probability t among the path points)
            path = rng.uniform(size=n) >= uniform_fraction
            kind = np.where(path, np.where(rng.uniform(size=n) < t, 2, 1), 0)
        masses = (vol, vol * np.maximum(P[:, 0], 0.0), vol * np.maximum(P[:, 1], 0.0))
        for j, w in enumerate(masses):
            idx = np.flatnonzero(kind == j)
            if idx.size:
                if not w.sum() > 0:
                    raise ValueError("a density of the run has no positive mass to sample")
                x[idx] = _in_cells(rng, V, w, idx.size)
        return x, t

    x, t = on_root(sol.comm, draw)
    return np.asarray(x), np.asarray(t)


# ---------------------------------------------------------------------------------------------
# fields at points


def eval_function(sol: Solution, u: Any, x: FloatArray) -> FloatArray:
    """Values of a dolfinx Function on ``sol``'s mesh at points given identically on every rank.

    Collective (like :meth:`~beckmann.fields.Solution.evaluate`); the same array on every rank.
    """
    from beckmann._dolfinx import MPI

    xp, cells, mine = sol.locator().locate(x)
    size = int(np.prod(u.ufl_shape)) if u.ufl_shape else 1
    out = np.zeros((len(x), size))
    idx = np.flatnonzero(mine)
    if idx.size:
        out[idx] = u.eval(xp[idx], cells[idx]).reshape(len(idx), size)
    return np.asarray(sol.comm.allreduce(out, op=MPI.SUM)).reshape(len(x), *u.ufl_shape)


def member_data(sol: Solution, x: FloatArray) -> dict[str, FloatArray]:
    """φ, F, D²φ, p0, p1, ∇p0, ∇p1 of a solution at points ``x`` (same on every rank).

    The Hessian is that of the discrete potential inside each cell (DG_{k-2}; zero for
    ``k = 1``) and the density gradients those of the Lagrange densities inside each cell
    (DG_{k-1}): both are :func:`beckmann.holder.derivatives.cellwise`, the one definition of a
    discrete field's derivative that the Hölder estimators use. Collective.
    """
    from beckmann._dolfinx import ufl
    from beckmann.holder.derivatives import cellwise

    d, k = sol.gdim, sol.degree
    vals = sol.evaluate(x, 0.0, what=("potential", "flux", "source", "target"))
    out = {"phi": vals["potential"], "F": vals["flux"], "p0": vals["source"], "p1": vals["target"]}
    F_rt = getattr(sol, "flux_rt", None)  # a mixed run: the Jacobian of its RT_k flux
    if k >= 2 or F_rt is not None:
        # the cellwise exact derivative, the definition the Hölder estimators use
        DF = ufl.grad(ufl.grad(sol.phi)) if F_rt is None else ufl.grad(F_rt)
        out["H"] = eval_function(sol, cellwise(DF, sol.msh, k - 2 if F_rt is None else k - 1), x)
    else:
        out["H"] = np.zeros((len(x), d, d))
    for name, p in (("g0", sol.p0), ("g1", sol.p1)):
        out[name] = eval_function(sol, cellwise(ufl.grad(p), sol.msh, max(k - 1, 0)), x)
    return out


def field_values(
    data: dict[str, FloatArray], field: str, t: FloatArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """Values and derivatives of ``field`` from :func:`member_data`; ``t`` per point (velocity).

    Returns:
        ``(y, jac)``: potential ``(N,)``, ``(N, d)``; flux ``(N, d)``, ``(N, d, d)``; velocity
        ``(N, d)``, ``(N, d, d + 1)`` (the last column is ``∂_t v``).
    """
    if field == "potential":
        return data["phi"], data["F"]
    if field == "flux":
        return data["F"], data["H"]
    if field != "velocity":
        raise ValueError(f"unknown field {field!r}; choose one of {', '.join(FIELDS)}")
    if t is None:
        raise ValueError("the velocity needs a time per point")
    p0, p1, F = data["p0"], data["p1"], data["F"]
    pt = (1.0 - t) * p0 + t * p1
    gt = (1.0 - t)[:, None] * data["g0"] + t[:, None] * data["g1"]
    v = F / pt[:, None]
    Dx = data["H"] / pt[:, None, None] - np.einsum("ni,nj->nij", F, gt) / (pt**2)[:, None, None]
    dt = -v * ((p1 - p0) / pt)[:, None]
    return v, np.concatenate([Dx, dt[:, :, None]], axis=2)


# ---------------------------------------------------------------------------------------------
# runs and sweep stores


def members(source: str | Path, comm: MPI.Comm) -> tuple[list[str], list[tuple[FloatArray, Any]]]:
    """Parameter names and ``[(θ values, solution factory), ...]`` of a sweep store or a run.

    A run has no parameters and one member. The factories build the :class:`Solution` when
    called (collective), so that only one θ is held in memory at a time. Collective.
    """
    from beckmann.store import load_run
    from beckmann.sweep import SweepStore, theta_solution

    if not comm.bcast(is_sweep_store(source) if comm.rank == 0 else None, root=0):
        sol = load_run(source, comm)
        return [], [(np.zeros(0), lambda: sol)]
    store = SweepStore(source, comm)
    done = store.completed()
    if not done:
        raise ValueError(f"sweep store {str(source)!r} has no finished θ yet")
    out = []
    for i in done:
        theta = store.grid.theta(i)
        vec = np.array([theta[n] for n in store.grid.names], dtype=np.float64)
        out.append((vec, lambda i=i, theta=theta: theta_solution(store, i, theta)))
    return list(store.grid.names), out


def training_set(
    source: str | Path,
    field: str,
    n: int,
    seed: int,
    comm: MPI.Comm,
    *,
    time: float | None = None,
    sampling: str = "uniform",
    uniform_fraction: float = 0.2,
) -> dict[str, Any]:
    """Inputs ``(x, [t,] θ)``, values and derivatives from every member of a sweep (or a run).

    ``n`` points are spread evenly over the stored θ (at least one each), each θ with its own
    points (:func:`sample_points`, seeded by ``seed`` and the member's index). For ``velocity``,
    ``t`` is an input drawn per point, unless ``time`` fixes it (then no ``t`` input); the other
    fields ignore ``time``. Collective; the result is the same on every rank and on any number
    of ranks.

    Returns:
        ``{"x", "y", "jac", "derivative_inputs", "input_names", "bounds", "parameters",
        "thetas", "degree"}``.

    Raises:
        ValueError: Unknown field, or ``flux``/``velocity`` on a degree-1 solution.
    """
    if field not in FIELDS:
        raise ValueError(f"unknown field {field!r}; choose one of {', '.join(FIELDS)}")
    names, mem = members(source, comm)
    per = max(1, -(-n // len(mem)))
    with_t = field == "velocity" and time is None
    X, Y, J = [], [], []
    lo = hi = None
    degree = d = 0
    for j, (vec, make) in enumerate(mem):
        sol = make()
        d, degree = sol.gdim, sol.degree
        if field != "potential" and degree < 2:
            raise ValueError(
                f"--field {field} needs the Jacobian of the flux, which is zero in every cell for "
                "degree 1; solve with --set solver.degree=2 (or higher)"
            )
        if lo is None:
            lo, hi = global_bbox(sol.msh.geometry.x[:, :d], comm)
        x, t = sample_points(
            sol, per, seed + 7919 * j, sampling=sampling, uniform_fraction=uniform_fraction,
            time=time if field == "velocity" else None,
        )  # fmt: skip
        y, jac = field_values(member_data(sol, x), field, t)
        if field == "velocity" and not with_t:
            jac = jac[:, :, :d]
        cols = [x] + ([t[:, None]] if with_t else []) + [np.tile(vec, (per, 1))]
        X.append(np.hstack(cols))
        Y.append(y)
        J.append(jac)
    assert lo is not None and hi is not None
    tlo, thi = np.zeros(int(with_t)), np.ones(int(with_t))
    thetas = np.array([vec for vec, _ in mem]).reshape(len(mem), len(names))
    plo, phi = thetas.min(axis=0), thetas.max(axis=0)
    flat = phi - plo <= 1e-12 * np.maximum(np.abs(phi), 1.0)
    # a parameter with one value: any box around it (the network cannot learn a dependence)
    plo, phi = np.where(flat, plo - 0.5, plo), np.where(flat, phi + 0.5, phi)
    return {
        "x": np.vstack(X),
        "y": np.concatenate(Y),
        "jac": np.concatenate(J),
        "derivative_inputs": list(range(d + int(with_t))),
        "input_names": [*SPACE_NAMES[:d], *(["t"] if with_t else []), *names],
        "bounds": (np.concatenate([lo, tlo, plo]), np.concatenate([hi, thi, phi])),
        "parameters": names,
        "thetas": thetas,
        "degree": degree,
    }


#: Nodes of a density table per mean cell width (:func:`density_table`), and the largest table.
TABLE_NODES_PER_CELL = 4
TABLE_MAX_NODES = 2**20


def density_table(sol: Solution) -> dict[str, Any]:
    """``p0`` and ``p1`` of a run at the nodes of a regular grid over the mesh's bounding box.

    The grid spacing is the mean cell width (``(volume / cells)^(1/d)``) over
    :data:`TABLE_NODES_PER_CELL`, coarser if the table would exceed :data:`TABLE_MAX_NODES`
    nodes. A node outside the domain takes the values of the nearest node inside; values are
    kept at least ``1e-9`` times the table's maximum (positive). Collective; the same arrays on
    every rank (:class:`~beckmann.requ.flux_velocity.FluxVelocity` interpolates them).

    Returns:
        ``{"lower", "upper", "p0", "p1"}`` (tables of shape nodes per axis, C order).
    """
    from scipy.spatial import cKDTree

    from beckmann._dolfinx import MPI
    from beckmann.locate import MeshCells
    from beckmann.requ.flux_velocity import grid_nodes

    msh, comm, d = sol.msh, sol.comm, sol.gdim
    lo, hi = global_bbox(msh.geometry.x[:, :d], comm)
    cells = MeshCells(msh)
    volume = comm.allreduce(float(cells.volume[: cells.n_owned].sum()), op=MPI.SUM)
    count = comm.allreduce(cells.n_owned, op=MPI.SUM)
    spacing = (volume / count) ** (1.0 / d) / TABLE_NODES_PER_CELL
    extent = hi - lo
    while True:
        shape = tuple(int(n) for n in np.maximum(np.ceil(extent / spacing), 1).astype(int) + 1)
        if math.prod(shape) <= TABLE_MAX_NODES:
            break
        spacing *= 1.25
    nodes = grid_nodes(lo, hi, shape)
    found, _, _ = cells.search(nodes, owned=True)
    inside = allreduce_array((found >= 0).astype(np.int8), MPI.MAX, comm).astype(bool)
    vals = sol.evaluate(nodes[inside], 0.0, what=("source", "target"))
    out: dict[str, Any] = {"lower": lo, "upper": hi}
    near = None
    if not inside.all():
        near = cKDTree(nodes[inside]).query(nodes[~inside])[1]
    for key, name in (("p0", "source"), ("p1", "target")):
        table = np.empty(len(nodes))
        table[inside] = vals[name]
        if near is not None:
            table[~inside] = vals[name][near]
        table = np.maximum(table, 1e-9 * float(table.max()))
        out[key] = table.reshape(shape)
    return out
