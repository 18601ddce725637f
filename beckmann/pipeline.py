"""The one entry point that the CLI, sweeps and tests call: config dict -> solved run.

mesh -> densities (checked, normalised) -> Neumann solve -> flux / velocity -> run folder

:func:`solve` returns the solution in memory; :func:`run` also writes the run folder through
the storage layer (:mod:`beckmann.store`): the destination is checked before anything is
computed, everything is written into a temporary sibling, and the folder appears under its name
only when complete (layout in :mod:`beckmann.store.run`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beckmann._dolfinx import MPI, PETSc, dolfinx, fem, ufl
from beckmann._version import __version__
from beckmann.density.discrete import DensityPoints, QuadratureRHS
from beckmann.fields import Solution, vertex_vector_space
from beckmann.mesh import create_mesh, describe
from beckmann.poisson import NeumannPoisson, matched_rtol
from beckmann.store.checkpoint import write_checkpoint
from beckmann.store.folder import staged_folder
from beckmann.store.jsonio import toml_dumps, write_json
from beckmann.store.paraview import NativeSeries, XdmfSeries
from beckmann.store.run import load_run
from beckmann.store.writes import write_on_root

__all__ = ["BUILTIN_EXAMPLE", "Timer", "build_density", "run", "solve", "write_outputs"]

#: The built-in example: uniform source to a two-bump target on the unit square.
BUILTIN_EXAMPLE: dict[str, Any] = {
    "mesh": {"kind": "unit_square", "n": 64},
    "source": {"kind": "uniform"},
    "target": {
        "kind": "expression",
        "expr": "0.2 + exp(-((x - a)**2 + (y - a)**2) / s) + exp(-((x - b)**2 + (y - b)**2) / s)",
        "params": {"a": 0.3, "b": 0.7, "s": 0.02},
    },
}


@dataclass
class Timer:
    """Wall-clock seconds per phase (max over ranks when reported)."""

    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        """Time the ``with`` block under ``phase``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - t0

    def reduced(self, comm: MPI.Comm) -> dict[str, float]:
        """The timings, maximum over ranks; collective."""
        return {k: float(comm.allreduce(v, op=MPI.MAX)) for k, v in self.timings.items()}


def _integral(u: Any, comm: MPI.Comm) -> float:
    return float(comm.allreduce(fem.assemble_scalar(fem.form(u * ufl.dx)), op=MPI.SUM))


def build_density(
    section: dict[str, Any],
    role: str,
    V: fem.FunctionSpace,
    params: dict[str, float] | None = None,
    *,
    quadrature_degree: int = -1,
) -> tuple[fem.Function, float]:
    """Check and normalise one density on ``V``; collective.

    A shorthand for :func:`discretise_density` when only the P_k interpolant is needed.

    Args:
        section: The ``[source]`` or ``[target]`` config section.
        role: ``"source"`` or ``"target"`` (used in messages and as the function name).
        V: Scalar Lagrange space.
        params: Parameter values overriding ``section["params"]`` (sweeps).
        quadrature_degree: ``solver.quadrature_degree`` (``-1``: from the degree of ``V``).

    Returns:
        ``(p, raw_mass)``: the P_k interpolant normalised to mass 1, and the density's mass
        before normalisation (by the quadrature).

    Raises:
        ValueError: See :func:`discretise_density`.
    """
    d = discretise_density(section, role, DensityPoints(V, quadrature_degree), params)
    return d.p, d.mass


def discretise_density(
    section: dict[str, Any],
    role: str,
    points: Any,
    params: dict[str, float] | None = None,
) -> Any:
    """Evaluate one density at the nodes and quadrature points of ``points``; collective.

    Args:
        section: The ``[source]`` or ``[target]`` config section.
        role: ``"source"`` or ``"target"`` (used in messages and as the function name).
        points: A :class:`~beckmann.density.discrete.DensityPoints` of the potential's space.
        params: Parameter values overriding ``section["params"]`` (sweeps).

    Returns:
        The :class:`~beckmann.density.discrete.DiscreteDensity`: the certified P_k interpolant
        and the quadrature values, each normalised, and the raw mass by the quadrature.

    Raises:
        ValueError: On every rank, when the density is not finite or falls below
            ``min_density`` at a node or quadrature point (the message names the minimum and
            where), when its interpolant dips below ``min_density`` inside a cell, or when it
            has zero mass.
    """
    from beckmann.density import make_evaluator
    from beckmann.density.expression import MissingParameterError

    min_density = section["min_density"]
    if section["kind"] == "function":
        nodal, quad = _interpolate_stored(section, role, points)
        d = points.discretise(nodal, quad, role=role, min_density=min_density)
        d.description = {"kind": "function", "path": str(section["path"]),
                         "field": section["field"]}  # fmt: skip
        return d
    msh = points.V.mesh
    info = describe(msh)  # computed once per mesh
    bbox = (np.asarray(info["bbox"][0]), np.asarray(info["bbox"][1]))
    # the mesh size bounds a cross-validated KDE bandwidth from below (density/evaluator.py)
    ev = make_evaluator(section, gdim=msh.geometry.dim, bbox=bbox, resolution=info["hmax"])
    try:
        d = points.evaluate(ev, role=role, min_density=min_density, params=params)
    except MissingParameterError as err:  # name the option the user can fix
        raise ValueError(
            f"{role}.expr = {section.get('expr', '')!r} uses "
            f"{', '.join(map(repr, err.names))}, which "
            f"{'has' if len(err.names) == 1 else 'have'} no value: give "
            f"{'it' if len(err.names) == 1 else 'them'} in {role}.params (e.g. --set "
            f"{role}.params.{err.names[0]}=1) or use only x, y, z, pi, e"
        ) from None
    d.description = dict(ev.description)  # summary.json "densities" (a KDE's bandwidth, score)
    return d


def _interpolate_stored(
    section: dict[str, Any], role: str, points: Any
) -> tuple[np.ndarray, np.ndarray]:
    """A field of a stored run at the nodes and at the quadrature points of ``points``."""
    comm = points.V.mesh.comm
    if not section["path"]:
        raise ValueError(f"{role}.kind = 'function' needs {role}.path (a run folder)")
    stored = load_run(section["path"], comm)
    name = section["field"]
    fields = {"source": stored.p0, "target": stored.p1, "potential": stored.phi}
    if name not in fields:
        raise ValueError(f"{role}.field = {name!r} is not one of {', '.join(fields)}")
    src = fields[name]
    msh = points.V.mesh
    tdim = msh.topology.dim
    here, there = describe(msh), describe(stored.msh)
    if stored.msh.topology.dim != tdim:
        raise ValueError(
            f"{role}.path {str(section['path'])!r} holds a {stored.msh.topology.dim}D run, the "
            f"mesh is {tdim}D: a stored field is read on a mesh of its own dimension"
        )
    lo, hi = (np.asarray(b, dtype=float) for b in here["bbox"])
    slo, shi = (np.asarray(b, dtype=float) for b in there["bbox"])
    tol = 1e-8 * max(float(np.max(hi - lo)), float(np.max(shi - slo)), 1.0)
    if np.any(lo < slo - tol) or np.any(hi > shi + tol):
        def box(a: np.ndarray, b: np.ndarray) -> str:
            return " - ".join("[" + ", ".join(f"{v:g}" for v in c) + "]" for c in (a, b))

        raise ValueError(
            f"{role}.path {str(section['path'])!r}: the mesh's bounding box {box(lo, hi)} is "
            f"not inside the stored run's {box(slo, shi)}"
        )
    cells = np.arange(msh.topology.index_map(tdim).size_local, dtype=np.int32)
    out = []
    for space in (points.V, points.Q):
        u = fem.Function(space)
        data = fem.create_interpolation_data(space, src.function_space, cells, 1e-8)
        u.interpolate_nonmatching(src, cells, data)
        u.x.scatter_forward()
        out.append(u.x.array.copy())
    return out[0], out[1]


def solve(
    cfg: dict[str, Any],
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    timer: Timer | None = None,
) -> Solution:
    """Solve the Beckmann problem of a resolved config (see :mod:`beckmann.config`); collective.

    Returns:
        The :class:`~beckmann.fields.Solution`, with ``info`` holding the summary scalars.
    """
    timer = timer or Timer()
    degree = cfg["solver"]["degree"]
    if degree not in (1, 2, 3):
        raise ValueError(f"solver.degree must be 1, 2 or 3, got {degree!r}")
    if not cfg["output"]["times"]:
        raise ValueError("output.times must list at least one time in [0, 1] (default "
                         "[0.0, 0.5, 1.0]): the run folder always holds the velocity")
    for t in cfg["output"]["times"]:
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= t <= 1.0:
            raise ValueError(f"output.times must be numbers in [0, 1], got {t!r}")
    with timer("mesh"):
        msh = create_mesh(cfg["mesh"], comm, degree=degree)
        V = fem.functionspace(msh, ("Lagrange", degree))
    if cfg["solver"].get("formulation") == "mixed":  # RT_k x DG_{k-1}: beckmann.mixed_run
        from beckmann.mixed_run import solve_mixed

        return solve_mixed(cfg, V, discretise_density, timer)
    with timer("densities"):
        points = DensityPoints(
            V, cfg["solver"]["quadrature_degree"], (cfg["source"], cfg["target"])
        )
        d0 = discretise_density(cfg["source"], "source", points)
        d1 = discretise_density(cfg["target"], "target", points)
        # b = ∫ (p1 − p0) w dx with the densities' values at the quadrature points; the
        # quadrature values are dropped before the operator and its AMG hierarchy are built
        b = QuadratureRHS(points).assemble(d0, d1)
        p0, m0, p1, m1 = d0.p, d0.mass, d1.p, d1.mass
        densities = {"source": d0.description, "target": d1.description}
        qdeg = points.degree
        del d0, d1, points
    rtol = cfg["solver"]["rtol"]
    if rtol == "auto":  # matched to the discretisation error (poisson.matched_rtol)
        info = describe(msh)  # computed once per mesh
        rtol = matched_rtol(info["hmax"] / math.dist(*info["bbox"]), degree)
    with timer("assemble"):
        poisson = NeumannPoisson(
            V,
            method=cfg["solver"]["method"],
            rtol=rtol,
            petsc_options=cfg["solver"]["petsc_options"],
        )
    with timer("solve"):
        phi = poisson.solve_vector(b)
        residual = poisson.residual(phi, b)
        b.destroy()
    sol = Solution(msh, phi, p0, p1)
    with timer("postprocess"):
        cost = poisson.energy(phi)  # = sol.cost() to round-off, one mat-vec, no assembly
        info = describe(msh)
    sol.info.update(
        {
            "version": __version__,
            "formulation": "primal",  # the mixed solve writes "mixed" (beckmann.mixed_run)
            "elements": f"P_{degree}",
            "ndofs": poisson.ndofs,
            "ranks": comm.size,
            "degree": degree,
            "quadrature_degree": qdeg,
            "method": poisson.method,
            "iterations": poisson.iterations,
            "rtol": poisson.rtol,
            "beckmann_cost": cost,
            "mass_source": m0,
            "mass_target": m1,
            "residual": residual,
            "hmax": info["hmax"],
            "hmin": info["hmin"],
            "cells": info["cells"],
            "physical_groups": info.get("physical_groups"),
            "volume": poisson.volume,
            "densities": densities,
            "petsc_options": {k: _plain(v) for k, v in poisson.options.items()},
        }
    )
    poisson.destroy()
    return sol


def _plain(v: Any) -> Any:
    return v if isinstance(v, bool | int | float | str) else str(v)


def _check_output(cfg: dict[str, Any]) -> None:
    """Refuse output options that would fail only after the solve."""
    if cfg["output"]["vtx"] and not dolfinx.io.has_adios2:
        raise ValueError("output.vtx = true needs DOLFINx built with ADIOS2 (this one is not)")
    toml_dumps(cfg)  # a config that cannot be written as config.toml fails now, not later


def write_outputs(
    sol: Solution,
    out: Path,
    cfg: dict[str, Any],
    timer: Timer | None = None,
    *,
    vertex_flux: fem.Function | None = None,
) -> None:
    """Write the files of a run folder into ``out`` (an existing folder); collective.

    ParaView files in XDMF + HDF5 (vertex fields, binary); the velocity once per requested time;
    with ``output.vtx`` the fields also go to VTX in their own spaces; with
    ``output.checkpoint`` the exact checkpoint, referring to ``solution.xdmf``'s mesh.
    ``timer`` gets the parts: ``solution``, ``velocity``, ``checkpoint``. ``vertex_flux`` is
    ``sol.vertex_flux()`` on :func:`vertex_vector_space`, when the caller computed it already.
    """
    timer = timer or Timer()
    with timer("solution"):
        fields = _write_solution(sol, out, cfg, vertex_flux)
    with timer("velocity"):
        _write_velocity(sol, out, cfg, fields)
    if cfg["output"]["checkpoint"]:
        with timer("checkpoint"):
            _write_checkpoint(sol, out, cfg)


def _write_solution(
    sol: Solution, out: Path, cfg: dict[str, Any], vertex_flux: fem.Function | None = None
) -> dict[str, fem.Function]:
    """config.toml, solution.xdmf (and the native fields with output.vtx): the vertex fields."""
    comm = sol.comm
    native = bool(cfg["output"]["vtx"])
    text = toml_dumps(cfg)
    write_on_root(comm, "config.toml", lambda: (out / "config.toml").write_text(text))
    # the vertex flux straight from φ and the cells' geometry (no DG flux on the way)
    if vertex_flux is None:
        vertex_flux = sol.vertex_flux(vertex_vector_space(sol.V))
    fields = {"source": sol.p0, "target": sol.p1, "potential": sol.phi, "flux": vertex_flux}
    with XdmfSeries(out / "solution.xdmf", sol.msh) as xdmf:
        vertex = xdmf.write(fields, 0.0)
    if native:
        for name, u in {**fields, "flux": sol.flux()}.items():
            with NativeSeries(out / "vtx" / f"{name}.bp", name) as bp:
                bp.write(u, 0.0)
    return vertex


def _write_velocity(
    sol: Solution, out: Path, cfg: dict[str, Any], vertex: dict[str, fem.Function]
) -> None:
    """velocity.xdmf (referring to solution.h5's mesh); with output.vtx also velocity.bp."""
    times = [float(t) for t in cfg["output"]["times"]]
    native = bool(cfg["output"]["vtx"])
    # At a vertex every cell's v_t = F / p_t has the same denominator (p_t is continuous), so
    # the vertex average of the DG_k velocity is the vertex flux over p_t there: numpy, no
    # interpolation. The native velocity is computed (once per time) only when it is written.
    F = vertex["flux"]
    v = fem.Function(F.function_space, name="velocity")
    d = sol.gdim
    q0, q1 = vertex["source"].x.array, vertex["target"].x.array
    vtx = NativeSeries(out / "vtx" / "velocity.bp", "velocity") if native else nullcontext()
    # the mesh is in solution.h5 already: velocity.xdmf refers to it there
    velocity = XdmfSeries(out / "velocity.xdmf", sol.msh, mesh_of=out / "solution.xdmf")
    pt, tq1 = np.empty_like(q0), np.empty_like(q1)  # p_t = (1 − t) q0 + t q1, in place
    with velocity as xdmf, vtx as bp:
        for t in times:
            np.multiply(q0, 1 - t, out=pt)
            pt += np.multiply(q1, t, out=tq1)
            np.divide(F.x.array.reshape(-1, d), pt[:, None], out=v.x.array.reshape(-1, d))
            xdmf.write({"velocity": v}, t)
            if bp is not None:
                bp.write(sol.velocity(t), t)


def _write_checkpoint(sol: Solution, out: Path, cfg: dict[str, Any]) -> None:
    meta = {"degree": sol.degree, "config": cfg, "info": sol.info}
    if sol.info.get("formulation") == "mixed":  # one checkpoint per space
        from beckmann.store.mixed import write_mixed_checkpoint

        write_mixed_checkpoint(out / "checkpoint", sol, meta, mesh_file=out / "solution.xdmf")
    else:
        write_checkpoint(
            out / "checkpoint",
            {"potential": sol.phi, "source": sol.p0, "target": sol.p1},
            meta,
            mesh_file=out / "solution.xdmf",
            vertex_fields=True,  # P1: the values are solution.h5's, not written twice
        )


def run(
    cfg: dict[str, Any],
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    out: Path | None = None,
    overwrite: bool = False,
) -> Solution:
    """Solve and write the run folder ``out`` (default ``cfg["output"]["dir"]``); collective.

    The destination is checked before the solve (:func:`beckmann.store.folder.staged_folder`):
    another kind of folder, a non-empty foreign folder, or an existing run without
    ``overwrite`` is refused with a ``ValueError`` on every rank. The folder appears complete
    under its name, or not at all.
    """
    timer = Timer()
    out = Path(out if out is not None else cfg["output"]["dir"])
    cfg = {**cfg, "output": {**cfg["output"], "dir": str(out)}}
    _check_output(cfg)
    with staged_folder(out, "run", comm, overwrite=overwrite, config=cfg) as tmp:
        sol = solve(cfg, comm, timer=timer)
        with timer("postprocess"):  # a derived field (ParaView's flux), not a write
            flux = sol.vertex_flux(vertex_vector_space(sol.V))
        parts = Timer()
        with timer("output"):  # the writes
            write_outputs(sol, tmp, cfg, parts, vertex_flux=flux)
        del flux
        summary = {
            **sol.info,
            "timings": timer.reduced(comm),
            "output_timings": parts.reduced(comm),  # the parts of "output"
            "times": list(cfg["output"]["times"]),
            "petsc_version": ".".join(map(str, PETSc.Sys.getVersion())),
            "config": cfg,
        }
        sol.info = summary
        write_json(tmp / "summary.json", summary, comm)
    return sol
