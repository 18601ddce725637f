"""Hölder estimators: moduli of continuity, seminorms, sup norms and fitted exponents.

Definitions: docs/math.md §5.

Modules, along the data flow:

- :mod:`.exact`: all pairs across ranks (the reference);
- :mod:`.multiscale`: the tree method (branch and bound, the same numbers, about ``n log n``);
- :mod:`.fit`: scales, windows and fitted exponents of a modulus;
- :mod:`.pointcloud`: the estimators on distributed point data (``estimate`` and its parts);
- :mod:`.derivatives`: derivatives of finite-element fields and their nodal point clouds;
- :mod:`.fe`: ``C^{k,α}`` norms of finite-element fields and of a solution's fields;
- :mod:`.studies`: regularity studies over mesh levels (``study``).

Every estimator is collective; the numbers are the same on every rank.
"""

from beckmann.holder.derivatives import recover_derivatives
from beckmann.holder.fe import FIELDS, field_norms, solution_field, solution_norms
from beckmann.holder.fit import Exponent, default_scales, fit_exponent
from beckmann.holder.pointcloud import HolderResult, estimate, modulus, seminorm, sup_norm
from beckmann.holder.studies import Expectation, parse_expectation, study

__all__ = [
    "FIELDS",
    "Expectation",
    "Exponent",
    "HolderResult",
    "default_scales",
    "estimate",
    "field_norms",
    "fit_exponent",
    "modulus",
    "parse_expectation",
    "recover_derivatives",
    "seminorm",
    "solution_field",
    "solution_norms",
    "study",
    "sup_norm",
]
