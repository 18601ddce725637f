"""Density sources: a ``[source]`` / ``[target]`` config section -> a function of points.

:func:`make_evaluator` (:mod:`~beckmann.density.evaluator`) reads a section and returns an
:class:`Evaluator` ``ev(x, params=None)`` of points in DOLFINx's layout ``(3, N)``. The kinds live
one per module: :mod:`~beckmann.density.expression` (the safe formula compiler),
:mod:`~beckmann.density.mixture`, :mod:`~beckmann.density.image`, :mod:`~beckmann.density.kde`;
:mod:`~beckmann.density.checks` holds the collective checks of the values.
"""

from beckmann.density.checks import check_values
from beckmann.density.evaluator import KINDS, Evaluator, make_evaluator
from beckmann.density.expression import CONSTANTS, COORDINATES, FUNCTIONS, Expression
from beckmann.density.image import load_image

__all__ = [
    "CONSTANTS",
    "COORDINATES",
    "FUNCTIONS",
    "KINDS",
    "Evaluator",
    "Expression",
    "GaussianKDE",
    "GaussianMixture",
    "check_values",
    "load_image",
    "load_samples",
    "make_evaluator",
]


def __getattr__(name: str) -> object:
    """The SciPy-backed kinds, imported on first use (``beckmann solve`` starts without SciPy)."""
    if name in ("GaussianKDE", "load_samples"):
        from beckmann.density import kde

        return getattr(kde, name)
    if name == "GaussianMixture":
        from beckmann.density.mixture import GaussianMixture

        return GaussianMixture
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
