"""The one place that imports DOLFINx, PETSc and MPI.

The PyPI wheel ``dolfinx-solver-real`` vendors DOLFINx with its own MPICH and PETSc; its package
``dolfinx_solver`` must be imported before ``dolfinx`` so that ``mpi4py.MPI`` is loaded ahead of
the compiled bindings (otherwise ``libmpi.so.12`` is not found). A conda, spack or Docker DOLFINx
has no such package, and is imported directly. Every other module of beckmann imports the stack
from here.
"""

from __future__ import annotations

try:  # the PyPI wheel: must come first
    import dolfinx_solver  # noqa: F401

    DISTRIBUTION = "dolfinx-solver-real"
except ImportError:  # conda / spack / Docker / source build
    DISTRIBUTION = "system"

import sys as _sys

# dolfinx passes sys.argv to its C++ logger at import, which takes only valid UTF-8: an argument
# with undecodable bytes (kept by Python as surrogates) made every command, even --version, end
# in a TypeError there. The logger gets a copy with those bytes replaced; sys.argv is unchanged.
_argv = _sys.argv
_sys.argv = [a.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for a in _argv]
try:
    import basix
    import dolfinx
    import dolfinx.fem.petsc
    import dolfinx.io
    import ufl
    from dolfinx import fem, geometry, la
    from dolfinx import mesh as dmesh
    from mpi4py import MPI
    from petsc4py import PETSc
except ImportError as err:  # pragma: no cover - depends on the machine
    raise ImportError(
        "beckmann needs DOLFINx 0.11 with PETSc (real scalars). Install it with "
        "`pip install dolfinx-solver-real` (Python >= 3.12), or use a conda/spack/Docker "
        f"DOLFINx. The import failed with: {err}"
    ) from err
finally:
    _sys.argv = _argv

if PETSc.ScalarType().dtype.kind == "c":  # pragma: no cover - depends on the machine
    raise ImportError("beckmann needs a real-valued PETSc build; this one is complex.")

__all__ = [
    "DISTRIBUTION",
    "MPI",
    "PETSc",
    "basix",
    "dmesh",
    "dolfinx",
    "fem",
    "geometry",
    "la",
    "ufl",
]
