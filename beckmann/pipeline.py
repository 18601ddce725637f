"""The one entry point that the CLI, sweeps and tests call: config dict -> solved run.

mesh -> densities (checked, normalised) -> Neumann solve -> flux / velocity -> run folder
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beckmann import __version__
from beckmann._dolfinx import MPI, PETSc, fem, ufl
from beckmann.fields import Solution
from beckmann.poisson import NeumannPoisson

__all__ = ["BUILTIN_EXAMPLE", "Timer", "build_density", "run", "solve"]

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


def _bbox(msh: Any) -> tuple[np.ndarray, np.ndarray]:
    d = msh.geometry.dim
    x = msh.geometry.x[:, :d]
    lo = x.min(axis=0) if x.size else np.full(d, np.inf)
    hi = x.max(axis=0) if x.size else np.full(d, -np.inf)
    comm = msh.comm
    glo, ghi = np.empty(d), np.empty(d)
    comm.Allreduce(np.ascontiguousarray(lo, dtype=np.float64), glo, op=MPI.MIN)
    comm.Allreduce(np.ascontiguousarray(hi, dtype=np.float64), ghi, op=MPI.MAX)
    return glo, ghi


def _integral(u: Any, comm: MPI.Comm) -> float:
    return float(comm.allreduce(fem.assemble_scalar(fem.form(u * ufl.dx)), op=MPI.SUM))


def build_density(
    section: dict[str, Any],
    role: str,
    V: fem.FunctionSpace,
    params: dict[str, float] | None = None,
) -> tuple[fem.Function, float]:
    """Interpolate, check and normalise one density on ``V``; collective.

    Args:
        section: The ``[source]`` or ``[target]`` config section.
        role: ``"source"`` or ``"target"`` (used in messages and as the function name).
        V: Scalar Lagrange space.
        params: Parameter values overriding ``section["params"]`` (sweeps).

    Returns:
        ``(p, raw_mass)``: the density normalised to mass 1 on the discrete domain, and its
        mass before normalisation.

    Raises:
        ValueError: On every rank, when the density is not finite, falls below
            ``min_density`` (the message names the minimum and where), or has zero mass.
    """
    from beckmann import density

    msh = V.mesh
    comm = msh.comm
    p = fem.Function(V, name=role)
    x = V.tabulate_dof_coordinates()
    if section["kind"] == "function":
        _interpolate_stored(section, role, p)
    else:
        ev = density.make_evaluator(section, gdim=msh.geometry.dim, bbox=_bbox(msh))
        with np.errstate(all="ignore"):  # non-finite values are reported by check_values
            values = np.asarray(ev(x.T.copy(), params), dtype=np.float64)
        p.x.array[:] = np.broadcast_to(values, (x.shape[0],))
    n = V.dofmap.index_map.size_local
    density.check_values(
        p.x.array[:n],
        x[:n],
        role=role,
        min_density=section["min_density"],
        comm=comm,
    )
    mass = _integral(p, comm)
    if not mass > 0:
        raise ValueError(f"{role} density has non-positive total mass {mass:.6g}")
    p.x.array[:] /= mass
    return p, mass


def _interpolate_stored(section: dict[str, Any], role: str, p: fem.Function) -> None:
    from beckmann.io import load_run

    comm = p.function_space.mesh.comm
    if not section["path"]:
        raise ValueError(f"{role}.kind = 'function' needs {role}.path (a run folder)")
    stored = load_run(section["path"], comm)
    name = section["field"]
    fields = {"source": stored.p0, "target": stored.p1, "potential": stored.phi}
    if name not in fields:
        raise ValueError(f"{role}.field = {name!r} is not one of {', '.join(fields)}")
    src = fields[name]
    msh = p.function_space.mesh
    tdim = msh.topology.dim
    cells = np.arange(msh.topology.index_map(tdim).size_local, dtype=np.int32)
    data = fem.create_interpolation_data(p.function_space, src.function_space, cells, 1e-8)
    p.interpolate_nonmatching(src, cells, data)
    p.x.scatter_forward()


def _mesh_info(msh: Any) -> dict[str, Any]:
    from beckmann import mesh as bmesh

    return bmesh.describe(msh)


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
    from beckmann import mesh as bmesh

    timer = timer or Timer()
    degree = cfg["solver"]["degree"]
    if degree not in (1, 2, 3):
        raise ValueError(f"solver.degree must be 1, 2 or 3, got {degree!r}")
    for t in cfg["output"]["times"]:
        if not isinstance(t, int | float) or not 0.0 <= t <= 1.0:
            raise ValueError(f"output.times must be numbers in [0, 1], got {t!r}")
    with timer("mesh"):
        msh = bmesh.create_mesh(cfg["mesh"], comm)
        V = fem.functionspace(msh, ("Lagrange", degree))
    with timer("densities"):
        p0, m0 = build_density(cfg["source"], "source", V)
        p1, m1 = build_density(cfg["target"], "target", V)
    with timer("assemble"):
        poisson = NeumannPoisson(
            V,
            method=cfg["solver"]["method"],
            rtol=cfg["solver"]["rtol"],
            petsc_options=cfg["solver"]["petsc_options"],
        )
    with timer("solve"):
        f = fem.Function(V)
        f.x.array[:] = p1.x.array - p0.x.array
        phi = poisson.solve(f)
        residual = poisson.residual(phi)
    sol = Solution(msh, phi, p0, p1)
    with timer("postprocess"):
        cost = sol.cost()
        info = _mesh_info(msh)
    sol.info.update(
        {
            "version": __version__,
            "ndofs": poisson.ndofs,
            "ranks": comm.size,
            "degree": degree,
            "method": cfg["solver"]["method"],
            "iterations": poisson.iterations,
            "beckmann_cost": cost,
            "mass_source": m0,
            "mass_target": m1,
            "residual": residual,
            "hmax": info["hmax"],
            "hmin": info["hmin"],
            "cells": info["cells"],
            "volume": poisson.volume,
            "petsc_options": {k: _plain(v) for k, v in poisson.options.items()},
        }
    )
    poisson.destroy()
    return sol


def _plain(v: Any) -> Any:
    return v if isinstance(v, bool | int | float | str) else str(v)


def run(
    cfg: dict[str, Any], comm: MPI.Comm = MPI.COMM_WORLD, *, out: Path | None = None
) -> Solution:
    """Solve and write the run folder (``out`` or ``cfg["output"]["dir"]``); collective."""
    from beckmann import io

    timer = Timer()
    out = Path(out if out is not None else cfg["output"]["dir"])
    cfg = {**cfg, "output": {**cfg["output"], "dir": str(out)}}
    sol = solve(cfg, comm, timer=timer)
    with timer("output"):
        if comm.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "pvd").mkdir(exist_ok=True)
            (out / "config.toml").write_text(io.toml_dumps(cfg))
        comm.barrier()
        io.write_paraview(sol, out, list(cfg["output"]["times"]), vtx=cfg["output"]["vtx"])
        if cfg["output"]["checkpoint"]:
            io.write_checkpoint(sol, out / "checkpoint", cfg)
    summary = {
        **sol.info,
        "timings": timer.reduced(comm),
        "times": list(cfg["output"]["times"]),
        "petsc_version": ".".join(map(str, PETSc.Sys.getVersion())),
        "config": cfg,
    }
    sol.info = summary
    io.write_json(out / "summary.json", summary, comm)
    return sol
