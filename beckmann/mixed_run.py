r"""``solver.formulation = "mixed"`` in a run: the solve from a resolved config.

:func:`solve_mixed` is what :func:`beckmann.pipeline.solve` calls for a mixed run: the same
densities as the primal solve (P_k interpolants certified positive, quadrature values for the
right-hand side, :mod:`beckmann.density.discrete`), then the Raviart-Thomas solve of
:class:`~beckmann.mixed.MixedPoisson` with the right-hand side
:math:`\int (p_0 - p_1)\,q\,dx` at the densities' own quadrature points. Its summary adds the
``formulation``, the ``solver``, the cellwise ``divergence_defect``
:math:`\max |\nabla\cdot F_h - \Pi(p_0 - p_1)|` (Π the L²-projection onto DG\ :sub:`k-1` with
the same quadrature) and ``boundary_flux`` :math:`\|F_h\cdot n\|_{L^2(\partial\Omega)}`.

Its run folder is written and read back by :mod:`beckmann.store.mixed` (the storage layer does
not import this module: ``store`` sits below the solves).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from beckmann._dolfinx import MPI, fem, ufl
from beckmann._version import __version__
from beckmann.density.discrete import DensityPoints
from beckmann.mesh import describe
from beckmann.mixed import MixedPoisson, MixedSolution

__all__ = ["solve_mixed"]


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
        points = DensityPoints(V, s["quadrature_degree"], (cfg["source"], cfg["target"]))
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
