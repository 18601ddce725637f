"""Separated forms of expression targets (``beckmann.density.separable``, docs/reduced.md).

The reference is the expression itself: its evaluator at every point of a tensor grid, against
the separated form's one-dimensional factors multiplied out; and the forms it must refuse.
"""

from __future__ import annotations

import numpy as np
import pytest

from beckmann import density
from beckmann.density.separable import separate

SEPARABLE = [
    ("0.2 + exp(-((x - a)**2 + (y - b)**2) / 0.02)", {}, 2),
    ("(1 + a)*cos(pi*x)*cos(pi*y) + a*cos(2*pi*x) + 3", {}, 3),
    ("2 + sin(a*x + b*y + 0.3)", {}, 3),  # the addition theorem: 2 terms
    ("3 + cos(x - y) * b", {}, 3),
    ("x*y / (1 + a*y)**2 + c", {"c": 0.5}, 2),
    ("cosh(a*x + y) - sinh(x + b*y) + 4", {}, 5),
    ("-(x - a)**3 * exp(-y*b) + 7", {}, 5),  # (x - a)³: a power of one product
    ("(x + a*y)**2 + 1", {}, 5),  # a power of a sum, multiplied out
    ("5 - a*b", {}, 2),  # no coordinate at all
]


def _grid_values(expr: str, params: dict, X, Y, T) -> np.ndarray:
    """The expression's own evaluator at every grid point, θ by θ (the reference)."""
    ev = density.make_evaluator({"kind": "expression", "expr": expr, "params": params},
                                gdim=2, bbox=(np.zeros(2), np.ones(2)))
    xx, yy = np.meshgrid(X, Y, indexing="ij")
    pts = np.vstack([xx.ravel(), yy.ravel(), np.zeros(xx.size)])
    return np.stack([np.broadcast_to(ev(pts, {"a": a, "b": b}), (pts.shape[1],)).reshape(xx.shape)
                     for a, b in T])


@pytest.mark.parametrize(("expr", "params", "max_terms"), SEPARABLE)
def test_separated_form_equals_the_expression_on_a_grid(expr, params, max_terms):
    """Σ_r s_r u_r(x) v_r(y) at every grid point is the expression's value to round-off, and
    each factor is a function of its own coordinate alone (its values: one per grid line)."""
    sep = separate(density.Expression(expr), ["a", "b"], params)
    assert sep is not None
    assert 1 <= len(sep) <= max_terms
    rng = np.random.default_rng(11)
    X, Y = np.sort(rng.random(23)), np.sort(rng.random(17))
    T = rng.random((5, 2)) * 0.6 + 0.2
    ref = _grid_values(expr, params, X, Y, T)
    got = sep.evaluate(X, Y, T)
    assert got.shape == ref.shape
    assert np.allclose(got, ref, rtol=1e-13, atol=1e-13 * np.abs(ref).max())
    for r in range(len(sep)):
        assert sep.factor(r, "x", X, T).shape == (5, X.size)
        assert sep.factor(r, "y", Y, T).shape == (5, Y.size)
        assert sep.factor(r, "", X, T).shape == (5, 1)


def test_factors_read_only_their_parameters():
    """The bump's x factor reads a alone, its y factor b alone: on a product grid of θ the
    certificate evaluates each distinct factor once."""
    sep = separate(density.Expression("0.2 + exp(-((x - a)**2 + (y - b)**2) / 0.02)"),
                   ["a", "b"])
    assert sep is not None
    bump = [u for u in sep.uses if u["x"] or u["y"]]
    assert bump == [{"": frozenset(), "x": frozenset({"a"}), "y": frozenset({"b"})}]


@pytest.mark.parametrize(
    ("expr", "params"),
    [("exp(x*y)", {}), ("sqrt(x + y) + a", {}), ("x + y + z + a", {}), ("max(x, y) + a", {}),
     ("(x + y + a)**3 / (2 + b*x)", {}),  # 1/(2 + b x) is not one product
     ("(x + y + a)**9", {}),  # more terms than allowed
     ("(x*y)**0.5 + a", {}),  # a real power of a product needs signs
     ("a*x + q*y", {})],  # q has no value
)
def test_forms_that_do_not_separate_are_refused(expr, params):
    assert separate(density.Expression(expr), ["a", "b"], params) is None
