r"""Parametric sweeps: many targets :math:`p_1(x;\theta)` on one operator, resumable, over MPI.

Modules, along the data flow:

- :mod:`.grid`: parameter grids (lists, ``linspace``, ``random``, ``lhs``, products);
- :mod:`.spec`: the validated ``[sweep]`` section (options in :data:`beckmann.config.OPTIONS`);
- :mod:`.engine`: the per-group solve engine (mesh, operator and factorisation built once);
- :mod:`.store`: the resumable store (layout, one entry per θ, reload on any rank count);
- :mod:`.run`: :func:`run_sweep`, the main loop over rank groups;
- :mod:`.modulus`, :mod:`.continuity`, :mod:`.holder_norms`: the continuity-in-θ report;
- :mod:`.probe`: fields at a θ on or between grid values.

Example::

    from beckmann import config, sweep

    cfg = config.resolve("sweep.toml", extra_sections=("sweep",))
    summary = sweep.run_sweep(cfg, out="store")
    store = sweep.SweepStore("store", comm)
    res = sweep.probe(store, {"theta": 0.45}, [[0.2, 0.3]], interpolate=True)
"""

from beckmann.sweep.continuity import continuity_report
from beckmann.sweep.engine import Engine
from beckmann.sweep.grid import Grid, make_grid
from beckmann.sweep.probe import probe, theta_solution
from beckmann.sweep.run import run_sweep
from beckmann.sweep.spec import SweepSpec, parse_params, parse_sweep, with_params
from beckmann.sweep.store import SweepStore

__all__ = [
    "Engine",
    "Grid",
    "SweepSpec",
    "SweepStore",
    "continuity_report",
    "make_grid",
    "parse_params",
    "parse_sweep",
    "probe",
    "run_sweep",
    "theta_solution",
    "with_params",
]
