"""A mixed run's checkpoint (``solver.formulation = "mixed"``): written, and read back.

A mixed run folder is a run folder (:mod:`beckmann.store.run`) whose checkpoint holds the
densities (P_k) in ``checkpoint/``, the flux in ``checkpoint/flux/`` as a vector DG_k function
(``RT_k ⊂ [P_k]^d`` on each cell, so the copy is exact) and the potential in
``checkpoint/potential/`` (DG_{k-1}); all three refer to ``solution.xdmf``'s mesh and reload on
any number of ranks. :func:`load_mixed` rebuilds the :class:`~beckmann.mixed.MixedSolution`,
interpolating the DG_k flux back into RT_k (exact: the moments defining the RT dofs are
integrated exactly for polynomials of degree k). The solve itself is
:func:`beckmann.mixed_run.solve_mixed`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from beckmann._dolfinx import fem
from beckmann.mixed import MixedSolution, flux_spaces
from beckmann.store.checkpoint import Checkpoint, read_checkpoint, write_checkpoint

__all__ = ["MIXED_FIELDS", "load_mixed", "write_mixed_checkpoint"]

#: Sub-folders of a mixed run's checkpoint, one per space: field name -> folder.
MIXED_FIELDS = {"flux": "flux", "potential": "potential"}


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
