"""beckmann: finite elements for Beckmann's optimal-transport problem with squared flux.

The library without the command line::

    import beckmann
    from beckmann import config

    cfg = config.resolve(sets=["mesh.n=32", "target.kind=expression",
                               "target.expr=1 + ((x-0.5)**2 + (y-0.5)**2)**0.25"])
    sol = beckmann.solve(cfg)                    # in memory: sol.phi, sol.flux(), sol.evaluate
    beckmann.run(cfg, out="runs/a")             # and a run folder
    again = beckmann.load_run("runs/a", sol.comm)
    table = beckmann.study(cfg, levels=2, refine="n", expect=["density-difference=0.5+-0.05"])

Formulas, signs and norms: ``docs/math.md``.
"""

from beckmann._version import __version__
from beckmann.fields import Solution
from beckmann.holder.studies import study
from beckmann.pipeline import run, solve
from beckmann.store.run import load_run

__all__ = ["Solution", "__version__", "load_run", "run", "solve", "study"]
