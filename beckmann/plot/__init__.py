"""Pictures of a run folder: PNG figures made off-screen, no display needed.

``beckmann plot DIR [--out FOLDER]`` (:func:`plot_run`) reads the vertex (P1) fields of
``DIR/solution.xdmf`` and the velocity time series of ``DIR/velocity.xdmf`` and writes, into
``FOLDER`` (default ``DIR/figures``):

``densities.png``
    source p0 and target p1 on one colour scale.
``potential.png``
    the potential φ with contour lines.
``flux.png``
    |F| with streamlines of the flux F = ∇φ (2D) or arrows on slices and streamlines (3D).
``velocity.png``
    |v_t| with arrows, one panel per stored time t.
``samples.png``
    transported samples, when ``DIR/samples.traj.npy`` or ``DIR/samples.npy`` exists (as
    ``beckmann sample DIR --out DIR/samples.npy [--save-every K]`` writes them) or ``--samples``
    names a file: an ``N x d`` array (end points, drawn over the target) or a ``T x N x d``
    array of paths.
``holder.png``
    moduli of continuity ω(δ) on log–log axes, for every ``{"scales": [...], "modulus": [...]}``
    found in ``DIR/holder*.json`` (as ``beckmann holder DIR --json-out DIR/holder.json`` writes
    them) or in ``--holder`` files.

Modules: :mod:`~beckmann.plot.data` reads a run folder (meshio's XDMF reader),
:mod:`~beckmann.plot.pv` draws with pyvista off-screen, :mod:`~beckmann.plot.mpl` is the
matplotlib fallback where VTK cannot open an off-screen context, :mod:`~beckmann.plot.holder`
draws Hölder moduli, :mod:`~beckmann.plot.samples` draws transported samples as a density,
:mod:`~beckmann.plot.run` puts them together on rank 0, and :mod:`~beckmann.plot.member` draws
one member of a sweep store (``beckmann plot STORE --param NAME=VALUE``).
"""

from beckmann.plot.data import RunFields, read_run_fields, read_samples
from beckmann.plot.holder import find_moduli, plot_moduli
from beckmann.plot.member import render_member
from beckmann.plot.pv import render_available
from beckmann.plot.run import BACKENDS, draw_run, plot_run, render_run
from beckmann.plot.samples import histogram_bins, plot_samples

__all__ = [
    "BACKENDS",
    "RunFields",
    "draw_run",
    "find_moduli",
    "histogram_bins",
    "plot_moduli",
    "plot_run",
    "plot_samples",
    "read_run_fields",
    "read_samples",
    "render_available",
    "render_member",
    "render_run",
]
