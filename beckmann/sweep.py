r"""Parametric sweeps: many targets :math:`p_1(x;\theta)` on one operator, resumable, over MPI.

The operator of the Neumann solve (:mod:`beckmann.poisson`) depends only on the mesh, never on
:math:`\theta` (MATH.md §4), so a sweep builds the mesh, the stiffness and mass matrices and the
preconditioner or LU factorisation **once**; per :math:`\theta` it only evaluates the densities at
the degrees of freedom, forms :math:`b = M(p_1 - p_0)` (equal to the run's assembled right-hand
side :math:`\int (p_1-p_0) w\,dx`, since the mass matrix integrates the product exactly) and
solves. With ``solver.method = "mumps"``, ``[sweep] block`` right-hand sides are solved together
by one ``MatMatSolve`` with the factorisation (BLAS-3 triangular solves); with ``"gamg"`` each
solve starts from the previous :math:`\theta`'s potential (``warm_start``).

Config (``[sweep]``; the rest of the file is a normal run config)::

    [sweep.parameters]
    theta = { linspace = [0.3, 0.7, 8] }   # or [0.3, 0.5], { random = [a, b, n], seed = 1 },
    s = [0.02, 0.05]                        # or { lhs = [a, b, n], seed = 2 }
    [sweep]
    group_size = 1      # ranks per group; 0 = one group of all ranks
    block = 16          # right-hand sides per MUMPS block solve
    continuity_holder = false   # true: the report adds C^{k,α} norms of θ-differences
    holder_k = 0        # φ in C^{k+2,α}, F in C^{k+1,α}, p1 − p0 in C^{k,α} (MATH.md §4)
    holder_alpha = 0.5
    holder_pairs = 12   # at most this many θ pairs (one derivative recovery per pair)

The grid is the product of the parameters' grids, first parameter slowest; parameters given as
``lhs`` form one joint Latin-hypercube design (they must have the same ``n``) that enters the
product as one axis. ``random`` values are sorted. Every grid name must be a parameter of the
target or source expression, and every expression parameter needs a value (from the grid or the
section's ``params``).

Parallel: the world communicator is split (``comm.Split``) into groups of ``group_size`` ranks;
each group builds its own mesh and solver on its sub-communicator and solves a contiguous share
of the pending :math:`\theta`.

Store (``--out DIR``)::

    sweep.json            config, parameter names, the grid, the interpolation axes
    layout/mesh.xdmf      the mesh (written once)
    layout/layout.h5      dof coordinates of the potential space, keys of the flux values
    theta/000017.h5       one finished θ: potential, flux (both in layout order), summary row
    summary.json          every row, timings, the continuity-in-θ report (at the end)

Each θ file is written by its group's first rank as ``000017.h5.part`` and renamed into place
(``os.replace`` is atomic), so ``kill -9`` leaves complete entries and at most some ``.part``
files, which ``--resume`` deletes; PyPI's h5py is serial, and one file per θ needs neither
parallel HDF5 nor a lock. Values are stored in the order of the layout's dof coordinates (as in
:mod:`beckmann.io`), so a store reloads on any number of ranks.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann import __version__
from beckmann._dolfinx import MPI, PETSc, dolfinx, fem, ufl

__all__ = [
    "SWEEP_OPTIONS",
    "Grid",
    "SweepStore",
    "continuity_report",
    "make_grid",
    "parse_sweep",
    "probe_cli",
    "register_cli",
    "run_sweep",
]

FloatArray = npt.NDArray[np.float64]

#: ``[sweep]`` keys besides ``parameters``: (type, default, help).
SWEEP_OPTIONS: dict[str, tuple[type, Any, str]] = {
    "group_size": (int, 0, "ranks per group solving a share of θ; 0 = all ranks in one group"),
    "block": (int, 16, "right-hand sides per MUMPS block solve (MatMatSolve); 1 = one by one"),
    "warm_start": (bool, True, "GAMG: start each solve from the previous θ's potential"),
    "store_flux": (bool, True, "store the flux F = grad φ of every θ (DG_{k-1} values)"),
    "continuity": (bool, True, "compute the continuity-in-θ report at the end"),
    "joint_points": (int, 20000, "points (x, θ) for the joint Hölder estimate"),
    "continuity_holder": (
        bool,
        False,
        "add C^{k,α} norms of φ(θ) − φ(θ'), F(θ) − F(θ') and p(θ) − p(θ') (costly: field "
        "recovery per pair)",
    ),
    "holder_k": (int, 0, "k of MATH.md §4: φ in C^{k+2,α}, F in C^{k+1,α}, p1 − p0 in C^{k,α}"),
    "holder_alpha": (float, 0.5, "Hölder exponent α in (0, 1] of the C^{k,α} norms"),
    "holder_pairs": (int, 12, "at most this many θ pairs for the C^{k,α} norms"),
}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = {"x", "y", "z", "pi", "e"}
_STORE_FORMAT = "beckmann-sweep"
_STORE_VERSION = 1


# --------------------------------------------------------------------------------- the grid
@dataclass
class Grid:
    """The parameter values of a sweep.

    Attributes:
        names: Parameter names, in config order.
        values: ``(K, m)`` array; row ``i`` is θ number ``i``.
        axes: For a product of 1-D grids, the sorted values of each parameter (used for
            interpolation); ``None`` when a joint (Latin-hypercube) design is part of the grid.
    """

    names: list[str]
    values: FloatArray
    axes: dict[str, list[float]] | None = None

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def theta(self, i: int) -> dict[str, float]:
        """θ number ``i`` as ``{name: value}``."""
        return {n: float(v) for n, v in zip(self.names, self.values[i], strict=True)}

    def label(self, i: int) -> str:
        """``θ #i (name=value, ...)`` for messages."""
        vals = ", ".join(f"{n}={v:.6g}" for n, v in self.theta(i).items())
        return f"θ #{i} ({vals})"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (stored in ``sweep.json``)."""
        return {"names": self.names, "values": self.values.tolist(), "axes": self.axes}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Grid:
        """Inverse of :meth:`to_json`."""
        vals = np.asarray(data["values"], dtype=np.float64).reshape(-1, len(data["names"]))
        return cls(list(data["names"]), vals, data.get("axes"))


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    return float(v)


def _count(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {v!r}")
    return int(v)


def _range_spec(name: str, key: str, spec: Any) -> tuple[float, float, int]:
    what = f"sweep parameter {name!r}: {key}"
    if not isinstance(spec, list) or len(spec) != 3:
        raise ValueError(f"{what} must be [low, high, count], got {spec!r}")
    lo, hi = _number(spec[0], f"{what} low"), _number(spec[1], f"{what} high")
    n = _count(spec[2], f"{what} count")
    if n == 0:
        raise ValueError(f"sweep parameter {name!r} has an empty grid ({key} count 0)")
    if key != "linspace" and not lo < hi:
        raise ValueError(f"{what} needs low < high, got {spec!r}")
    return lo, hi, n


def _seed(name: str, spec: dict[str, Any]) -> int:
    s = spec.get("seed", 0)
    if isinstance(s, bool) or not isinstance(s, int) or s < 0:
        raise ValueError(
            f"sweep parameter {name!r}: seed must be a non-negative integer, got {s!r}"
        )
    return int(s)


def _one_axis(name: str, spec: Any) -> tuple[str, FloatArray]:
    """Return ``(kind, values)`` of one parameter, kind ``"axis"`` or ``"lhs"``."""
    if isinstance(spec, list):
        if not spec:
            raise ValueError(f"sweep parameter {name!r} has an empty grid (empty list)")
        vals = np.array([_number(v, f"sweep parameter {name!r} value") for v in spec])
        if np.unique(vals).size != vals.size:
            raise ValueError(f"sweep parameter {name!r} repeats a value: {spec!r}")
        return "axis", vals
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return "axis", np.array([_number(spec, f"sweep parameter {name!r}")])
    if not isinstance(spec, dict):
        raise ValueError(
            f"sweep parameter {name!r} must be a list or a table with linspace, random or lhs, "
            f"got {spec!r}"
        )
    kinds = [k for k in ("linspace", "random", "lhs") if k in spec]
    extra = set(spec) - {"linspace", "random", "lhs", "seed"}
    if len(kinds) != 1 or extra:
        raise ValueError(
            f"sweep parameter {name!r} needs exactly one of linspace, random, lhs (and "
            f"optionally seed), got keys {sorted(spec)}"
        )
    kind = kinds[0]
    lo, hi, n = _range_spec(name, kind, spec[kind])
    if kind == "linspace":
        if n > 1 and lo == hi:
            raise ValueError(f"sweep parameter {name!r}: linspace {spec[kind]!r} repeats a value")
        return "axis", np.linspace(lo, hi, n)
    rng = np.random.default_rng(_seed(name, spec))
    if kind == "random":
        return "axis", np.sort(lo + (hi - lo) * rng.random(n))
    # One stratum per sample, strata visited in random order: a Latin-hypercube column.
    u = (rng.permutation(n) + rng.random(n)) / n
    return "lhs", lo + (hi - lo) * u


def make_grid(parameters: Any) -> Grid:
    """Build the grid of a ``[sweep.parameters]`` table (see the module docstring).

    Raises:
        ValueError: An empty grid, a bad name or value, or Latin-hypercube parameters of
            different sizes; the message names the parameter.
    """
    if not isinstance(parameters, dict) or not parameters:
        raise ValueError(
            "[sweep.parameters] is empty: give at least one parameter, e.g. "
            "theta = { linspace = [0.3, 0.7, 8] }"
        )
    names = list(parameters)
    for name in names:
        if not _NAME.match(name) or name in _RESERVED:
            raise ValueError(f"sweep parameter name {name!r} is not a valid free name")
    axes: list[tuple[list[str], FloatArray]] = []  # (names, (n, len(names)) values)
    lhs_names: list[str] = []
    lhs_cols: list[FloatArray] = []
    lhs_pos = -1
    for name in names:
        kind, vals = _one_axis(name, parameters[name])
        if kind == "lhs":
            if lhs_cols and vals.size != lhs_cols[0].size:
                raise ValueError(
                    f"sweep parameters {lhs_names[0]!r} and {name!r} form one Latin hypercube "
                    f"and need the same count, got {lhs_cols[0].size} and {vals.size}"
                )
            if lhs_pos < 0:
                lhs_pos = len(axes)
                axes.append(([], np.empty((0, 0))))  # placeholder
            lhs_names.append(name)
            lhs_cols.append(vals)
        else:
            axes.append(([name], vals.reshape(-1, 1)))
    if lhs_pos >= 0:
        axes[lhs_pos] = (lhs_names, np.column_stack(lhs_cols))
    order = [n for ax_names, _ in axes for n in ax_names]
    rows = [
        np.concatenate([axes[a][1][i] for a, i in enumerate(idx)])
        for idx in itertools.product(*(range(ax[1].shape[0]) for ax in axes))
    ]
    table = np.asarray(rows, dtype=np.float64).reshape(-1, len(order))
    perm = [order.index(n) for n in names]
    values = table[:, perm]
    product = all(len(ax_names) == 1 for ax_names, _ in axes)
    grid_axes = (
        {ax_names[0]: sorted(float(v) for v in vals[:, 0]) for ax_names, vals in axes}
        if product
        else None
    )
    return Grid(names, values, grid_axes)


# --------------------------------------------------------------------------------- the spec
@dataclass
class SweepSpec:
    """A validated ``[sweep]`` section.

    Attributes:
        grid: The parameter values.
        options: The other ``[sweep]`` keys, with defaults filled in.
    """

    grid: Grid
    options: dict[str, Any] = field(default_factory=dict)


def parse_sweep(cfg: dict[str, Any]) -> SweepSpec:
    """Validate the ``[sweep]`` section of a resolved config and build the grid.

    Also checks that every grid name is a parameter of the target or source expression and that
    every expression parameter has a value. Not collective (pure function of ``cfg``).

    Raises:
        ValueError: Naming the bad key, parameter or value.
    """
    from beckmann import density

    section = cfg.get("sweep")
    if not isinstance(section, dict):
        raise ValueError("the config has no [sweep] section; add [sweep.parameters]")
    unknown = set(section) - set(SWEEP_OPTIONS) - {"parameters"}
    if unknown:
        raise ValueError(
            f"unknown config key sweep.{sorted(unknown)[0]}; known in [sweep]: parameters, "
            f"{', '.join(SWEEP_OPTIONS)}"
        )
    options: dict[str, Any] = {}
    for key, (typ, default, _) in SWEEP_OPTIONS.items():
        value = section.get(key, default)
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ValueError(f"sweep.{key} must be of type {typ.__name__}, got {value!r}")
        options[key] = value
    if options["group_size"] < 0:
        raise ValueError(f"sweep.group_size must be >= 0, got {options['group_size']!r}")
    if options["block"] < 1:
        raise ValueError(f"sweep.block must be >= 1, got {options['block']!r}")
    if options["holder_k"] < 0:
        raise ValueError(f"sweep.holder_k must be >= 0, got {options['holder_k']!r}")
    if not 0.0 < options["holder_alpha"] <= 1.0:
        raise ValueError(f"sweep.holder_alpha must lie in (0, 1], got {options['holder_alpha']!r}")
    if options["holder_pairs"] < 1:
        raise ValueError(f"sweep.holder_pairs must be >= 1, got {options['holder_pairs']!r}")
    grid = make_grid(section.get("parameters"))
    used: dict[str, frozenset[str]] = {}
    for role in ("target", "source"):
        sec = cfg[role]
        if sec["kind"] == "expression":
            used[role] = density.Expression(sec["expr"]).parameter_names
        else:
            used[role] = frozenset()
    for name in grid.names:
        if not any(name in u for u in used.values()):
            uses = "; ".join(f"{r} uses: {', '.join(sorted(u)) or 'none'}" for r, u in used.items())
            raise ValueError(
                f"sweep parameter {name!r} is not used by the target or source expression ({uses})"
            )
    for role, names in used.items():
        given = set(grid.names) | set(cfg[role].get("params", {}))
        for p in sorted(names - given):
            raise ValueError(
                f"{role} expression parameter {p!r} has no value: give it in [{role}.params] "
                "or [sweep.parameters]"
            )
    return SweepSpec(grid, options)


# ------------------------------------------------------------------------------- collectives
def _agree(comm: MPI.Comm, message: str | None, exc: type[Exception] = ValueError) -> None:
    """Raise ``exc`` on every rank if any rank has a message (the lowest rank's)."""
    msgs = comm.allgather(message)
    first = next((m for m in msgs if m), None)
    if first:
        raise exc(first)


def _split(comm: MPI.Comm, group_size: int) -> tuple[MPI.Comm, int, int]:
    """Split ``comm`` into groups; return ``(group_comm, group_index, n_groups)``. Collective."""
    size = comm.size
    g = size if group_size == 0 else group_size
    if g > size or size % g:
        raise ValueError(f"sweep group size {group_size} must divide the number of ranks ({size})")
    color = comm.rank // g
    return comm.Split(color, comm.rank), color, size // g


# ------------------------------------------------------------------------------ the engine
class _Engine:
    """Mesh, operator, factorisation and density evaluators of one group. Collective on comm."""

    def __init__(self, cfg: dict[str, Any], spec: SweepSpec, comm: MPI.Comm) -> None:
        from scipy.sparse import csr_matrix

        from beckmann import density
        from beckmann import mesh as bmesh
        from beckmann.pipeline import _bbox, build_density
        from beckmann.poisson import NeumannPoisson

        self.comm = comm
        self.cfg = cfg
        self.grid = spec.grid
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
        u, w = ufl.TrialFunction(V), ufl.TestFunction(V)
        self.M = dolfinx.fem.petsc.assemble_matrix(fem.form(u * w * ufl.dx))
        self.M.assemble()
        self.m = self.poisson._m.array[: self.nloc].copy()  # ∫ w_i dx
        self.block = spec.options["block"] if self.poisson.method == "mumps" else 1
        if self.poisson.method != "mumps" and spec.options["warm_start"]:
            self.poisson.ksp.setInitialGuessNonzero(True)
        # Densities: expressions in θ are evaluated per θ; the rest is built once.
        bbox = _bbox(msh)
        self.ev: dict[str, Any] = {}
        self.fixed: dict[str, FloatArray] = {}
        self.fixed_mass: dict[str, float] = {}
        for role in ("source", "target"):
            sec = cfg[role]
            if (
                sec["kind"] == "expression"
                and set(self.grid.names) & density.Expression(sec["expr"]).parameter_names
            ):
                self.ev[role] = density.make_evaluator(sec, gdim=self.gdim, bbox=bbox)
            else:
                p, mass = build_density(sec, role, V)
                self.fixed[role] = p.x.array[: self.nloc].copy()
                self.fixed_mass[role] = mass
        # Flux F = grad φ in DG_{k-1}: a cell-local linear map, applied as a sparse matrix
        # (much cheaper per θ than re-running the interpolation kernel).
        self.W = fem.functionspace(msh, ("DG", degree - 1, (self.gdim,)))
        tdim = msh.topology.dim
        ncells = msh.topology.index_map(tdim).size_local
        cells = np.arange(ncells, dtype=np.int32)
        expr = fem.Expression(ufl.grad(u), self.W.element.interpolation_points)
        vals = expr.eval(msh, cells).reshape(ncells, -1, self.gdim, V.dofmap.list.shape[1])
        wdofs = self.W.dofmap.list[:ncells]  # (cell, point) -> block
        vdofs = V.dofmap.list[:ncells]
        d = self.gdim
        rows = np.broadcast_to(
            wdofs[:, :, None, None] * d + np.arange(d)[None, None, :, None], vals.shape
        )
        cols = np.broadcast_to(vdofs[:, None, None, :], vals.shape)
        nw = self.W.dofmap.index_map.size_local
        nv = V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts
        self.G = csr_matrix(
            (vals.ravel(), (rows.ravel().astype(np.int64), cols.ravel())), shape=(nw * d, nv)
        )
        self.G.sum_duplicates()
        # Keys that identify a flux value independently of the partition: dof point + cell
        # midpoint (DG dofs on a shared vertex differ by their cell).
        wx = self.W.tabulate_dof_coordinates()[:nw, :d]
        owner = np.empty(nw, dtype=np.int64)
        owner[wdofs.ravel()] = np.repeat(cells, wdofs.shape[1])
        mid = dolfinx.mesh.compute_midpoints(msh, tdim, cells)[:, :d]
        self.flux_keys = np.hstack([wx, mid[owner]]) if degree > 1 else mid[owner]
        self.phi = fem.Function(V, name="potential")
        self.b = self.M.createVecLeft()
        self.f = self.M.createVecRight()
        self.Aphi = self.M.createVecLeft()

    # -- densities
    def raw(self, role: str, i: int) -> FloatArray:
        """Raw (unnormalised) density values at the owned dofs for θ number ``i``."""
        with np.errstate(all="ignore"):
            v = self.ev[role](self.x.T.copy(), self.grid.theta(i))
        return np.asarray(np.broadcast_to(v, (self.nloc,)), dtype=np.float64)

    def check(self, i: int) -> None:
        """Check both θ-dependent densities of θ ``i``; collective, message names θ."""
        from beckmann import density

        for role in self.ev:
            try:
                density.check_values(
                    self.raw(role, i),
                    self.x,
                    role=role,
                    min_density=self.cfg[role]["min_density"],
                    comm=self.comm,
                )
            except ValueError as err:
                raise ValueError(f"{self.grid.label(i)}: {err}") from err

    def density(self, role: str, i: int) -> tuple[FloatArray, float]:
        """Normalised density at the owned dofs and its raw mass."""
        if role in self.fixed:
            return self.fixed[role], self.fixed_mass[role]
        v = self.raw(role, i)
        mass = float(self.comm.allreduce(float(self.m @ v), op=MPI.SUM))
        if not mass > 0:
            raise ValueError(
                f"{self.grid.label(i)}: {role} density has non-positive mass {mass:.6g}"
            )
        return v / mass, mass

    # -- solves
    def solve_block(self, idx: list[int]) -> list[tuple[FloatArray, FloatArray, dict[str, Any]]]:
        """Solve for the θ numbers ``idx``; return ``(phi_owned, flux_owned, row)`` each."""
        P = self.poisson
        bs: list[FloatArray] = []
        rows: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        for i in idx:
            p1, m1 = self.density("target", i)
            p0, m0 = self.density("source", i)
            self.f.array[:] = p1 - p0
            self.M.mult(self.f, self.b)
            P.nullspace.remove(self.b)
            bs.append(self.b.array.copy())
            rows.append(
                {"index": i, "theta": self.grid.theta(i), "mass_target": m1, "mass_source": m0}
            )
        X: list[FloatArray] = []
        if len(idx) > 1:
            N = P.ndofs
            B = PETSc.Mat().createDense([(self.nloc, N), (PETSc.DECIDE, len(idx))], comm=self.comm)
            B.setUp()
            B.getDenseArray()[:, :] = np.column_stack(bs)
            B.assemble()
            Xm = B.duplicate()
            try:
                P.ksp.getPC().getFactorMatrix().matSolve(B, Xm)
            except PETSc.Error as err:
                raise RuntimeError(
                    f"the MUMPS block solve of {self.grid.label(idx[0])} .. failed"
                ) from err
            arr = Xm.getDenseArray()
            X = [arr[:, j].copy() for j in range(len(idx))]
            B.destroy()
            Xm.destroy()
            its = 1
        out = []
        for j in range(len(idx)):
            self.b.array[:] = bs[j]
            if X:
                self.phi.x.array[: self.nloc] = X[j]
                self.phi.x.scatter_forward()
                P.remove_mean(self.phi)
            else:
                P.solve_vector(self.b, self.phi)  # warm start: phi holds the previous θ
                its = P.iterations
            phi = self.phi.x.array
            P.A.mult(self.phi.x.petsc_vec, self.Aphi)
            cost = 0.5 * self.Aphi.dot(self.phi.x.petsc_vec)
            self.Aphi.axpy(-1.0, self.b)
            nb = self.b.norm()
            flux = (self.G @ phi).reshape(-1, self.gdim)
            phi_sup = self.comm.allreduce(float(np.abs(phi[: self.nloc]).max(initial=0)), MPI.MAX)
            fn = np.sqrt((flux**2).sum(axis=1)).max(initial=0.0)
            flux_sup = self.comm.allreduce(float(fn), op=MPI.MAX)
            rows[j].update(
                {
                    "iterations": its,
                    "beckmann_cost": float(cost),
                    "residual": float(self.Aphi.norm() / nb) if nb > 0 else 0.0,
                    "phi_sup": phi_sup,
                    "flux_sup": flux_sup,
                }
            )
            out.append((phi[: self.nloc].copy(), flux, rows[j]))
        dt = (time.perf_counter() - t0) / len(idx)
        for r in rows:
            r["seconds"] = dt
        return out

    def destroy(self) -> None:
        """Free the PETSc objects."""
        self.poisson.destroy()
        for obj in (self.M, self.b, self.f, self.Aphi):
            obj.destroy()


# ------------------------------------------------------------------------------- the store
def _gather_rows(a: FloatArray, comm: MPI.Comm) -> FloatArray | None:
    """Gather row blocks on rank 0 of ``comm`` (rank order)."""
    parts = comm.gather(np.ascontiguousarray(a), root=0)
    return np.concatenate(parts) if parts is not None else None


def _write_h5_atomic(path: Path, datasets: dict[str, FloatArray], attrs: dict[str, Any]) -> None:
    import h5py

    tmp = path.with_name(path.name + ".part")
    with h5py.File(tmp, "w") as h5:
        for k, v in attrs.items():
            h5.attrs[k] = v
        for k, v in datasets.items():
            h5.create_dataset(k, data=v)
    os.replace(tmp, path)  # atomic: the entry appears complete or not at all


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    from beckmann.io import _jsonable

    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(_jsonable(data), indent=2) + "\n")
    os.replace(tmp, path)


def _theta_path(folder: Path, i: int) -> Path:
    return folder / "theta" / f"{i:06d}.h5"


def _completed(folder: Path, k: int) -> list[int]:
    """Indices of the stored θ (complete files only). Not collective."""
    tdir = folder / "theta"
    if not tdir.is_dir():
        return []
    done = []
    for name in os.listdir(tdir):
        if name.endswith(".h5") and name[:-3].isdigit():
            i = int(name[:-3])
            if i < k:
                done.append(i)
    return sorted(done)


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The parts of a config that determine the stored results (not the output settings)."""
    keep = {s: v for s, v in cfg.items() if s not in ("output",)}
    sweep = dict(keep.get("sweep", {}))
    for k in (
        "group_size",
        "continuity",
        "joint_points",
        "continuity_holder",
        "holder_k",
        "holder_alpha",
        "holder_pairs",
    ):
        sweep.pop(k, None)
    keep["sweep"] = sweep
    return json.loads(json.dumps(keep))


def _prepare_store(
    folder: Path, cfg: dict[str, Any], grid: Grid, resume: bool, comm: MPI.Comm
) -> list[int]:
    """Create or check the store on rank 0; return the pending θ indices. Collective."""
    err = None
    pending: list[int] = []
    if comm.rank == 0:
        try:
            meta_path = folder / "sweep.json"
            if meta_path.is_file():
                if not resume:
                    raise ValueError(
                        f"{str(folder)!r} already holds a sweep; pass --resume to continue it "
                        "or choose another --out"
                    )
                old = json.loads(meta_path.read_text())
                if old.get("format") != _STORE_FORMAT:
                    raise ValueError(f"{str(meta_path)!r} is not a beckmann sweep store")
                if _comparable(old["config"]) != _comparable(cfg):
                    raise ValueError(
                        f"--resume: the config differs from the one the sweep in {str(folder)!r} "
                        "was started with"
                    )
                if not np.array_equal(Grid.from_json(old["grid"]).values, grid.values):
                    raise ValueError(f"--resume: the grid differs from the one in {str(folder)!r}")
            elif folder.exists() and any(folder.iterdir()):
                raise ValueError(f"--out {str(folder)!r} exists and is not a sweep store")
            (folder / "theta").mkdir(parents=True, exist_ok=True)
            for name in os.listdir(folder / "theta"):
                if name.endswith(".part"):
                    os.remove(folder / "theta" / name)  # interrupted writes
            if (folder / "layout.part").exists():
                shutil.rmtree(folder / "layout.part")
            if not meta_path.is_file():
                _write_json_atomic(
                    meta_path,
                    {
                        "format": _STORE_FORMAT,
                        "version": _STORE_VERSION,
                        "beckmann": __version__,
                        "config": cfg,
                        "grid": grid.to_json(),
                    },
                )
            done = set(_completed(folder, len(grid)))
            pending = [i for i in range(len(grid)) if i not in done]
        except OSError as e:
            err = f"cannot prepare the sweep store {str(folder)!r}: {e}"
        except ValueError as e:
            err = str(e)
    err, pending = comm.bcast((err, pending), root=0)
    _agree(comm, err)
    return pending


def _write_layout(folder: Path, eng: _Engine, gcomm: MPI.Comm) -> None:
    """Group 0 writes mesh and dof layout once (``layout.part`` renamed to ``layout``)."""
    import h5py

    part = folder / "layout.part"
    if gcomm.rank == 0:
        part.mkdir(parents=True, exist_ok=True)
    gcomm.barrier()
    with dolfinx.io.XDMFFile(gcomm, str(part / "mesh.xdmf"), "w") as f:
        f.write_mesh(eng.msh)
    coords = _gather_rows(eng.x[:, : eng.gdim], gcomm)
    keys = _gather_rows(eng.flux_keys, gcomm)
    if gcomm.rank == 0:
        with h5py.File(part / "layout.h5", "w") as h5:
            h5.attrs["degree"] = eng.degree
            h5.attrs["gdim"] = eng.gdim
            h5.create_dataset("dof_coordinates", data=coords)
            h5.create_dataset("flux_keys", data=keys)
        os.replace(part, folder / "layout")


def _read_layout(folder: Path) -> tuple[FloatArray, FloatArray]:
    import h5py

    with h5py.File(folder / "layout" / "layout.h5", "r") as h5:
        return h5["dof_coordinates"][:], h5["flux_keys"][:]


def _permutation(stored: FloatArray, mine: FloatArray, what: str) -> npt.NDArray[np.int64] | None:
    """``perm`` with ``mine[perm] == stored`` (None for the identity)."""
    from scipy.spatial import cKDTree

    if stored.shape == mine.shape and np.array_equal(stored, mine):
        return None
    if stored.shape != mine.shape:
        raise RuntimeError(f"the stored {what} layout does not match this mesh")
    dist, perm = cKDTree(mine).query(stored)
    diam = float(np.ptp(stored, axis=0).max()) if stored.size else 1.0
    if np.any(dist > 1e-10 * max(diam, 1.0)):
        raise RuntimeError(f"the stored {what} layout does not match this mesh")
    return np.asarray(perm, dtype=np.int64)


# ------------------------------------------------------------------------------ progress
class _Progress:
    """Rank-0 progress: a live line on a terminal, else one line per θ (or nothing)."""

    def __init__(self, total: int, done: int, folder: Path, enabled: bool) -> None:
        self.total, self.done0, self.folder = total, done, folder
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.mine = 0

    def update(self, label: str) -> None:
        if not self.enabled:
            return
        self.mine += 1
        done = len(_completed(self.folder, self.total))  # all groups, from the store
        rate = (time.perf_counter() - self.t0) / self.mine
        if self.tty:
            bar = int(30 * done / max(self.total, 1))
            sys.stderr.write(
                f"\rsweep [{'#' * bar}{'.' * (30 - bar)}] {done}/{self.total} θ, "
                f"{rate:.3g} s/θ (group 0)  {label[:40]:<40}"
            )
        else:
            sys.stderr.write(f"sweep: {label} done [{done}/{self.total}]\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ------------------------------------------------------------------------------ the driver
def run_sweep(
    cfg: dict[str, Any],
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    out: str | Path,
    resume: bool = False,
    group_size: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Solve every θ of the sweep in ``cfg`` and store it in ``out``; collective on ``comm``.

    Args:
        cfg: Resolved config with a ``[sweep]`` section (:func:`parse_sweep`).
        comm: World communicator; split into groups of ``group_size`` ranks.
        out: Store folder.
        resume: Continue the sweep stored in ``out`` (same config); only missing θ are solved.
        group_size: Overrides ``sweep.group_size``.
        progress: Show progress on rank 0's stderr.

    Returns:
        The summary written to ``out/summary.json`` (rows of all θ, timings, continuity).

    Raises:
        ValueError: A bad spec, or a θ whose density is invalid (the message names the θ); on
            every rank, before any solve.
        RuntimeError: A failing solver or file, on every rank.
    """
    folder = Path(out)
    err = None
    spec: SweepSpec | None = None
    try:
        spec = parse_sweep(cfg)
        if group_size is not None:
            if group_size < 0:
                raise ValueError(f"--group-size must be >= 0, got {group_size}")
            spec.options["group_size"] = group_size
    except ValueError as e:
        err = str(e)
    _agree(comm, err)
    assert spec is not None
    grid = spec.grid
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    gcomm, color, ngroups = _split(comm, spec.options["group_size"])
    pending = _prepare_store(folder, cfg, grid, resume, comm)
    share = [list(map(int, s)) for s in np.array_split(np.array(pending, dtype=int), ngroups)]
    mine = share[color]

    # Set up each group's solver; errors are gathered over the world so no group hangs.
    eng: _Engine | None = None
    err = None
    try:
        eng = _Engine(cfg, spec, gcomm)
        for i in mine:
            eng.check(i)
    except (ValueError, RuntimeError) as e:
        err = f"{type(e).__name__}:{e}"
    msgs = comm.allgather(err)
    first = next((m for m in msgs if m), None)
    if first:
        kind, text = first.split(":", 1)
        gcomm.Free()
        raise (ValueError if kind == "ValueError" else RuntimeError)(text)
    assert eng is not None
    timings["setup"] = time.perf_counter() - t0

    # The layout: written once by group 0; every group root maps its order onto it.
    has_layout = comm.bcast((folder / "layout").is_dir() if comm.rank == 0 else None)
    if not has_layout and color == 0:
        _write_layout(folder, eng, gcomm)
    comm.barrier()
    coords = _gather_rows(eng.x[:, : eng.gdim], gcomm)
    keys = _gather_rows(eng.flux_keys, gcomm)
    err = None
    perm_phi = perm_flux = None
    if gcomm.rank == 0:
        try:
            stored_x, stored_k = _read_layout(folder)
            assert coords is not None and keys is not None
            perm_phi = _permutation(stored_x, coords, "potential")
            perm_flux = _permutation(stored_k, keys, "flux")
        except (OSError, RuntimeError) as e:
            err = f"sweep store {str(folder)!r}: {e}"
    _agree(comm, err, RuntimeError)

    # Solve, block by block; each finished θ is stored at once.
    t1 = time.perf_counter()
    bar = _Progress(len(grid), len(grid) - len(pending), folder, progress and comm.rank == 0)
    store_flux = spec.options["store_flux"]
    err = None
    solved = 0
    try:
        for start in range(0, len(mine), eng.block):
            idx = mine[start : start + eng.block]
            for phi, flux, row in eng.solve_block(idx):
                g_phi = _gather_rows(phi, gcomm)
                g_flux = _gather_rows(flux, gcomm) if store_flux else None
                if gcomm.rank == 0:
                    assert g_phi is not None
                    data = {"potential": g_phi if perm_phi is None else g_phi[perm_phi]}
                    if g_flux is not None:
                        data["flux"] = g_flux if perm_flux is None else g_flux[perm_flux]
                    row = {**row, "group": color, "group_size": gcomm.size}
                    _write_h5_atomic(
                        _theta_path(folder, row["index"]),
                        data,
                        {"row": json.dumps(row), "theta": grid.values[row["index"]]},
                    )
                solved += 1
                bar.update(grid.label(row["index"]))
    except (ValueError, RuntimeError, OSError) as e:
        err = f"{type(e).__name__}:{e}"
    bar.close()
    msgs = comm.allgather(err)
    first = next((m for m in msgs if m), None)
    eng.destroy()
    gcomm_rank = gcomm.rank
    gcomm.Free()
    if first:
        kind, text = first.split(":", 1)
        raise (ValueError if kind == "ValueError" else RuntimeError)(text)
    timings["solve"] = comm.allreduce(time.perf_counter() - t1, op=MPI.MAX)
    timings["setup"] = comm.allreduce(timings["setup"], op=MPI.MAX)
    n_solved = comm.allreduce(solved if gcomm_rank == 0 else 0, op=MPI.SUM)

    t2 = time.perf_counter()
    store = SweepStore(folder, comm)
    report = (
        continuity_report(
            store,
            comm,
            joint_points=spec.options["joint_points"],
            holder=(
                {
                    "k": spec.options["holder_k"],
                    "alpha": spec.options["holder_alpha"],
                    "pairs": spec.options["holder_pairs"],
                }
                if spec.options["continuity_holder"]
                else None
            ),
        )
        if spec.options["continuity"]
        else {}
    )
    timings["continuity"] = comm.allreduce(time.perf_counter() - t2, op=MPI.MAX)
    summary = {
        "version": __version__,
        "ranks": comm.size,
        "groups": ngroups,
        "group_size": comm.size // ngroups,
        "thetas": len(grid),
        "solved": n_solved,
        "reused": len(grid) - len(pending),
        "method": cfg["solver"]["method"],
        "block": spec.options["block"],
        "timings": timings,
        "seconds_per_theta": timings["solve"] / max(n_solved, 1) * 1.0,
        "rows": store.rows(),
        "continuity": report,
    }
    if comm.rank == 0:
        _write_json_atomic(folder / "summary.json", summary)
    comm.barrier()
    return summary


# ------------------------------------------------------------------------------ reloading
class SweepStore:
    """A sweep store opened on ``comm`` (any number of ranks). Collective construction.

    Raises:
        ValueError: ``folder`` is not a sweep store (on every rank).
    """

    def __init__(self, folder: str | Path, comm: MPI.Comm) -> None:
        self.folder = Path(folder)
        self.comm = comm
        err, meta = None, None
        if comm.rank == 0:
            try:
                meta = json.loads((self.folder / "sweep.json").read_text())
                if meta.get("format") != _STORE_FORMAT:
                    raise ValueError("not a beckmann sweep store")
            except (OSError, ValueError) as e:
                err = (
                    f"{str(self.folder)!r} is not a beckmann sweep store ({e}); create one with "
                    "`beckmann sweep CONFIG --out DIR`"
                )
        err, meta = comm.bcast((err, meta), root=0)
        _agree(comm, err)
        assert meta is not None
        self.config: dict[str, Any] = meta["config"]
        self.grid = Grid.from_json(meta["grid"])
        self._space: tuple[Any, npt.NDArray[np.int64]] | None = None

    def completed(self) -> list[int]:
        """Indices of the stored θ (same on every rank). Collective."""
        done = _completed(self.folder, len(self.grid)) if self.comm.rank == 0 else None
        return list(self.comm.bcast(done, root=0))

    def rows(self) -> list[dict[str, Any]]:
        """Summary rows of the stored θ, by index (same on every rank). Collective."""
        import h5py

        rows = None
        if self.comm.rank == 0:
            rows = []
            for i in _completed(self.folder, len(self.grid)):
                with h5py.File(_theta_path(self.folder, i), "r") as h5:
                    rows.append(json.loads(h5.attrs["row"]))
        return list(self.comm.bcast(rows, root=0))

    def read(self, i: int, name: str = "potential", rows: slice | None = None) -> FloatArray:
        """Stored values of θ ``i`` in layout order (a slice of them). Not collective."""
        import h5py

        path = _theta_path(self.folder, i)
        try:
            with h5py.File(path, "r") as h5:
                return np.asarray(h5[name][rows if rows is not None else slice(None)])
        except (OSError, KeyError) as e:
            raise RuntimeError(
                f"cannot read {name} of {self.grid.label(i)} from {path}: {e}"
            ) from e

    def layout(self) -> tuple[FloatArray, FloatArray]:
        """Stored dof coordinates and flux keys. Not collective."""
        return _read_layout(self.folder)

    def space(self) -> fem.FunctionSpace:
        """The potential's space on the stored mesh, distributed over ``comm``. Collective."""
        if self._space is None:
            from scipy.spatial import cKDTree

            with dolfinx.io.XDMFFile(
                self.comm, str(self.folder / "layout" / "mesh.xdmf"), "r"
            ) as f:
                msh = f.read_mesh(name="mesh")
            V = fem.functionspace(msh, ("Lagrange", self.config["solver"]["degree"]))
            n = V.dofmap.index_map.size_local
            x = V.tabulate_dof_coordinates()[:n, : msh.geometry.dim]
            coords, _ = self.layout()
            dist, idx = cKDTree(coords).query(x)
            bad = self.comm.allreduce(int(np.count_nonzero(dist > 1e-10)), op=MPI.SUM)
            if bad:
                raise RuntimeError(f"sweep store {str(self.folder)!r}: mesh and layout differ")
            self._space = (V, np.asarray(idx, dtype=np.int64))
        return self._space[0]

    def potential(self, i: int, V: fem.FunctionSpace | None = None) -> fem.Function:
        """φ of θ ``i`` on ``V`` (default :meth:`space`), matched by dof coordinates. Collective.

        ``V`` may be any scalar Lagrange space of the same degree on the same mesh geometry
        (any partition), e.g. the space of an independent :func:`beckmann.pipeline.solve`.
        """
        from scipy.spatial import cKDTree

        if V is None:
            V = self.space()
            assert self._space is not None
            idx = self._space[1]
        else:
            n = V.dofmap.index_map.size_local
            coords, _ = self.layout()
            dist, idx = cKDTree(coords).query(V.tabulate_dof_coordinates()[:n, : coords.shape[1]])
            bad = self.comm.allreduce(int(np.count_nonzero(dist > 1e-10)), op=MPI.SUM)
            if bad:
                raise ValueError("the given space does not match the sweep's dof layout")
        phi = fem.Function(V, name="potential")
        n = V.dofmap.index_map.size_local
        phi.x.array[:n] = self.read(i)[idx]
        phi.x.scatter_forward()
        return phi

    def index_of(self, theta: dict[str, float]) -> int | None:
        """Grid index of ``theta`` (relative tolerance 1e-12), or ``None``. Not collective."""
        v = np.array([theta[n] for n in self.grid.names])
        scale = np.maximum(np.abs(self.grid.values).max(axis=0), 1.0)
        hit = np.flatnonzero(np.all(np.abs(self.grid.values - v) <= 1e-12 * scale, axis=1))
        return int(hit[0]) if hit.size else None


# ----------------------------------------------------------------------------- continuity
def _pairs(theta: FloatArray, max_all: int = 400, k: int = 12) -> npt.NDArray[np.int64]:
    """Pairs of θ to compare: all of them for small grids, else near neighbours."""
    n = theta.shape[0]
    if n <= max_all:
        i, j = np.triu_indices(n, 1)
        return np.column_stack([i, j]).astype(np.int64)
    from scipy.spatial import cKDTree

    _, nb = cKDTree(theta).query(theta, k=min(k + 1, n))
    p = {(min(a, b), max(a, b)) for a in range(n) for b in nb[a] if a != b}
    return np.array(sorted(p), dtype=np.int64)


def _theta_holder(dist: FloatArray, diff: FloatArray) -> dict[str, Any]:
    """Modulus, fitted exponent and seminorm in θ from pair distances and field differences."""
    try:  # the shared estimators when present (beckmann.holder)
        from beckmann.holder import fit_exponent
    except ImportError:  # pragma: no cover - holder.py is written concurrently
        fit_exponent = None
    sel = dist > 0
    dist, diff = dist[sel], diff[sel]
    if dist.size == 0:
        return {"exponent": None, "seminorm": None, "lipschitz": None}
    scales = np.unique(np.round(dist, 14))
    if scales.size > 24:
        scales = np.geomspace(scales[0], scales[-1], 24)
    order = np.argsort(dist)
    cummax = np.maximum.accumulate(diff[order])
    pos = np.searchsorted(dist[order], scales * (1 + 1e-12), side="right") - 1
    omega = np.where(pos >= 0, cummax[np.maximum(pos, 0)], 0.0)
    if fit_exponent is not None:
        e = fit_exponent(scales, omega)
        expo = {"estimate": e.estimate, "low": e.low, "high": e.high}
    else:
        ok = omega > 0
        est = np.nan
        if ok.sum() > 1:
            est = float(np.polyfit(np.log(scales[ok]), np.log(omega[ok]), 1)[0])
        expo = {"estimate": est, "low": est, "high": est}
    beta = 1.0 if not np.isfinite(expo["estimate"]) else float(np.clip(expo["estimate"], 0, 1))
    return {
        "exponent": expo,
        "beta": beta,
        "seminorm": float(np.max(diff / dist**beta)),
        "lipschitz": float(np.max(diff / dist)),
        "scales": scales.tolist(),
        "modulus": omega.tolist(),
    }


def continuity_report(
    store: SweepStore,
    comm: MPI.Comm,
    *,
    joint_points: int = 20000,
    holder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    r"""Continuity in θ of φ and F from a complete store; collective, same result on every rank.

    *Separate*: for pairs of grid points, ``‖φ(θ) − φ(θ')‖_∞`` (over the dofs) and
    ``‖F(θ) − F(θ')‖_∞`` (over the flux values, Euclidean norm per point); their modulus of
    continuity in ``|θ − θ'|`` (Euclidean, in parameter units), the fitted exponent (via
    :func:`beckmann.holder.fit_exponent`) and the seminorm with that exponent clipped to
    ``[0, 1]``. The dofs are split over the ranks and the pair maxima reduced, so pairs of
    values held on different ranks are never needed. *Joint*: :func:`beckmann.holder.estimate`
    on the points :math:`(x, \theta)` of a random subset of dofs at every θ (``joint_points``
    points in all) with values φ.

    *C^{k,α}* (only with ``holder = {"k": k, "alpha": α, "pairs": n}``): see
    :func:`_holder_report`; the result is ``out["holder"]``.
    """
    done = store.completed()
    theta = store.grid.values[done]
    if len(done) < 2:
        return {"note": "fewer than two θ: no continuity estimate"}
    pairs = _pairs(theta)
    coords, keys = store.layout() if comm.rank == 0 else (None, None)
    sizes = comm.bcast(
        (coords.shape[0], keys.shape[0]) if coords is not None and keys is not None else None
    )
    out: dict[str, Any] = {"pairs": int(pairs.shape[0]), "thetas": len(done)}
    dist = np.linalg.norm(theta[pairs[:, 0]] - theta[pairs[:, 1]], axis=1)
    has_flux = comm.bcast(_has(store, done[0], "flux") if comm.rank == 0 else None)
    for name, total in (("potential", sizes[0]), ("flux", sizes[1])):
        if name == "flux" and not has_flux:
            continue
        lo = total * comm.rank // comm.size
        hi = total * (comm.rank + 1) // comm.size
        vals = np.stack([store.read(i, name, slice(lo, hi)) for i in done])
        d = np.zeros(pairs.shape[0])
        for c in range(0, pairs.shape[0], 256):
            p = pairs[c : c + 256]
            diff = vals[p[:, 0]] - vals[p[:, 1]]
            if diff.ndim == 3:
                diff = np.sqrt((diff**2).sum(axis=2))
            d[c : c + 256] = np.abs(diff).max(axis=1, initial=0.0) if diff.shape[1] else 0.0
        dmax = np.empty_like(d)
        comm.Allreduce(d, dmax, op=MPI.MAX)
        key = "phi" if name == "potential" else "flux"
        out[key] = _theta_holder(dist, dmax)
        if name == "potential":
            out["joint"] = _joint(store, comm, done, theta, vals, lo, hi, joint_points)
    out["norm"] = "sup over dofs (phi) / flux values (F); |θ−θ'| Euclidean in parameter units"
    if holder is not None:
        out["holder"] = _holder_report(store, comm, done, theta, **holder)
    return out


def _holder_pairs(theta: FloatArray, n_max: int) -> npt.NDArray[np.int64]:
    """At most ``n_max`` pairs of :func:`_pairs`, spread evenly over ``log |θ − θ'|``."""
    pairs = _pairs(theta)
    if pairs.shape[0] <= n_max:
        return pairs
    dist = np.linalg.norm(theta[pairs[:, 0]] - theta[pairs[:, 1]], axis=1)
    order = np.argsort(np.log(np.maximum(dist, 1e-300)), kind="stable")
    pick = np.unique(np.round(np.linspace(0, order.size - 1, n_max)).astype(np.int64))
    return pairs[np.sort(order[pick])]


def _rhs(store: SweepStore, i: int, cache: dict[str, Any]) -> fem.Function:
    """``p1 − p0`` (normalised, as solved) of θ ``i`` on the store's space; collective."""
    from beckmann import density
    from beckmann.pipeline import build_density

    V = store.space()
    theta = store.grid.theta(i)
    vals = []
    for role in ("target", "source"):
        sec = store.config[role]
        depends = sec["kind"] == "expression" and bool(
            set(store.grid.names) & density.Expression(sec["expr"]).parameter_names
        )
        if not depends and role in cache:
            vals.append(cache[role])
            continue
        params = {**sec.get("params", {}), **theta} if sec["kind"] == "expression" else None
        p, _ = build_density(sec, role, V, params=params)
        vals.append(p.x.array.copy())
        if not depends:
            cache[role] = vals[-1]
    f = fem.Function(V, name="rhs")
    f.x.array[:] = vals[0] - vals[1]
    return f


def _holder_report(
    store: SweepStore,
    comm: MPI.Comm,
    done: list[int],
    theta: FloatArray,
    *,
    k: int = 0,
    alpha: float = 0.5,
    pairs: int = 12,
) -> dict[str, Any]:
    r"""Continuity in θ in Hölder norms (MATH.md §4); collective, same result on every rank.

    For at most ``pairs`` pairs of stored θ (all pairs of a small grid, else near neighbours,
    spread over the distances), :func:`beckmann.holder.field_norms` with fixed ``α`` on the
    difference fields: ``φ(θ) − φ(θ')`` in ``C^{k+2,α}``, ``F(θ) − F(θ') = ∇(φ(θ) − φ(θ'))`` in
    ``C^{k+1,α}`` and ``(p1 − p0)(θ) − (p1 − p0)(θ')`` in ``C^{k,α}`` (the data). Per field, the
    exponent ``β`` of ``θ ↦ field`` in that norm is fitted on the modulus over ``|θ − θ'|``
    (:func:`_theta_holder`); ``ratio`` is ``‖Δφ‖_{C^{k+2,α}} / ‖Δ(p1 − p0)‖_{C^{k,α}}``, the
    constant of MATH.md §4 seen on the grid (bounded in θ if the estimate holds). Every pair
    recovers ``k + 2`` derivatives of ``Δφ`` and ``k + 1`` of ``ΔF`` by L2 projection, hence the
    bound on the number of pairs.
    """
    from beckmann import holder as bh

    sel = _holder_pairs(theta, pairs)
    V = store.space()
    msh = V.mesh
    degree = int(store.config["solver"]["degree"])
    cache: dict[str, Any] = {}
    phis: dict[int, fem.Function] = {}
    rhss: dict[int, fem.Function] = {}
    for a in np.unique(sel):
        phis[int(a)] = store.potential(done[int(a)])
        rhss[int(a)] = _rhs(store, done[int(a)], cache)
    table = []
    for a, b in sel.tolist():
        dphi = fem.Function(V, name="dphi")
        dphi.x.array[:] = phis[a].x.array - phis[b].x.array
        drhs = fem.Function(V, name="drhs")
        drhs.x.array[:] = rhss[a].x.array - rhss[b].x.array
        n_phi = bh.field_norms(dphi, k + 2, alpha, name="dphi")
        n_flux = bh.field_norms(ufl.grad(dphi), k + 1, alpha, msh=msh, degree=degree, name="dflux")
        n_rhs = bh.field_norms(drhs, k, alpha, degree=degree, name="drhs")
        table.append(
            {
                "i": done[a],
                "j": done[b],
                "dtheta": float(np.linalg.norm(theta[a] - theta[b])),
                "phi": n_phi["norm"],
                "flux": n_flux["norm"],
                "rhs": n_rhs["norm"],
                "ratio": n_phi["norm"] / n_rhs["norm"] if n_rhs["norm"] > 0 else math.inf,
                "phi_sup_norms": n_phi["sup_norms"],
                "phi_seminorm": n_phi["seminorm"],
            }
        )
    dist = np.array([r["dtheta"] for r in table])
    out: dict[str, Any] = {
        "k": int(k),
        "alpha": float(alpha),
        "pairs": len(table),
        "norms": {
            "phi": f"C^{k + 2},{alpha:g}",
            "flux": f"C^{k + 1},{alpha:g}",
            "rhs": f"C^{k},{alpha:g}",
        },
    }
    for key in ("phi", "flux", "rhs"):
        out[key] = _theta_holder(dist, np.array([r[key] for r in table]))
    ratios = np.array([r["ratio"] for r in table])
    out["ratio"] = {
        "max": float(ratios.max()),
        "min": float(ratios.min()),
        "note": "‖φ(θ) − φ(θ')‖_{C^{k+2,α}} / ‖(p1 − p0)(θ) − (p1 − p0)(θ')‖_{C^{k,α}}",
    }
    out["table"] = table
    out["window"] = {"delta_min": n_phi["delta_min"], "delta_max": n_phi["delta_max"]}
    return out


def _has(store: SweepStore, i: int, name: str) -> bool:
    import h5py

    with h5py.File(_theta_path(store.folder, i), "r") as h5:
        return name in h5


def _joint(
    store: SweepStore,
    comm: MPI.Comm,
    done: list[int],
    theta: FloatArray,
    vals: FloatArray,
    lo: int,
    hi: int,
    joint_points: int,
) -> dict[str, Any]:
    from beckmann import holder

    coords = comm.bcast(store.layout()[0] if comm.rank == 0 else None)
    total = coords.shape[0]
    per_theta = max(16, joint_points // len(done))
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(total, size=min(per_theta, total), replace=False))
    mine = pick[(pick >= lo) & (pick < hi)]
    X = np.vstack([np.hstack([coords[mine], np.tile(t, (mine.size, 1))]) for t in theta])
    Y = np.concatenate([vals[k][mine - lo] for k in range(len(done))])
    res = holder.estimate(X, Y, comm, method="fast")
    d = res.to_dict()
    return {
        "exponent": d["exponent"],
        "alpha": d["alpha"],
        "seminorm": d["seminorm"],
        "points": d["n_points"],
        "delta_min": d["delta_min"],
        "note": "points (x, θ) in R^(d+m), Euclidean distance, values φ",
    }


# ------------------------------------------------------------------------------ probing
def _parse_params(items: list[str], names: list[str]) -> dict[str, float]:
    theta: dict[str, float] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--param expects NAME=VALUE, got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        if k not in names:
            raise ValueError(
                f"--param {k!r} is not a sweep parameter; the sweep has {', '.join(names)}"
            )
        try:
            theta[k] = float(v)
        except ValueError as e:
            raise ValueError(f"--param {item!r}: {v!r} is not a number") from e
    missing = [n for n in names if n not in theta]
    if missing:
        raise ValueError(f"--param needs a value for {', '.join(missing)}")
    return theta


def _stencil(axis: list[float], v: float, order: int) -> list[tuple[int, float]]:
    """Lagrange interpolation on ``order + 1`` neighbouring axis values: (position, weight)."""
    a = np.asarray(axis)
    n = a.size
    if n == 1:
        if abs(v - a[0]) > 1e-12 * max(abs(a[0]), 1.0):
            raise ValueError(f"value {v:g} is off the one-point axis {a[0]:g}")
        return [(0, 1.0)]
    if v < a[0] - 1e-12 * max(abs(a[0]), 1.0) or v > a[-1] + 1e-12 * max(abs(a[-1]), 1.0):
        raise ValueError(
            f"value {v:g} lies outside the grid [{a[0]:g}, {a[-1]:g}] (no extrapolation)"
        )
    m = min(order + 1, n)
    j = int(np.clip(np.searchsorted(a, v) - 1, 0, n - 2))  # interval [a_j, a_j+1]
    if m == 3:  # add the neighbour closer to v
        left = j - 1 >= 0 and (j + 2 >= n or v - a[j - 1] <= a[j + 2] - v)
        start = min(max(j - 1 if left else j, 0), n - 3)
        nodes = list(range(start, start + 3))
    else:
        nodes = [j, j + 1]
    w = []
    for k in nodes:
        lk = 1.0
        for q in nodes:
            if q != k:
                lk *= (v - a[q]) / (a[k] - a[q])
        w.append((k, lk))
    return w


def _weights(store: SweepStore, theta: dict[str, float], order: int) -> dict[int, float]:
    """Tensor-product Lagrange weights of grid indices for ``theta``."""
    axes = store.grid.axes
    if axes is None:
        raise ValueError(
            "interpolation needs a product grid; this sweep has a Latin-hypercube design "
            "(probe its grid points instead)"
        )
    per = [_stencil(axes[n], theta[n], order) for n in store.grid.names]
    out: dict[int, float] = {}
    for combo in itertools.product(*per):
        t = {n: axes[n][k] for n, (k, _) in zip(store.grid.names, combo, strict=True)}
        i = store.index_of(t)
        if i is None:
            raise ValueError(f"grid point {t} is missing from the sweep")
        out[i] = out.get(i, 0.0) + float(np.prod([w for _, w in combo]))
    return out


def probe(
    store: SweepStore,
    theta: dict[str, float],
    points: npt.ArrayLike,
    *,
    t: float = 0.0,
    interpolate: bool = False,
) -> dict[str, Any]:
    """Potential, flux and velocity of θ at points (the JSON of ``beckmann probe``); collective.

    On the grid the stored φ is used. Off the grid (``interpolate=True``) φ is the tensor-product
    quadratic Lagrange interpolant in θ of the stored potentials (linear on axes with two values),
    and ``error_estimate`` holds ``max |quadratic − linear|`` at the points for potential and flux,
    an estimate of the linear interpolant's error that is pessimistic for the quadratic one. The
    target density ``p1(θ)`` is recomputed at θ itself from the stored config.
    """
    from beckmann.fields import Solution
    from beckmann.pipeline import build_density

    cfg = store.config
    i = store.index_of(theta) if store.comm.rank == 0 else None
    i = store.comm.bcast(i, root=0)
    label = ", ".join(f"{k}={v:.6g}" for k, v in theta.items())
    done = set(store.completed())
    err = None
    weights: dict[str, dict[int, float]] = {}
    if i is not None and i not in done:
        err = f"θ ({label}) is on the grid but not stored yet; resume the sweep"
    elif i is None and not interpolate:
        err = f"θ ({label}) is not on the sweep grid; pass --interpolate"
    elif i is None:
        try:
            weights = {"quadratic": _weights(store, theta, 2), "linear": _weights(store, theta, 1)}
            missing = sorted(set(weights["quadratic"]) - done)
            if missing:
                raise ValueError(f"{store.grid.label(missing[0])} is needed but not stored yet")
        except ValueError as e:
            err = f"cannot interpolate at θ ({label}): {e}"
    _agree(store.comm, err)
    V = store.space()
    params = {k: v for k, v in theta.items()}
    p0, _ = build_density(_with_params(cfg["source"], params), "source", V)
    try:
        p1, _ = build_density(_with_params(cfg["target"], params), "target", V)
    except ValueError as e:
        raise ValueError(f"θ ({label}): {e}") from e
    result: dict[str, Any] = {}
    if i is not None:
        sol = Solution(V.mesh, store.potential(i), p0, p1)
        sol.flux()  # collective; Solution.evaluate builds it only on ranks holding points
        res = sol.evaluate(points, t=t)
    else:
        evals: dict[str, dict[str, np.ndarray]] = {}
        cache: dict[int, dict[str, np.ndarray]] = {}
        for kind, w in weights.items():
            acc: dict[str, np.ndarray] = {}
            for j, wj in w.items():
                if j not in cache:
                    s = Solution(V.mesh, store.potential(j), p0, p1)
                    s.flux()  # collective (see above)
                    cache[j] = s.evaluate(points, what=("potential", "flux"))
                for k, v in cache[j].items():
                    acc[k] = acc.get(k, 0.0) + wj * v
            evals[kind] = acc
        q, lin = evals["quadratic"], evals["linear"]
        sol = Solution(V.mesh, store.potential(next(iter(weights["linear"]))), p0, p1)
        dens = sol.evaluate(points, t=t, what=("source", "target"))
        pt = (1.0 - t) * dens["source"] + t * dens["target"]
        res = {"potential": q["potential"], "flux": q["flux"], "velocity": q["flux"] / pt[:, None]}
        result["interpolation"] = {
            "method": "tensor-product quadratic Lagrange in θ (linear on 2-value axes)",
            "stencil": {str(j): w for j, w in weights["quadratic"].items()},
        }
        result["error_estimate"] = {
            "potential": float(np.abs(q["potential"] - lin["potential"]).max(initial=0.0)),
            "flux": float(np.linalg.norm(q["flux"] - lin["flux"], axis=1).max(initial=0.0)),
        }
    out = {k: v.tolist() for k, v in res.items()}
    out["theta"] = theta
    out.update(result)
    return out


def _with_params(section: dict[str, Any], theta: dict[str, float]) -> dict[str, Any]:
    return {**section, "params": {**section.get("params", {}), **theta}}


def probe_cli(args: Any, comm: MPI.Comm) -> int:
    """``beckmann probe STORE --param NAME=VALUE ... --points FILE``; collective."""
    from beckmann.cli.common import read_points

    store = SweepStore(args.dir, comm)
    err, pts, theta = None, None, None
    if comm.rank == 0:
        try:
            theta = _parse_params(args.param, store.grid.names)
            pts = read_points(args.points)
        except ValueError as e:
            err = str(e)
    err, pts, theta = comm.bcast((err, pts, theta), root=0)
    _agree(comm, err)
    res = probe(store, theta, pts, t=args.time, interpolate=args.interpolate)
    text = json.dumps(res)
    if comm.rank == 0:
        if args.json_out:
            Path(args.json_out).write_text(text + "\n")
        print(text)
    return 0


# ------------------------------------------------------------------------------- the CLI
def _cmd_sweep(args: Any, comm: MPI.Comm) -> int:
    from beckmann import config

    cfg = config.resolve(args.config, args.set, extra_sections=("sweep",))
    summary = run_sweep(
        cfg,
        comm,
        out=args.out,
        resume=args.resume,
        group_size=args.group_size,
        progress=not args.quiet,
    )
    if comm.rank == 0 and not args.quiet:
        brief = {
            k: summary[k]
            for k in ("thetas", "solved", "reused", "ranks", "groups", "seconds_per_theta")
        }
        phi = summary["continuity"].get("phi") or {}
        brief["phi_theta_exponent"] = (phi.get("exponent") or {}).get("estimate")
        brief["out"] = str(args.out)
        print(json.dumps(brief))
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``beckmann sweep`` to the CLI."""
    p = subparsers.add_parser("sweep", help="solve a parameter sweep into a resumable store")
    p.add_argument("config", help="TOML config with [sweep.parameters]")
    p.add_argument("--out", required=True, help="sweep store folder")
    p.add_argument("--resume", action="store_true", help="continue the sweep stored in --out")
    p.add_argument(
        "--group-size", type=int, default=None, help="ranks per group (default sweep.group_size)"
    )
    from beckmann.cli.common import add_set_option

    add_set_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary line")
    p.set_defaults(func=_cmd_sweep)
