r"""``solver.formulation = "mixed"`` in a run: the solve from a config, its checkpoint, its reload.

:func:`solve_mixed` is what :func:`beckmann.pipeline.solve` calls for a mixed run: the same
densities as the primal solve (P_k interpolants certified positive, quadrature values for the
right-hand side, :mod:`beckmann.density.discrete`), then the Raviart-Thomas solve of
:class:`~beckmann.mixed.MixedPoisson` with the right-hand side
:math:`\int (p_0 - p_1)\,q\,dx` at the densities' own quadrature points. Its summary adds the
``formulation``, the ``solver``, the cellwise ``divergence_defect``
:math:`\max |\nabla\cdot F_h - \Pi(p_0 - p_1)|` (Π the L²-projection onto DG\ :sub:`k-1` with
the same quadrature) and ``boundary_flux`` :math:`\|F_h\cdot n\|_{L^2(\partial\Omega)}`.

A mixed run folder is a run folder (:mod:`beckmann.store.run`) whose checkpoint holds the
densities (P_k) in ``checkpoint/``, the flux in ``checkpoint/flux/`` as a vector DG_k function
(``RT_k ⊂ [P_k]^d`` on each cell, so the copy is exact) and the potential in
``checkpoint/potential/`` (DG_{k-1}); all three refer to ``solution.xdmf``'s mesh and reload on
any number of ranks. :func:`load_mixed` rebuilds the :class:`~beckmann.mixed.MixedSolution`,
interpolating the DG_k flux back into RT_k (exact: the moments defining the RT dofs are
integrated exactly for polynomials of degree k).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from beckmann._dolfinx import MPI, fem, ufl
from beckmann._version import __version__
from beckmann.density.discrete import DensityPoints
from beckmann.mesh import describe
from beckmann.mixed import MixedPoisson, MixedSolution, flux_spaces
from beckmann.store.checkpoint import Checkpoint, read_checkpoint, write_checkpoint

__all__ = ["MIXED_FIELDS", "load_mixed", "solve_mixed", "write_mixed_checkpoint"]

#: Sub-folders of a mixed run's checkpoint, one per space: field name -> folder.
MIXED_FIELDS = {"flux": "flux", "potential": "potential"}


def _describe_solver(mp: MixedPoisson) -> str:
    if mp.method == "mumps":
        return "mumps (LU of the saddle-point matrix)"
    return "minres + fieldsplit (sor on the RT mass, gamg on the approximate Schur complement)"


def solve_mixed(
    cfg: dict[str, Any],
    V: fem.FunctionSpace,
    discretise: Callable[..., Any],
    timer: Any,
) -> MixedSolution:
    """Solve a resolved config with ``solver.formulation = "mixed"``; collective.

    Args:
        cfg: The resolved config.
        V: The scalar Lagrange space P_k of the densities (``k = solver.degree``).
        discretise: :func:`beckmann.pipeline.discretise_density` (passed in, so that this
            module does not import the pipeline that calls it).
        timer: The pipeline's :class:`~beckmann.pipeline.Timer`.

    Returns:
        The :class:`~beckmann.mixed.MixedSolution`, ``info`` holding the summary scalars.
    """
    msh = V.mesh
    comm = msh.comm
    s = cfg["solver"]
    k = int(s["degree"])
    with timer("densities"):
        points = DensityPoints(V, s["quadrature_degree"])
        d0 = discretise(cfg["source"], "source", points)
        d1 = discretise(cfg["target"], "target", points)
    with timer("assemble"):
        mp = MixedPoisson(
            msh,
            k,
            method=s["method"],
            rtol=s["rtol"],
            petsc_options=s["petsc_options"],
            quadrature_degree=points.degree,
        )
    with timer("solve"):
        f = d0.q - d1.q  # div F = p0 − p1, at the densities' quadrature points
        F, phi = mp.solve(f)
        residual = mp.residual()
    sol = MixedSolution(msh, phi, d0.p, d1.p, flux_rt=F, order=k)
    with timer("postprocess"):
        defect = mp.divergence  # measured by the solve (beckmann.mixed.DIVERGENCE_TOL)
        n = ufl.FacetNormal(msh)
        bn = fem.assemble_scalar(fem.form(ufl.inner(F, n) ** 2 * ufl.ds))
        boundary = float(comm.allreduce(bn, op=MPI.SUM)) ** 0.5
        cost = sol.cost()
        info = describe(msh)
    sol.info.update(
        {
            "version": __version__,
            "formulation": "mixed",
            "elements": f"RT_{k} x DG_{k - 1}",
            "ndofs": mp.ndofs,
            "ranks": comm.size,
            "degree": k,
            "method": mp.method,
            "solver": _describe_solver(mp),
            "iterations": mp.iterations,
            "beckmann_cost": cost,
            "mass_source": d0.mass,
            "mass_target": d1.mass,
            "quadrature_degree": points.degree,
            "density_cell_minimum": {"source": d0.cell_minimum, "target": d1.cell_minimum},
            "residual": residual,
            "divergence_defect": defect,
            "boundary_flux": boundary,
            "hmax": info["hmax"],
            "hmin": info["hmin"],
            "cells": info["cells"],
            "physical_groups": info.get("physical_groups"),
            "volume": mp.volume,
            "petsc_options": {
                key: v if isinstance(v, bool | int | float | str) else str(v)
                for key, v in mp.options.items()
            },
        }
    )
    mp.destroy()
    return sol


def write_mixed_checkpoint(
    folder: Path, sol: MixedSolution, meta: dict[str, Any], *, mesh_file: Path
) -> None:
    """The checkpoint of a mixed run (see the module doc); collective."""
    meta = {**meta, "formulation": "mixed", "mixed_fields": MIXED_FIELDS}
    write_checkpoint(folder, {"source": sol.p0, "target": sol.p1}, meta, mesh_file=mesh_file)
    fields = {"flux": sol.flux(), "potential": sol.phi}
    for name, sub in MIXED_FIELDS.items():
        write_checkpoint(
            folder / sub, {name: fields[name]}, {"formulation": "mixed"}, mesh_file=mesh_file
        )


def load_mixed(folder: Path, ck: Checkpoint, info: dict[str, Any]) -> MixedSolution:
    """Rebuild the :class:`~beckmann.mixed.MixedSolution` of a mixed checkpoint; collective.

    Args:
        folder: The run's ``checkpoint`` folder.
        ck: Its main checkpoint (densities and mesh), already read.
        info: The solution's ``info``.
    """
    msh = ck.msh
    comm = msh.comm
    subs = ck.meta.get("mixed_fields", MIXED_FIELDS)
    got = {
        name: read_checkpoint(Path(folder) / sub, comm, msh=msh).functions[name]
        for name, sub in subs.items()
    }
    k = int(ck.meta["degree"])
    V, _ = flux_spaces(msh, k)
    F = fem.Function(V, name="flux")
    F.interpolate(fem.Expression(got["flux"], V.element.interpolation_points))
    F.x.scatter_forward()
    f = ck.functions
    return MixedSolution(msh, got["potential"], f["source"], f["target"], info, flux_rt=F, order=k)
