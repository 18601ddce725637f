"""beckmann: finite elements for Beckmann's optimal-transport problem with squared flux.

The library without the command line::

    import beckmann
    from beckmann import config

    cfg = config.resolve(sets=["mesh.n=32"])
    sol = beckmann.solve(cfg)                    # in memory: sol.phi, sol.flux(), sol.evaluate
    beckmann.run(cfg, out="runs/a")             # and a run folder
    again = beckmann.load_run("runs/a", sol.comm)
    table = beckmann.study(cfg, levels=3, refine="n", expect=["hessian=0.5+-0.1"])

Formulas, signs and norms: ``docs/math.md``.
"""

from beckmann._version import __version__
from beckmann.fields import Solution
from beckmann.holder.studies import study
from beckmann.pipeline import run, solve
from beckmann.store.run import load_run

__all__ = ["Solution", "__version__", "load_run", "run", "solve", "study"]
