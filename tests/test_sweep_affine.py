"""Sweeps of targets polynomial in θ: the decomposition ``f(x; θ) = Σ_k θ^{e_k} f_k(x)``.

The decomposition is checked against the expression itself at random points and θ; the sweep's
affine path (θ-independent fields once, one solve per term) against independent solves.
"""

from __future__ import annotations

import numpy as np
import pytest

from beckmann.density import Expression


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("(1 + theta)*cos(pi*x)*cos(pi*y) + theta*cos(2*pi*x) + 3", 2),
        ("theta**2*x - (a*theta + 1)/(2 + x)", 3),
        ("-(theta - x)*(theta + y)/3 + +theta*b", 4),
        ("x + y", 1),
    ],
)
def test_polynomial_equals_expression(text, terms):
    rng = np.random.default_rng(0)
    x = rng.random((3, 500))
    expr = Expression(text)
    form = expr.polynomial(["theta", "b"] if "b" in text else ["theta"], {"a": 0.7})
    assert form is not None and len(form) == terms
    fields = form.fields(x)
    for theta in rng.normal(size=4) * 2:
        th = {"theta": theta, "b": 0.3 * theta}
        want = expr.evaluate(x, {**th, "a": 0.7})
        got = form.coefficients(th) @ fields
        assert np.abs(got - want).max() <= 1e-13 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize(
    "text", ["exp(theta*x)", "1/theta", "x**theta", "theta**5", "(theta + x)**4 * (1 + theta)**4"]
)
def test_not_polynomial(text):
    assert Expression(text).polynomial(["theta"]) is None


def test_free_parameter_without_value_is_not_polynomial():
    assert Expression("a*theta").polynomial(["theta"]) is None
