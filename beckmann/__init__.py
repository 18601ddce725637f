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

import os as _os


def _one_blas_thread_per_rank() -> None:
    """Under an MPI launcher with several ranks, one BLAS/OpenMP thread per rank by default.

    Every rank's OpenBLAS otherwise starts one thread per core: on 2 cores and 2 ranks the
    oversubscribed threads made the density phase of a 263k-dof solve 4-12x slower. Must run
    before NumPy is loaded; a value the user set is kept.
    """
    sizes = (_os.environ.get(n, "") for n in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS"))
    if any(s.isdigit() and int(s) > 1 for s in sizes):
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            _os.environ.setdefault(name, "1")


_one_blas_thread_per_rank()

from typing import Any as _Any  # noqa: E402

from beckmann._version import __version__  # noqa: E402
from beckmann.fields import Solution  # noqa: E402
from beckmann.pipeline import run, solve  # noqa: E402
from beckmann.store.run import load_run  # noqa: E402

__all__ = ["Solution", "__version__", "load_run", "run", "solve", "study"]


def __getattr__(name: str) -> _Any:
    """``beckmann.study`` on first use: ``beckmann solve`` does not import the holder package."""
    if name == "study":
        from beckmann.holder.studies import study

        return study
    raise AttributeError(f"module 'beckmann' has no attribute {name!r}")
