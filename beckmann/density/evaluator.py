"""Density evaluators: turn a ``[source]`` / ``[target]`` config section into a function of points.

:func:`make_evaluator` reads a section and returns an :class:`Evaluator`, a callable
``ev(x, params=None)`` that takes points in DOLFINx's interpolation layout (shape ``(3, N)``: rows
x, y, z; the z row is zero in 2D) and returns the *raw* density values, shape ``(N,)``. Nothing
here normalises or checks positivity: the caller normalises on the discrete domain and calls
:func:`~beckmann.density.checks.check_values`, which is collective and raises the same error on
every rank.

Kinds:

``uniform``
    The constant 1.
``expression``
    A formula in ``x, y, z``, the constants ``pi, e`` and named parameters, read by a small safe
    parser (:class:`Expression`): Python's :mod:`ast` builds the tree, only a whitelist of nodes
    is accepted, and the tree is compiled once into vectorised NumPy closures. User text is never
    passed to :func:`eval` or :func:`compile`.
``gaussian_mixture``
    ``sum_i w_i N(x; m_i, C_i)`` in ``gdim`` dimensions (:class:`GaussianMixture`).
``image``
    A PNG (values scaled to [0, 1]) or a ``.npy`` array over the mesh bounding box (aspect ratios
    must match) or over ``image_extent``, read by bilinear / trilinear interpolation
    (:mod:`~beckmann.density.image` states the convention).
``samples``
    A Gaussian kernel density estimate of the points in a ``.npy`` file (:class:`GaussianKDE`).

Every kind adds the section's ``floor``. Not collective: each rank reads files itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann.density.expression import Expression, check_params
from beckmann.density.grid import interpolate_grid
from beckmann.density.image import image_box, load_image
from beckmann.density.validate import as_points, check_bbox, real_number

__all__ = ["KINDS", "Evaluator", "make_evaluator"]

FloatArray = npt.NDArray[np.float64]

#: Density kinds :func:`make_evaluator` handles (``function`` is read from a run folder elsewhere).
KINDS = ("uniform", "expression", "gaussian_mixture", "image", "samples")


#: A cross-validated kernel is at least this many mesh sizes (``hmax``) wide: on a unit-square
#: mesh with n = 32 and P2, 0.7 h (0.0155) keeps the two-moons interpolant positive, 0.45 h
#: does not.
KDE_MESH_FACTOR = 0.7


class Evaluator:
    """A density as a function of points: ``ev(x, params=None) -> values``.

    Args:
        kind: The section's kind.
        gdim: Geometric dimension, 2 or 3.
        raw: ``raw(x, params)`` with ``x`` of shape ``(3, N)``; returns values broadcastable to
            ``(N,)``.
        floor: Constant added to every value.
        parameter_names: Names ``raw`` needs in ``params``.
        params: Default parameter values, overridden by those given at call time.
        constant: ``raw`` is this constant everywhere (``uniform``): callers may skip the points.

    Attributes:
        kind: As given.
        gdim: As given.
        floor: As given.
        parameter_names: Free parameter names of an expression (empty for other kinds).
        params: Default parameter values (from the section).
        constant: The value everywhere (floor included) of a constant density, else ``None``.
    """

    def __init__(
        self,
        kind: str,
        gdim: int,
        raw: Callable[[FloatArray, Mapping[str, float]], Any],
        *,
        floor: float = 0.0,
        parameter_names: frozenset[str] = frozenset(),
        params: Mapping[str, float] | None = None,
        constant: float | None = None,
    ) -> None:
        self.kind = kind
        self.constant = None if constant is None else float(constant) + floor
        self.gdim = gdim
        self.floor = floor
        self.parameter_names = parameter_names
        self.params: dict[str, float] = dict(params or {})
        self._raw = raw
        #: What was built, for the run summary (a kernel density estimate adds its bandwidth).
        self.description: dict[str, Any] = {"kind": kind, "floor": floor}

    def __repr__(self) -> str:
        return f"Evaluator(kind={self.kind!r}, gdim={self.gdim}, floor={self.floor})"

    def __call__(self, x: npt.ArrayLike, params: Mapping[str, float] | None = None) -> FloatArray:
        """Evaluate the density.

        Args:
            x: Points, shape ``(3, N)`` (DOLFINx's layout; the z row is ignored in 2D except by
                expressions, which see it as ``z``), or ``(gdim, N)``.
            params: Parameter values overriding the section's ``params``; names the density does
                not use are ignored.

        Returns:
            Raw values (floor included), shape ``(N,)``, float64.

        Raises:
            ValueError: Wrong point shape, a bad parameter value, or a parameter with no value.
        """
        pts = as_points(x, self.gdim)
        merged = dict(self.params)
        merged.update(check_params(params, "call-time params"))
        values = np.array(np.broadcast_to(self._raw(pts, merged), (pts.shape[1],)), np.float64)
        if self.floor != 0.0:
            values += self.floor
        return values


def make_evaluator(
    section: Mapping[str, Any],
    *,
    gdim: int,
    bbox: tuple[npt.ArrayLike, npt.ArrayLike],
    resolution: float | None = None,
) -> Evaluator:
    """Build the evaluator of a ``[source]`` or ``[target]`` config section.

    Keys read: ``kind``, ``floor`` (>= 0, added to every value) and, by kind, ``expr`` and
    ``params``; ``weights``, ``means`` and ``covariances``; ``path`` (relative paths are relative
    to the working directory) and ``image_extent``; ``bandwidth``. Other keys (``field``,
    ``min_density``, ...) are ignored. See the module docstring for the kinds. Not collective:
    each rank reads any file itself.

    Args:
        section: The config section.
        gdim: Geometric dimension of the mesh, 2 or 3.
        bbox: ``(lower, upper)`` corners of the mesh bounding box, each of length ``gdim``.
            Images are stretched over it; the kernel density estimate is gridded on it.
        resolution: The mesh size (``hmax``): a cross-validated kernel is kept at least
            ``KDE_MESH_FACTOR * resolution`` wide, which the mesh can represent.

    Returns:
        The evaluator.

    Raises:
        ValueError: A bad kind (including ``function``, which is not handled here), value or
            file content.
        RuntimeError: A file is missing or unreadable.
    """
    if gdim not in (2, 3):
        raise ValueError(f"gdim must be 2 or 3, got {gdim!r}")
    if not isinstance(section, Mapping):
        raise ValueError(f"density section must be a mapping, got {section!r}")
    lo, hi = check_bbox(bbox, gdim)
    kind = section.get("kind", "uniform")
    floor = real_number(section.get("floor", 0.0), "floor")
    if floor < 0:
        raise ValueError(f"floor must be >= 0, got {floor!r}")

    if kind == "uniform":
        return Evaluator(kind, gdim, lambda x, p: 1.0, floor=floor, constant=1.0)
    if kind == "expression":
        expression = Expression(section.get("expr", ""))
        params = check_params(section.get("params", {}), "params")
        return Evaluator(
            kind,
            gdim,
            expression.evaluate,
            floor=floor,
            parameter_names=expression.parameter_names,
            params=params,
        )
    if kind == "gaussian_mixture":
        from beckmann.density.mixture import GaussianMixture  # SciPy: imported when used

        mixture = GaussianMixture(
            section.get("weights", []),
            section.get("means", []),
            section.get("covariances", []),
            gdim,
        )
        return Evaluator(kind, gdim, lambda x, p: mixture(x[:gdim]), floor=floor)
    if kind in ("image", "samples"):
        path = section.get("path", "")
        if not isinstance(path, str | Path) or not str(path):
            raise ValueError(f"kind {kind!r} needs a file in 'path', got {path!r}")
        if kind == "image":
            grid = load_image(path, gdim)
            extent = section.get("image_extent") or None
            ilo, ihi = image_box(grid.shape, (lo, hi), extent, path)
            step = (ihi - ilo) / (np.array(grid.shape) - 1)
            if extent is None:
                return Evaluator(
                    kind,
                    gdim,
                    lambda x, p: interpolate_grid(grid, ilo, step, x[:gdim]),
                    floor=floor,
                )
            # an explicit extent: 0 outside it (round-off at its faces still counts as inside)
            tol = 1e-12 * float(np.max(ihi - ilo))

            def placed(x: FloatArray, p: Mapping[str, float]) -> FloatArray:
                y = x[:gdim]
                inside = np.all((y >= ilo[:, None] - tol) & (y <= ihi[:, None] + tol), axis=0)
                return np.where(inside, interpolate_grid(grid, ilo, step, y), 0.0)

            return Evaluator(kind, gdim, placed, floor=floor)
        from beckmann.density.kde import GaussianKDE, load_samples  # SciPy: when used

        kde = GaussianKDE(
            load_samples(path, gdim),
            bandwidth=section.get("bandwidth", 0.0),
            bbox=(lo, hi),
            rule=section.get("bandwidth_rule", "scott"),
            min_bandwidth=0.0 if resolution is None else KDE_MESH_FACTOR * resolution,
        )
        ev = Evaluator(kind, gdim, lambda x, p: kde(x[:gdim]), floor=floor)
        ev.description = {"kind": kind, "floor": floor, **kde.description}
        return ev
    if kind == "function":
        raise ValueError(
            "density kind 'function' reads a field from a run folder and is not handled by "
            "make_evaluator"
        )
    raise ValueError(f"unknown density kind {kind!r}; expected one of {', '.join(KINDS)}")
