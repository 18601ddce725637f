r"""Moving samples along :math:`v_t`: exact sampling, batched evaluation, RK4/RK45, distances.

A user draws samples :math:`X_0 \sim p_0`, integrates :math:`dX/dt = v_t(X)` from :math:`t = 0`
to :math:`1` with the velocity of a :class:`~beckmann.paths.PathFlux`, and should end with samples
of :math:`p_1` (docs/math.md, paths). One job per module:

* :mod:`~beckmann.density.bernstein` (re-exported): the Bernstein form of a Lagrange
  polynomial (exact cell masses and bounds, cheap evaluation);
* :mod:`~beckmann.transport.sampling`: exact samples of a finite-element density, rank-count
  independent, and the distributed :class:`Samples`;
* :mod:`~beckmann.transport.evaluate`: :class:`FieldEvaluator`, the batched velocity of a path;
* :mod:`~beckmann.transport.integrate`: :class:`Transporter`, RK4/RK45 and migration of samples
  between ranks;
* :mod:`~beckmann.transport.stats`: histogram TV, bin masses, energy distance;
* :mod:`~beckmann.transport.driver`: :func:`sample_transport`, the whole experiment.

Cell geometry and point location (:class:`~beckmann.locate.MeshCells`) live in
:mod:`beckmann.locate`; path energies in :mod:`beckmann.paths`.
"""

from __future__ import annotations

from beckmann.density.bernstein import bernstein_matrix
from beckmann.locate import MeshCells
from beckmann.transport.driver import sample_transport
from beckmann.transport.evaluate import FieldEvaluator
from beckmann.transport.integrate import Transporter
from beckmann.transport.sampling import Samples, gather_samples, sample_density
from beckmann.transport.stats import bin_counts, bin_masses, energy_distance, histogram_tv

__all__ = [
    "FieldEvaluator",
    "MeshCells",
    "Samples",
    "Transporter",
    "bernstein_matrix",
    "bin_counts",
    "bin_masses",
    "energy_distance",
    "gather_samples",
    "histogram_tv",
    "sample_density",
    "sample_transport",
]
