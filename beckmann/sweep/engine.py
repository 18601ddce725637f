r"""The per-group solve engine: one mesh, one operator, many right-hand sides.

The operator of the Neumann solve (:mod:`beckmann.poisson`) depends only on the mesh, never on
:math:`\theta` (docs/math.md), so an :class:`Engine` builds the mesh, the stiffness matrix, the
preconditioner or LU factorisation and the density points
(:class:`~beckmann.density.discrete.DensityPoints`) **once**; per :math:`\theta` it discretises
the densities exactly as ``beckmann solve`` does (:func:`beckmann.pipeline.discretise_density`:
values at the quadrature points, quadrature mass, certified interpolant), assembles
:math:`b = \int (p_1 - p_0)\,w\,dx` with the same quadrature
(:class:`~beckmann.density.discrete.QuadratureRHS`, compiled once) and solves. With
``solver.method = "mumps"``, ``[sweep] block`` right-hand sides are solved together by one
``MatMatSolve`` with the factorisation (BLAS-3 triangular solves); with multigrid each solve
starts from the previous :math:`\theta`'s potential (``warm_start``). The flux
:math:`F = \nabla\varphi` is the sparse cell-local map :func:`beckmann.fields.gradient_matrix`
applied to the potential's values.

**Targets polynomial in θ** (the affine path, ``affine=True``, what ``run_sweep`` asks for): when
every θ-dependent density is an expression that :func:`beckmann.density.parametric.polynomial`
splits as ``f(x; θ) = Σ_k θ^{e_k} f_k(x)`` (a sum of products of θ-free sub-trees and powers of
the parameters, e.g. ``(1 + θ) g(x) + θ h(x) + 3``), the fields ``f_k`` are evaluated once at the
nodes and quadrature points, their right-hand sides ``b_k`` assembled and solved once
(``φ_k``), and each θ costs no solve: with ``Z(θ)`` its mass, ``b(θ) = Σ_k θ^{e_k} b_k / Z(θ) −
b_0`` and ``φ(θ) = Σ_k θ^{e_k} φ_k / Z(θ) − φ_0`` exactly (the solve is linear). The density at θ
is still formed (``Σ_k θ^{e_k} f_k`` at the nodes and quadrature points) and checked, certified
and integrated as a single solve does it, and each θ's summary row gives the relative residual of
the combination (``iterations`` 0). Memory: the fields, at most :data:`AFFINE_CACHE_BYTES`.

**The solver method when the user chose none** (``auto_method``, the CLI's default): MUMPS,
factorised once with every right-hand side a back-solve, when the group has at least
:data:`MUMPS_MIN_SOLVES` solves to do and at most :data:`MUMPS_MAX_DOFS` dofs (2M in 2D, 200k in
3D); ``"auto"`` otherwise (geometric multigrid for P1 on the unit square, else GAMG), in
particular for the affine path (one solve per term).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann import density
from beckmann import mesh as bmesh
from beckmann._dolfinx import MPI, PETSc, dolfinx, fem
from beckmann._mpi import allreduce_array, global_bbox
from beckmann.density.discrete import DensityPoints, DiscreteDensity, QuadratureRHS
from beckmann.density.parametric import PolynomialForm, bind, polynomial
from beckmann.fields import gradient_matrix
from beckmann.pipeline import discretise_density
from beckmann.poisson import NeumannPoisson
from beckmann.sweep.grid import Grid

__all__ = ["Engine", "Solved", "choose_method", "split_groups"]

FloatArray = npt.NDArray[np.float64]

#: Largest memory (bytes) for the cached quadrature points of θ-dependent densities.
QPOINTS_CACHE_BYTES = 1 << 29

#: Largest memory (bytes) for the θ-independent fields of a polynomial-in-θ density (the
#: fields at the nodes and quadrature points, one set per term).
AFFINE_CACHE_BYTES = 1 << 30

#: ``solver.method`` not chosen: MUMPS (one factorisation, every θ a back-solve) up to this many
#: dofs per geometric dimension (its fill grows faster in 3D), GAMG above.
MUMPS_MAX_DOFS = {2: 2_000_000, 3: 200_000}

#: ``solver.method`` not chosen: MUMPS only for at least this many solves (its factorisation
#: costs about as much as this many GAMG solves at 263k P1 dofs).
MUMPS_MIN_SOLVES = 16

#: One solved θ: owned potential values, owned flux values ``(n, d)``, the summary row.
Solved = tuple[FloatArray, FloatArray, dict[str, Any]]


def split_groups(comm: MPI.Comm, group_size: int) -> tuple[MPI.Comm, int, int]:
    """Split ``comm`` into groups; return ``(group_comm, group_index, n_groups)``. Collective.

    ``group_size = 0`` makes one group of all ranks.

    Raises:
        ValueError: ``group_size`` does not divide the number of ranks (on every rank).
    """
    size = comm.size
    g = size if group_size == 0 else group_size
    if g > size or size % g:
        raise ValueError(f"sweep group size {group_size} must divide the number of ranks ({size})")
    color = comm.rank // g
    return comm.Split(color, comm.rank), color, size // g


def choose_method(ndofs: int, gdim: int, nsolves: int) -> str:
    """``solver.method`` of a sweep whose user did not choose one.

    ``"mumps"`` (factorised once, a back-solve per right-hand side) for at least
    :data:`MUMPS_MIN_SOLVES` solves of at most :data:`MUMPS_MAX_DOFS` dofs, else ``"auto"``
    (multigrid: geometric where the mesh has the grid hierarchy, else algebraic).
    """
    if nsolves >= MUMPS_MIN_SOLVES and ndofs <= MUMPS_MAX_DOFS.get(gdim, 0):
        return "mumps"
    return "auto"


def depends_on(section: dict[str, Any], names: list[str]) -> bool:
    """``True`` when a density section is an expression using one of the parameters ``names``."""
    return section["kind"] == "expression" and bool(
        set(names) & density.Expression(section["expr"]).parameter_names
    )


class Engine:
    """Mesh, operator, factorisation and density evaluators of one group. Collective on comm.

    Args:
        cfg: The resolved config (mesh, densities, solver).
        grid: The sweep's parameter grid (θ number ``i`` is ``grid.theta(i)``).
        comm: The group's communicator.
        block: Right-hand sides per MUMPS block solve.
        warm_start: GAMG: start each solve from the previous potential.
        affine: Use the polynomial decomposition of θ-dependent expression densities when they
            have one (:meth:`prepare_affine`, :meth:`solve_block`).
        auto_method: The user did not choose ``solver.method``: pick it
            (:func:`choose_method`) for this many θ of the group.
    """

    def __init__(
        self,
        cfg: dict[str, Any],
        grid: Grid,
        comm: MPI.Comm,
        *,
        block: int = 16,
        warm_start: bool = True,
        affine: bool = False,
        auto_method: int | None = None,
    ) -> None:
        self.comm = comm
        self.cfg = cfg
        self.grid = grid
        degree = cfg["solver"]["degree"]
        if degree not in (1, 2, 3):
            raise ValueError(f"solver.degree must be 1, 2 or 3, got {degree!r}")
        self.msh = bmesh.create_mesh(cfg["mesh"], comm)
        msh = self.msh
        self.degree = degree
        self.gdim = msh.geometry.dim
        self.V = fem.functionspace(msh, ("Lagrange", degree))
        V = self.V
        self.nloc = V.dofmap.index_map.size_local
        self.x = V.tabulate_dof_coordinates()[: self.nloc]
        self.points = DensityPoints(
            V, cfg["solver"]["quadrature_degree"], (cfg["source"], cfg["target"])
        )
        self.forms = self._polynomial_forms(cfg, grid) if affine else {}
        method = cfg["solver"]["method"]
        if auto_method is not None:
            nsolves = auto_method
            if self.forms:  # one solve per term, one per fixed density
                nsolves = sum(map(len, self.forms.values())) + 1
            ndofs = V.dofmap.index_map.size_global * V.dofmap.index_map_bs
            method = choose_method(ndofs, self.gdim, nsolves)
        self.poisson = NeumannPoisson(
            V,
            method=method,
            rtol=cfg["solver"]["rtol"],
            petsc_options=cfg["solver"]["petsc_options"],
        )
        self.b = dolfinx.fem.petsc.create_vector(V)
        self.Aphi = self.poisson.A.createVecLeft()
        self.block = block if self.poisson.method == "mumps" else 1
        if self.poisson.method != "mumps" and warm_start:
            self.poisson.ksp.setInitialGuessNonzero(True)
        # Densities: expressions in θ are discretised per θ; the rest once.
        self.quadrature_rhs = QuadratureRHS(self.points)
        bbox = global_bbox(msh.geometry.x[:, : self.gdim], comm)
        self.ev: dict[str, Any] = {}
        self.fixed: dict[str, DiscreteDensity] = {}
        for role in ("source", "target"):
            sec = cfg[role]
            if depends_on(sec, grid.names):
                self.ev[role] = density.make_evaluator(sec, gdim=self.gdim, bbox=bbox)
            else:
                self.fixed[role] = discretise_density(sec, role, self.points)
        # the quadrature points of the θ-dependent densities, once (DensityPoints recomputes
        # them per call to save memory: 0.45 s of every θ at 263k P1 dofs); skipped above
        # QPOINTS_CACHE_BYTES, where each θ recomputes them as a single solve does
        nq = self.points.Q.dofmap.index_map.size_local * self.points.Q.dofmap.index_map_bs
        self._qpts: FloatArray | None = None
        if self.ev and 24 * nq <= QPOINTS_CACHE_BYTES:
            self._qpts = self.points.qpoints
        self.G, self.W = gradient_matrix(V)
        self.phi = fem.Function(V, name="potential")
        self._basis: tuple[FloatArray, FloatArray] | None = None
        self._fields: dict[str, tuple[FloatArray, FloatArray]] = {}
        if self.forms and self._qpts is None:  # no room for the quadrature points either
            self.forms = {}
        for role, form in self.forms.items():  # θ-independent fields, once
            nodal, quad = form.fields(self.points.nodes), form.fields(self._qpts)
            floor = float(cfg[role].get("floor", 0.0))
            if floor != 0.0:  # the evaluator adds the floor to every value: one more term
                nodal = np.vstack([nodal, np.full(nodal.shape[1], floor)])
                quad = np.vstack([quad, np.full(quad.shape[1], floor)])
            self._fields[role] = (nodal, quad)
        # other expressions in θ: their θ-free sub-trees at the nodes and quadrature points, once
        self._bound: dict[str, tuple[Any, Any]] = {}
        for role in self.ev:
            sec = cfg[role]
            if role in self.forms or sec["kind"] != "expression" or self._qpts is None:
                continue
            fixed = {k: v for k, v in sec.get("params", {}).items() if k not in grid.names}
            expr = density.Expression(sec["expr"])
            pair = [bind(expr, pts, grid.names, fixed) for pts in (self.points.nodes, self._qpts)]
            if pair[0] is not None and pair[1] is not None:
                self._bound[role] = (pair[0], pair[1])
        # the discretised density of the affine path, reused for every θ
        self._work = {
            role: (fem.Function(V, name=role), fem.Function(self.points.Q, name=f"{role}_q"))
            for role in self.forms
        }

    def _polynomial_forms(self, cfg: dict[str, Any], grid: Grid) -> dict[str, PolynomialForm]:
        """The decomposition of every θ-dependent density, or none (``{}``) if one has none.

        Also ``{}`` when the fields at the nodes and quadrature points would take more than
        :data:`AFFINE_CACHE_BYTES`.
        """
        forms: dict[str, PolynomialForm] = {}
        for role in ("source", "target"):
            sec = cfg[role]
            if not depends_on(sec, grid.names):
                continue
            fixed = {k: v for k, v in sec.get("params", {}).items() if k not in grid.names}
            form = polynomial(density.Expression(sec["expr"]), grid.names, fixed)
            if form is None:
                return {}
            forms[role] = form
        nq = self.points.Q.dofmap.index_map.size_local * self.points.Q.dofmap.index_map_bs
        nodes = self.points.nodes.shape[1]
        if 8 * sum(map(len, forms.values())) * (nq + nodes) > AFFINE_CACHE_BYTES:
            return {}
        return forms

    # -- densities
    def _coefficients(self, role: str, theta: dict[str, float]) -> FloatArray:
        """The weights of the θ-independent fields of ``role`` at θ (the floor's last)."""
        a = self.forms[role].coefficients(theta)
        return a if self._fields[role][0].shape[0] == a.size else np.append(a, 1.0)

    def raw(self, role: str, theta: dict[str, float]) -> FloatArray:
        """Raw (unnormalised) values of a θ-dependent density at the owned dofs."""
        if role in self.forms:
            with np.errstate(all="ignore"):
                return self._coefficients(role, theta) @ self._fields[role][0][:, : self.nloc]
        with np.errstate(all="ignore"):  # non-finite values are reported by check()
            v = self.ev[role](self.x.T.copy(), theta)
        return np.asarray(np.broadcast_to(v, (self.nloc,)), dtype=np.float64)

    def check(self, i: int) -> None:
        """Check both θ-dependent densities of θ ``i``; collective, the message names θ."""
        for role in self.ev:
            try:
                density.check_values(
                    self.raw(role, self.grid.theta(i)),
                    self.x,
                    role=role,
                    min_density=self.cfg[role]["min_density"],
                    comm=self.comm,
                )
            except ValueError as err:
                raise ValueError(f"{self.grid.label(i)}: {err}") from err

    def density(self, role: str, theta: dict[str, float], label: str) -> DiscreteDensity:
        """The discretised density of θ (normalised, certified); collective.

        The same discretisation as a single solve (:func:`beckmann.pipeline.discretise_density`
        on the same points), so every θ of a sweep equals ``beckmann solve`` at that θ.

        Raises:
            ValueError: As :func:`~beckmann.pipeline.discretise_density`, prefixed by ``label``.
        """
        if role in self.fixed:
            return self.fixed[role]
        try:
            if self._qpts is None:
                return discretise_density(self.cfg[role], role, self.points, params=theta)
            ev = self.ev[role]
            with np.errstate(all="ignore"):  # non-finite values are reported by discretise
                if role in self._bound:  # θ-free sub-trees evaluated once (__init__)
                    floor = ev.floor
                    nodal, quad = (f(theta) + floor for f in self._bound[role])
                else:
                    nodal, quad = ev(self.points.nodes, theta), ev(self._qpts, theta)
            d = self.points.discretise(
                nodal, quad, role=role, min_density=self.cfg[role]["min_density"]
            )
            d.description = dict(ev.description)
            return d
        except ValueError as err:
            raise ValueError(f"{label}: {err}") from err

    def rhs(self, p0: DiscreteDensity, p1: DiscreteDensity) -> FloatArray:
        """Owned values of ``b = ∫ (p1 − p0) w dx`` (quadrature), orthogonal to the constants.

        Collective.
        """
        self.quadrature_rhs.assemble(p0, p1, self.b)
        self.poisson.nullspace.remove(self.b)
        return self.b.array.copy()

    # -- solves
    def solve_rhs(self, bs: list[FloatArray]) -> tuple[list[FloatArray], int]:
        """Potentials (owned values, mean zero) of assembled right-hand sides; collective.

        Returns the potentials and the iteration count of the last solve (1 for direct solves).
        """
        P = self.poisson
        if len(bs) > 1:
            X = self._block_solve(bs)
            out = []
            for x in X:
                self.phi.x.array[: self.nloc] = x
                self.phi.x.scatter_forward()
                P.remove_mean(self.phi)
                out.append(self.phi.x.array[: self.nloc].copy())
            return out, 1
        out = []
        for b in bs:
            self.b.array[:] = b
            P.solve_vector(self.b, self.phi)  # warm start: phi holds the previous θ
            out.append(self.phi.x.array[: self.nloc].copy())
        return out, P.iterations

    def _block_solve(self, bs: list[FloatArray]) -> list[FloatArray]:
        P = self.poisson
        B = PETSc.Mat().createDense(
            [(self.nloc, P.ndofs), (PETSc.DECIDE, len(bs))], comm=self.comm
        )
        B.setUp()
        B.getDenseArray()[:, :] = np.column_stack(bs)
        B.assemble()
        Xm = B.duplicate()
        try:
            P.ksp.getPC().getFactorMatrix().matSolve(B, Xm)
        except PETSc.Error as err:
            raise RuntimeError(
                f"the MUMPS block solve of {len(bs)} right-hand sides failed"
            ) from err
        arr = Xm.getDenseArray()
        X = [arr[:, j].copy() for j in range(len(bs))]
        B.destroy()
        Xm.destroy()
        return X

    def flux(self, phi: FloatArray) -> FloatArray:
        """Owned flux values ``(n, d)`` of owned potential values; collective (ghost update)."""
        self.phi.x.array[: self.nloc] = phi
        self.phi.x.scatter_forward()
        return np.asarray(self.G @ self.phi.x.array).reshape(-1, self.gdim)

    def scalars(self, phi: FloatArray, b: FloatArray, flux: FloatArray) -> dict[str, float]:
        """Cost ``½ φᵀAφ``, relative residual, sup of φ and of ``|F|``; collective."""
        self.phi.x.array[: self.nloc] = phi
        self.phi.x.scatter_forward()
        P = self.poisson
        P.A.mult(self.phi.x.petsc_vec, self.Aphi)
        cost = 0.5 * self.Aphi.dot(self.phi.x.petsc_vec)
        self.b.array[:] = b
        nb = self.b.norm()
        self.Aphi.axpy(-1.0, self.b)
        fn = np.sqrt(np.einsum("ij,ij->i", flux, flux).max(initial=0.0))
        sups = allreduce_array([np.abs(phi).max(initial=0.0), fn], MPI.MAX, self.comm)
        return {
            "beckmann_cost": float(cost),
            "residual": float(self.Aphi.norm() / nb) if nb > 0 else 0.0,
            "phi_sup": float(sups[0]),
            "flux_sup": float(sups[1]),
        }

    # -- the affine path: densities polynomial in θ
    def _assemble_values(self, quad: FloatArray) -> FloatArray:
        """Owned values of ``∫ f w dx`` of values ``f`` at the quadrature points; collective.

        The quadrature of :meth:`rhs`, orthogonal to the constants.
        """
        rhs = self.quadrature_rhs
        rhs.f.x.array[:] = quad
        with self.b.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(self.b, rhs.form)
        self.b.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        raw = self.b.norm()
        self.poisson.nullspace.remove(self.b)
        if self.b.norm() <= 1e-12 * raw:  # a constant field: only round-off is left
            return np.zeros(self.nloc)
        return self.b.array.copy()

    def _prepare_affine(self) -> None:
        """Right-hand side and potential of every θ-independent field; collective.

        Columns: the fields of each θ-dependent density (its terms, then its floor), then one
        column ``∫ (q1 − q0) w`` of the fixed densities. A column that is round-off after
        projection on the mean-zero vectors (a constant field) has potential zero. Each θ's
        relative residual (its summary row) is that of the combination.
        """
        cols: list[FloatArray] = []
        self._slots: dict[str, slice] = {}
        for role, (_, quad) in self._fields.items():
            self._slots[role] = slice(len(cols), len(cols) + quad.shape[0])
            cols += [self._assemble_values(q) for q in quad]
        fixed = np.zeros(self._qpts.shape[1] if self._qpts is not None else 0)
        if "target" in self.fixed:
            fixed = fixed + self.fixed["target"].q.x.array[: fixed.size]
        if "source" in self.fixed:
            fixed = fixed - self.fixed["source"].q.x.array[: fixed.size]
        cols.append(self._assemble_values(fixed))
        P = self.poisson
        nonzero = [j for j, c in enumerate(cols) if self.comm.allreduce(bool(c.any()), MPI.LOR)]
        phis = [np.zeros(self.nloc) for _ in cols]
        if P.method == "mumps" and nonzero:
            for j, phi in zip(nonzero, self.solve_rhs([cols[j] for j in nonzero])[0], strict=True):
                phis[j] = phi
        else:
            for j in nonzero:
                self.phi.x.array[:] = 0.0  # unrelated columns: no warm start
                phis[j] = self.solve_rhs([cols[j]])[0][0]
        self._basis = (np.column_stack(cols), np.column_stack(phis))

    def _affine_block(self, idx: list[int]) -> list[Solved]:
        """:meth:`solve_block` by combinations of the columns' potentials (no solve per θ)."""
        if self._basis is None:
            self._prepare_affine()
        assert self._basis is not None
        B, PHI = self._basis
        out = []
        for i in idx:
            t0 = time.perf_counter()
            theta, label = self.grid.theta(i), self.grid.label(i)
            w = np.zeros(B.shape[1])
            w[-1] = 1.0
            mass = {}
            for role in ("target", "source"):
                if role not in self.forms:
                    mass[role] = self.fixed[role].mass
                    continue
                a = self._coefficients(role, theta)
                nodal, quad = self._fields[role]
                p, q = self._work[role]
                try:
                    with np.errstate(all="ignore"):  # non-finite values: discretise reports
                        np.dot(a, nodal, out=p.x.array)
                        np.dot(a, quad, out=q.x.array)
                        d = self.points.discretise(
                            p.x.array,
                            q.x.array,
                            role=role,
                            min_density=self.cfg[role]["min_density"],
                            out=(p, q),
                        )
                except ValueError as err:
                    raise ValueError(f"{label}: {err}") from err
                mass[role] = d.mass
                w[self._slots[role]] = (1.0 if role == "target" else -1.0) * a / d.mass
            b, phi = B @ w, PHI @ w
            flux = self.flux(phi)
            row = {"index": i, "theta": theta, "mass_target": mass["target"],
                   "mass_source": mass["source"], "iterations": 0,
                   **self.scalars(phi, b, flux)}  # fmt: skip
            row["seconds"] = time.perf_counter() - t0
            out.append((phi, flux, row))
        return out

    def solve_block(self, idx: list[int]) -> list[Solved]:
        """Solve for the θ numbers ``idx``; return ``(phi_owned, flux_owned, row)`` each.

        With the affine path (:attr:`forms`), no θ is solved: its potential is the combination
        ``Σ_k c_k(θ) φ_k`` of the potentials of the θ-independent fields (solved once), with
        ``c_k`` the monomials of θ over the density's mass at θ; the density at θ is still
        discretised and checked as a single solve does it.
        """
        if self.forms:
            return self._affine_block(idx)
        t0 = time.perf_counter()
        bs: list[FloatArray] = []
        rows: list[dict[str, Any]] = []
        for i in idx:
            theta, label = self.grid.theta(i), self.grid.label(i)
            d1 = self.density("target", theta, label)
            d0 = self.density("source", theta, label)
            bs.append(self.rhs(d0, d1))
            rows.append(
                {"index": i, "theta": theta, "mass_target": d1.mass, "mass_source": d0.mass}
            )
        phis, its = self.solve_rhs(bs)
        out = []
        for phi, b, row in zip(phis, bs, rows, strict=True):
            flux = self.flux(phi)
            row.update({"iterations": its, **self.scalars(phi, b, flux)})
            out.append((phi, flux, row))
        dt = (time.perf_counter() - t0) / len(idx)
        for r in rows:
            r["seconds"] = dt
        return out

    def destroy(self) -> None:
        """Free the PETSc objects."""
        self.poisson.destroy()
        for obj in (self.b, self.Aphi):
            obj.destroy()
