r"""Densities on a mesh: exact values at quadrature points, and a certified-positive interpolant.

A density :math:`\rho` enters the solve twice, in two forms (docs/math.md, "Discrete densities"):

* **the right-hand side** :math:`\int_\Omega (p_1 - p_0)\, w\, dx` uses the values of
  :math:`\rho` at the points of a quadrature rule of degree :math:`q` (``solver.quadrature_degree``,
  by default :func:`default_quadrature_degree`), held in a function of a basix quadrature space.
  The same rule gives the mass :math:`m = \sum_j \omega_j \rho(x_j)` that normalises it, so
  :math:`\int (p_1 - p_0) = 0` holds to round-off. No interpolation error enters the
  right-hand side; only the quadrature error does.
* **the velocity** :math:`v_t = F_t / p_t` and the sampler use the :math:`P_k` nodal interpolant
  :math:`I_k\rho`, normalised to mass 1. It is *certified*: on every cell of a simplex mesh the
  smallest Bernstein coefficient of :math:`I_k\rho` (:mod:`~beckmann.density.bernstein`) bounds
  it from below, and must be at least ``min_density``, so :math:`p_t \ge` ``min_density`` holds
  everywhere, not only at the nodes. On the linear path :math:`p_t = (1 - t) p_0 + t p_1` the
  bound carries over to every :math:`t`, since the coefficients are linear in the density.

:class:`DensityPoints` is built once per function space (the points, the quadrature space, the
Bernstein matrix); :meth:`DensityPoints.discretise` then turns raw values into a
:class:`DiscreteDensity` (checked, certified, normalised) as often as needed, e.g. once per
sweep parameter; :class:`QuadratureRHS` assembles the right-hand side vector. All of it is
collective over the mesh's communicator.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI, PETSc, basix, dolfinx, fem, ufl
from beckmann._mpi import agree, format_point
from beckmann.density.bernstein import bernstein_collocation, bernstein_matrix
from beckmann.density.checks import check_values, global_minimum, values_ok
from beckmann.density.evaluator import Evaluator
from beckmann.mesh import p1_dof_nodes

__all__ = [
    "DensityPoints",
    "DiscreteDensity",
    "QuadratureRHS",
    "default_quadrature_degree",
    "resolve_quadrature_degree",
    "smooth_density",
]

FloatArray = npt.NDArray[np.float64]

#: Highest quadrature degree accepted (basix's default schemes go further, the cost does not).
MAX_QUADRATURE_DEGREE = 30

#: Cells the degree-k Bernstein bound cannot certify are re-examined at this many times k.
ELEVATION = 4


#: Functions of an expression that may have a kink or an infinite slope where a density is
#: positive (``sqrt`` at 0, ``abs``/``min``/``max`` where their arguments cross); see
#: :func:`smooth_density`.
NONSMOOTH_FUNCTIONS = frozenset({"abs", "min", "max", "sqrt", "asin", "acos", "tan", "atan2"})


def smooth_density(section: Mapping[str, Any]) -> bool:
    """Whether a ``[source]`` / ``[target]`` section is certainly a smooth (C^∞) function.

    ``uniform`` and ``gaussian_mixture`` are; an ``expression`` is when it calls none of
    :data:`NONSMOOTH_FUNCTIONS` and raises only to non-negative integer literal powers (``r**0.5``
    has an infinite slope at ``r = 0``); images (bilinear on the pixels), kernel density
    estimates (binned) and stored fields (piecewise polynomial on another mesh) are not.
    """
    import ast

    from beckmann.density.expression import Expression

    kind = section.get("kind", "uniform")
    if kind in ("uniform", "gaussian_mixture"):
        return True
    if kind != "expression":
        return False
    try:
        tree = Expression(section.get("expr", "")).tree
    except ValueError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id in NONSMOOTH_FUNCTIONS:
                return False
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            e = node.right
            if not (isinstance(e, ast.Constant) and type(e.value) is int and e.value >= 0):
                return False
    return True


def default_quadrature_degree(k: int, smooth: bool = False) -> int:
    """The quadrature degree for P_k when ``solver.quadrature_degree = -1``: ``2k`` or ``2k + 2``.

    For smooth densities (``smooth``, :func:`smooth_density` of both) ``2k``: a rule exact for
    degree :math:`2k - 1` keeps the optimal :math:`O(h^{k+1})` L² rate, and one more degree makes
    it exact for products of two P_k functions (the reduced sweep's right-hand side); 3, 6 and
    12 points per triangle for k = 1, 2, 3. Measured on p1 = 1 + ½ cos πx cos πy
    (``scripts/bench_quadrature.py``, docs/performance.md), φ's L² and H¹ errors and the
    cost's are those of ``2k + 2`` to 4-5 digits for k = 1, 2, 3; at 1M P1 dofs the density phase
    takes 1.5 s instead of 2.0.

    Otherwise ``2k + 2``: three more degrees for densities that are only piecewise smooth
    (6, 12 and 16 points per triangle). On a bilinear image at P1 the cost's error with ``2k``
    fell by only 1.6x from n = 32 to 64 (``2k + 2``: 3.75x, tests/test_image_convergence.py).
    """
    return 2 * int(k) + (0 if smooth else 2)


def resolve_quadrature_degree(requested: int, k: int, smooth: bool = False) -> int:
    """``requested`` checked, or :func:`default_quadrature_degree` when it is ``-1``.

    Raises:
        ValueError: Not an integer in ``[1, 30]`` or ``-1``.
    """
    if isinstance(requested, bool) or not isinstance(requested, int | np.integer):
        raise ValueError(f"solver.quadrature_degree must be an integer, got {requested!r}")
    if requested == -1:
        return default_quadrature_degree(k, smooth)
    if not 1 <= requested <= MAX_QUADRATURE_DEGREE:
        raise ValueError(
            f"solver.quadrature_degree must be -1 (automatic: 2*degree for smooth densities, "
            f"else 2*degree + 2) or in [1, {MAX_QUADRATURE_DEGREE}], got {requested!r}"
        )
    return int(requested)


@dataclass
class DiscreteDensity:
    """One density on a mesh, in the two forms the solve uses.

    Attributes:
        p: The P_k nodal interpolant, normalised to ``∫ p dx = 1`` (velocity, sampling, output).
        q: Values at the quadrature points, normalised with the same quadrature (right-hand side).
        mass: The raw mass ``∫ ρ dx`` by the quadrature, before normalisation.
        cell_minimum: The smallest Bernstein lower bound of the raw interpolant over all cells
            (``nan`` on meshes that are not simplices, where no bound is computed).
        description: How the density was given (``Evaluator.description``: for ``samples`` the
            KDE's bandwidth rule, bandwidth and cross-validation score), for ``summary.json``.
    """

    p: fem.Function
    q: fem.Function
    mass: float
    cell_minimum: float
    #: How the density was given (kind, floor; a KDE's bandwidth rule, bandwidth and scores).
    description: dict[str, Any] = field(default_factory=dict)


def _dof_coordinates(V: fem.FunctionSpace) -> FloatArray:
    """``V.tabulate_dof_coordinates()``; for P1 on an affine mesh the vertices themselves."""
    node = p1_dof_nodes(V)
    return V.tabulate_dof_coordinates() if node is None else V.mesh.geometry.x[node]


def _affine_jacobians(vertices: FloatArray) -> FloatArray:
    """``|det J|`` of affine simplices from their vertices ``(cells, tdim + 1, 3)``.

    ``sqrt(det(JᵀJ))`` with ``J = [v_1 − v_0, ..., v_tdim − v_0]``, so a manifold mesh
    (a surface in 3D) is measured correctly too.
    """
    J = (vertices[:, 1:, :] - vertices[:, :1, :]).transpose(0, 2, 1)  # (cells, 3, tdim)
    if J.shape[2] == 2 and not np.any(J[:, 2, :]):
        return np.abs(J[:, 0, 0] * J[:, 1, 1] - J[:, 0, 1] * J[:, 1, 0])
    return np.sqrt(np.abs(np.linalg.det(np.einsum("cdi,cdj->cij", J, J))))


class DensityPoints:
    """Where densities are evaluated on a mesh: the nodes of ``V`` and quadrature points.

    Args:
        V: Scalar Lagrange space P_k of the potential.
        quadrature_degree: Degree of the quadrature rule, or ``-1`` for
            :func:`default_quadrature_degree`.
        sections: The ``[source]`` and ``[target]`` sections the points are for: with ``-1``,
            the rule is ``2k`` when every one is smooth (:func:`smooth_density`), else (and
            when not given) ``2k + 2``. Every caller that solves a config passes both, so a
            sweep and a solve of one config use one rule.

    Attributes:
        V: As given.
        degree: The quadrature degree used.
        Q: The quadrature space (basix quadrature element, default scheme of ``degree``).
        nodes: Coordinates of ``V``'s dofs (owned and ghost), ``(3, N)`` (a transposed view).
        qpoints: Physical quadrature points, one per dof of ``Q``, ``(3, M)``.
        dx: The measure that integrates with this rule.

    Collective (the function spaces).
    """

    def __init__(
        self,
        V: fem.FunctionSpace,
        quadrature_degree: int = -1,
        sections: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        msh = V.mesh
        k = int(V.ufl_element().embedded_superdegree)
        self.V = V
        smooth = sections is not None and all(smooth_density(s) for s in sections)
        self.degree = resolve_quadrature_degree(quadrature_degree, k, smooth)
        element = basix.ufl.quadrature_element(msh.basix_cell(), value_shape=(), degree=self.degree)
        self.Q = fem.functionspace(msh, element)
        # a transposed view, not a copy: evaluating rows of it is as fast (a 1M x 3 copy is not)
        self.nodes: FloatArray = _dof_coordinates(V).T
        self.dx = ufl.dx(domain=msh, metadata={"quadrature_degree": self.degree})
        tdim = msh.topology.dim
        self._simplex = msh.topology.cell_type in (
            dolfinx.mesh.CellType.interval,
            dolfinx.mesh.CellType.triangle,
            dolfinx.mesh.CellType.tetrahedron,
        )
        self._ncells = msh.topology.index_map(tdim).size_local
        # Affine simplices (the usual case): the quadrature points are computed from the
        # vertices in chunks of cells, never all at once (12.6M points at 1M P1 dofs);
        # other cells ask DOLFINx for them.
        self._affine = self._simplex and msh.geometry.cmaps[0].degree == 1
        ref, self._weights = element.custom_quadrature()
        self._jacobians: FloatArray | None = None
        self._lambda_q = np.concatenate([1.0 - ref.sum(axis=1, keepdims=True), ref], axis=1)
        self._qdofs = self.Q.dofmap.list
        self._blocked = bool(
            np.array_equal(self._qdofs.ravel(), np.arange(self._qdofs.size, dtype=np.int32))
        )
        self._p_integral: fem.Form | None = None
        if self._simplex:
            # the cell's values in the reference element's dof order: the Lagrange dofmap
            element_k = V.ufl_element().basix_element
            self._bernstein = bernstein_matrix(element_k)
            # the same polynomial at degree ELEVATION * k: lattice values and coefficients
            lattice = basix.create_lattice(
                element_k.cell_type, ELEVATION * k, basix.LatticeType.equispaced, True
            )
            self._lattice_values = element_k.tabulate(0, lattice)[0, :, :, 0]
            self._elevation = np.linalg.solve(
                bernstein_collocation(lattice, ELEVATION * k), self._lattice_values
            )
            self._lattice_lambda = np.concatenate(
                [1.0 - lattice.sum(axis=1, keepdims=True), lattice], axis=1
            )

    @property
    def qpoints(self) -> FloatArray:
        """Physical quadrature points, one per dof of :attr:`Q`, ``(3, M)`` (computed on call)."""
        if not self._affine:
            return np.ascontiguousarray(self.Q.tabulate_dof_coordinates().T)
        out = np.empty((3, self._qdofs.size))
        for cells, x in self._chunks():
            out[:, self._qdofs[cells].ravel()] = x
        return out

    def _cell_vertices(self, cells: slice | npt.NDArray[np.intp]) -> FloatArray:
        """Vertex coordinates ``(cells, tdim + 1, 3)`` (a cell's first geometry nodes)."""
        msh = self.V.mesh
        tdim = msh.topology.dim
        return msh.geometry.x[msh.geometry.dofmaps[0][cells, : tdim + 1]]

    def _chunks(self, size: int = 1 << 16) -> Iterator[tuple[slice, FloatArray]]:
        """``(cells, x)``: consecutive local cells and their quadrature points ``(3, m * nq)``."""
        msh = self.V.mesh
        vertices = msh.geometry.dofmaps[0][:, : msh.topology.dim + 1]
        ncells = self._qdofs.shape[0]
        # one coordinate at a time, straight into the output: x[d, c, q] = Σ_l X_d[v_cl] λ_ql,
        # by einsum, not a BLAS matmul: an inner dimension of 3 gains nothing from BLAS, and a
        # multi-threaded OpenBLAS on a busy machine made this 10x slower
        coords = [np.ascontiguousarray(msh.geometry.x[:, d]) for d in range(3)]
        # a planar mesh's z = 0 is copied, not computed (Σ_l 0 λ_ql = 0 exactly)
        dims = range(2) if not np.any(coords[2]) else range(3)
        lam_t = np.ascontiguousarray(self._lambda_q.T)  # (tdim + 1, nq)
        for start in range(0, ncells, size):
            cells = slice(start, min(start + size, ncells))
            idx = vertices[cells]
            x = np.empty((3, idx.shape[0], lam_t.shape[1]))
            if len(dims) == 2:
                x[2] = 0.0
            for d in dims:
                np.einsum("cv,vq->cq", coords[d][idx], lam_t, out=x[d])
            yield cells, x.reshape(3, -1)

    def quadrature_values(
        self,
        ev: Evaluator,
        params: Mapping[str, float] | None = None,
        out: FloatArray | None = None,
    ) -> FloatArray:
        """``ev`` at every quadrature point (all local cells), in :attr:`Q`'s dof order."""
        if out is None:
            out = np.empty(self._qdofs.size)
        if getattr(ev, "constant", None) is not None:  # uniform: no points needed
            out[:] = ev.constant
            return out
        if not self._affine:
            out[:] = ev(self.qpoints, params)
            return out
        for cells, x in self._chunks():
            values = ev(x, params)
            if self._blocked:
                nq = self._qdofs.shape[1]
                out[cells.start * nq : cells.stop * nq] = values
            else:
                out[self._qdofs[cells].ravel()] = values
        return out

    def integrate(self, u: fem.Function) -> float:
        """``∫ u dx`` of a function of :attr:`Q` with its own rule; collective."""
        comm = self.V.mesh.comm
        if not (self._affine and self._blocked):
            form = fem.form(u * self.dx)
            return float(comm.allreduce(fem.assemble_scalar(form), op=MPI.SUM))
        # the same sum as DOLFINx's, without packing the coefficient: Σ_c |J_c| Σ_q ω_q u_cq
        if self._jacobians is None:
            self._jacobians = self._cell_jacobians()
        nq = self._weights.size
        # einsum, not BLAS: a threaded OpenBLAS gemv is slow on a busy machine (see _chunks)
        local = np.einsum("cq,q->c", u.x.array[: self._ncells * nq].reshape(-1, nq),
                          self._weights)
        return float(comm.allreduce(float(np.dot(local, self._jacobians)), op=MPI.SUM))

    def _cell_jacobians(self) -> FloatArray:
        """``|det J|`` of every local cell (:func:`_affine_jacobians`, the same arithmetic).

        Triangles in the plane ``z = 0`` (the usual case) from whole coordinate columns: a
        gather of ``(cells, vertices, 3)`` blocks is several times slower.
        """
        msh = self.V.mesh
        x, vertices = msh.geometry.x, msh.geometry.dofmaps[0][:, : msh.topology.dim + 1]
        if msh.topology.dim == 2 and not np.any(x[:, 2]):
            X, Y = np.ascontiguousarray(x[:, 0]), np.ascontiguousarray(x[:, 1])
            v = vertices[: self._ncells]
            x0, y0 = X[v[:, 0]], Y[v[:, 0]]
            j00, j10 = X[v[:, 1]] - x0, Y[v[:, 1]] - y0  # J[:, d, r] = x_{r+1, d} − x_{0, d}
            j01, j11 = X[v[:, 2]] - x0, Y[v[:, 2]] - y0
            return np.abs(j00 * j11 - j01 * j10)
        return np.concatenate(
            [_affine_jacobians(x[vertices[s : min(s + (1 << 16), self._ncells)]])
             for s in range(0, self._ncells, 1 << 16)] or [np.zeros(0)]
        )  # fmt: skip

    def evaluate(
        self,
        ev: Evaluator,
        *,
        role: str,
        min_density: float,
        params: Mapping[str, float] | None = None,
    ) -> DiscreteDensity:
        """Evaluate a density at the nodes and the quadrature points and discretise it.

        Non-finite values are reported by the checks (collectively), not as NumPy warnings.
        """
        p = fem.Function(self.V, name=role)
        q = fem.Function(self.Q, name=f"{role}_quadrature")
        with np.errstate(all="ignore"):
            if getattr(ev, "constant", None) is not None:
                p.x.array[:] = ev.constant
            else:
                p.x.array[:] = ev(self.nodes, params)
            self.quadrature_values(ev, params, out=q.x.array)
        return self._discretise(p, q, role=role, min_density=min_density)

    def discretise(
        self,
        nodal: npt.ArrayLike,
        quad: npt.ArrayLike,
        *,
        role: str,
        min_density: float,
        out: tuple[fem.Function, fem.Function] | None = None,
    ) -> DiscreteDensity:
        """Check, certify and normalise raw values at the nodes and at the quadrature points.

        Args:
            nodal: Values at :attr:`nodes` (all of this rank's dofs of ``V``).
            quad: Values at :attr:`qpoints`.
            role: ``source`` or ``target`` (messages, function names).
            min_density: Smallest value allowed anywhere.
            out: Functions of ``V`` and :attr:`Q` to hold the result (reused by a sweep, which
                allocates them once); new ones when ``None``. ``nodal`` and ``quad`` may be
                their own arrays.

        Returns:
            The discrete density.

        Raises:
            ValueError: On every rank: a value is not finite or below ``min_density`` at a node
                or quadrature point (the message names the point), the interpolant dips below
                ``min_density`` inside a cell (the message names the cell's centre and suggests
                a finer mesh or a lower degree), or the mass is not positive.
        """
        if out is None:
            p = fem.Function(self.V, name=role)
            q = fem.Function(self.Q, name=f"{role}_quadrature")
        else:
            p, q = out
        for f, v in ((p, nodal), (q, quad)):
            if v is not f.x.array:
                f.x.array[:] = np.broadcast_to(np.asarray(v, dtype=np.float64), f.x.array.shape)
        return self._discretise(p, q, role=role, min_density=min_density)

    def _discretise(
        self, p: fem.Function, q: fem.Function, *, role: str, min_density: float
    ) -> DiscreteDensity:
        comm = self.V.mesh.comm
        n = self.V.dofmap.index_map.size_local
        nq = self.Q.dofmap.index_map.size_local
        check_values(p.x.array[:n], self.nodes.T[:n], role=role, min_density=min_density, comm=comm)
        # the quadrature points are needed only to name a bad one
        if not values_ok(q.x.array[:nq], min_density, comm):
            check_values(
                q.x.array[:nq], self.qpoints.T[:nq], role=role, min_density=min_density, comm=comm
            )
        cell_min = self.certify(p, role=role, min_density=min_density)
        mass = self.integrate(q)
        agree(
            comm,
            None if mass > 0 else f"{role} density has non-positive total mass {mass:.6g}",
        )
        q.x.array[:] /= mass
        if self._p_integral is None:  # ∫ p dx = Σ_i p_i ∫ w_i dx (owned dofs), exact for P_k
            w = ufl.TestFunction(self.V)
            self._p_integral = fem.form(w * ufl.dx)
            vec = fem.assemble_vector(self._p_integral)
            vec.scatter_reverse(dolfinx.la.InsertMode.add)
            self._p_mass = vec.array[:n].copy()
        p.x.array[:] /= float(comm.allreduce(float(self._p_mass @ p.x.array[:n]), MPI.SUM))
        return DiscreteDensity(p, q, mass, cell_min)

    def certify(self, p: fem.Function, *, role: str, min_density: float) -> float:
        """Check that the P_k function ``p`` is at least ``min_density`` on every cell.

        First bound: the smallest Bernstein coefficient of degree k per cell (exact for P1,
        where the coefficients are the nodal values). Cells it cannot certify get a second
        look at degree :data:`ELEVATION` x k: the Bernstein coefficients of the same
        polynomial written at the higher degree (a tighter lower bound), and its values at that
        degree's lattice points (actual values, which prove a dip when below the floor). Meshes
        that are not simplices are not certified.

        Returns:
            The certified lower bound over all cells (``nan`` when not a simplex mesh).

        Raises:
            ValueError: On every rank, when the interpolant is below ``min_density`` somewhere
                (naming the lowest point found and the number of cells) or cannot be certified
                (naming the centre of the worst cell); both suggest a finer mesh or a lower
                degree.
        """
        if not self._simplex:
            return float("nan")
        comm = self.V.mesh.comm
        k = int(self.V.ufl_element().embedded_superdegree)
        if k == 1:
            # P1: the Bernstein coefficients are the nodal values, and every node is a vertex
            # of a cell, so the smallest cell bound is the smallest nodal value
            n = self.V.dofmap.index_map.size_local
            low = float(comm.allreduce(float(p.x.array[:n].min(initial=np.inf)), op=MPI.MIN))
            if low >= min_density - 1e-12 * max(1.0, abs(min_density), abs(low)):
                return low
        # DOLFINx permutes Lagrange dofmaps so that a cell's dofs are in reference order
        values = p.x.array[self.V.dofmap.list[: self._ncells]]
        lower = (values @ self._bernstein.T).min(axis=1) if values.size else np.zeros(0)
        # a lower bound under min_density by round-off only is noise, not a dip
        tol = 1e-12 * max(1.0, abs(min_density), float(np.abs(values).max(initial=0.0)))
        bad = np.flatnonzero(lower < min_density - tol)
        if comm.allreduce(bad.size, op=MPI.SUM) == 0:
            return float(comm.allreduce(float(lower.min(initial=np.inf)), op=MPI.MIN))
        sampled = values[bad] @ self._lattice_values.T  # actual values of the polynomial
        elevated = (values[bad] @ self._elevation.T).min(axis=1)  # tighter lower bounds
        lower[bad] = elevated
        dips = sampled.min(axis=1) < min_density - tol if bad.size else np.zeros(0, bool)
        ndips = int(comm.allreduce(int(dips.sum()), op=MPI.SUM))
        advice = "use a finer mesh (mesh.n or mesh.h) or a lower solver.degree, or raise 'floor'"
        if ndips:
            cells = bad[dips]
            gdim = self.V.mesh.geometry.dim
            vertices = self._cell_vertices(cells)[:, :, :gdim]
            where = np.einsum("ml,cld->cmd", self._lattice_lambda, vertices)
            found = global_minimum(sampled[dips].ravel(), where.reshape(-1, where.shape[-1]), comm)
            assert found is not None  # ndips > 0: some rank has values
            vmin, point, scale = found
            raise ValueError(
                f"{role} density: its P{k} interpolant reaches {vmin:.6g} at "
                f"{format_point(point, scale)}, below min_density {min_density:g}, inside "
                f"{ndips} cell{'s' if ndips > 1 else ''} (between the nodes, where the density "
                f"itself is checked); {advice}"
            )
        msh = self.V.mesh
        nodes = msh.geometry.dofmaps[0][: self._ncells]
        centres = msh.geometry.x[nodes].mean(axis=1)[:, : msh.geometry.dim]
        found = global_minimum(lower, centres, comm)
        assert found is not None
        bound, centre, scale = found
        if bound < min_density - tol:
            nunc = int(comm.allreduce(int(np.count_nonzero(elevated < min_density - tol)), MPI.SUM))
            raise ValueError(
                f"{role} density: its P{k} interpolant cannot be certified >= min_density "
                f"{min_density:g} on {nunc} cell{'s' if nunc > 1 else ''} (Bernstein lower bound "
                f"{bound:.6g} in the cell centred at {format_point(centre, scale)}); {advice}"
            )
        return float(bound)


class QuadratureRHS:
    """The right-hand side ``b_i = ∫ (p1 − p0) w_i dx`` with the densities' own quadrature.

    The form is compiled once; :meth:`assemble` copies ``q1 − q0`` into its coefficient, so a
    sweep reuses it for every parameter. Collective.

    Args:
        points: Where the densities were evaluated (same ``V`` and quadrature).
    """

    def __init__(self, points: DensityPoints) -> None:
        self.points = points
        self.f = fem.Function(points.Q, name="rhs")
        w = ufl.TestFunction(points.V)
        self.form = fem.form(self.f * w * points.dx)

    def assemble(
        self, p0: DiscreteDensity, p1: DiscreteDensity, b: PETSc.Vec | None = None
    ) -> PETSc.Vec:
        """Assemble ``∫ (q1 − q0) w dx`` into ``b`` (created when ``None``); ghosts summed."""
        np.subtract(p1.q.x.array, p0.q.x.array, out=self.f.x.array)  # no temporary
        if b is None:
            b = dolfinx.fem.petsc.create_vector(self.points.V)
        with b.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(b, self.form)
        b.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        return b
