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
``MatMatSolve`` with the factorisation (BLAS-3 triangular solves); with ``"gamg"`` each solve
starts from the previous :math:`\theta`'s potential (``warm_start``). The flux
:math:`F = \nabla\varphi` is the sparse cell-local map :func:`beckmann.fields.gradient_matrix`
applied to the potential's values.
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
from beckmann.fields import gradient_matrix
from beckmann.pipeline import discretise_density
from beckmann.poisson import NeumannPoisson
from beckmann.sweep.grid import Grid

__all__ = ["Engine", "Solved", "split_groups"]

FloatArray = npt.NDArray[np.float64]

#: Largest memory (bytes) for the cached quadrature points of θ-dependent densities.
QPOINTS_CACHE_BYTES = 1 << 29

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
    """

    def __init__(
        self,
        cfg: dict[str, Any],
        grid: Grid,
        comm: MPI.Comm,
        *,
        block: int = 16,
        warm_start: bool = True,
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
        self.poisson = NeumannPoisson(
            V,
            method=cfg["solver"]["method"],
            rtol=cfg["solver"]["rtol"],
            petsc_options=cfg["solver"]["petsc_options"],
        )
        self.b = dolfinx.fem.petsc.create_vector(V)
        self.Aphi = self.poisson.A.createVecLeft()
        self.block = block if self.poisson.method == "mumps" else 1
        if self.poisson.method != "mumps" and warm_start:
            self.poisson.ksp.setInitialGuessNonzero(True)
        # Densities: expressions in θ are discretised per θ; the rest once.
        self.points = DensityPoints(V, cfg["solver"]["quadrature_degree"])
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

    # -- densities
    def raw(self, role: str, theta: dict[str, float]) -> FloatArray:
        """Raw (unnormalised) values of a θ-dependent density at the owned dofs."""
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
        fn = np.sqrt((flux**2).sum(axis=1)).max(initial=0.0)
        sups = allreduce_array([np.abs(phi).max(initial=0.0), fn], MPI.MAX, self.comm)
        return {
            "beckmann_cost": float(cost),
            "residual": float(self.Aphi.norm() / nb) if nb > 0 else 0.0,
            "phi_sup": float(sups[0]),
            "flux_sup": float(sups[1]),
        }

    def solve_block(self, idx: list[int]) -> list[Solved]:
        """Solve for the θ numbers ``idx``; return ``(phi_owned, flux_owned, row)`` each."""
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
