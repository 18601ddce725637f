"""ReQu (and other) networks fitted to a field and its derivatives; networks as velocities.

One job per module:

- :mod:`~beckmann.requ.network`: the model and its NumPy evaluation (values, Jacobians),
- :mod:`~beckmann.requ.norms`: error norms on held-out points (C⁰, C¹, Hölder, L²),
- :mod:`~beckmann.requ.train`: training with JAX/optax (the optional ``nn`` extra),
- :mod:`~beckmann.requ.data`: training points and values from runs and sweep stores,
- :mod:`~beckmann.requ.model_io`: saving and loading (JSON + npz, no pickle),
- :mod:`~beckmann.requ.fitting`: ``beckmann fit`` as a library call (:func:`fit_field`),
- :mod:`~beckmann.requ.surrogate`: a fitted velocity driving the transport,
- :mod:`~beckmann.requ.export`: a self-contained ``.npz`` and a NumPy/JAX loader.

See docs/math.md ("ReQu networks") for the loss and the norms.
"""

from beckmann.requ.data import (
    FIELDS,
    SAMPLINGS,
    eval_function,
    field_values,
    is_sweep_store,
    member_data,
    members,
    sample_domain,
    sample_points,
    training_set,
)
from beckmann.requ.export import export, load_export
from beckmann.requ.fitting import FitSettings, check_outputs, fit_field
from beckmann.requ.model_io import FORMAT, load, model_files, save
from beckmann.requ.network import ACTIVATIONS, Network
from beckmann.requ.norms import errors, holder_seminorm
from beckmann.requ.surrogate import NetworkVelocity, model_velocity, velocity_inputs
from beckmann.requ.train import fit

__all__ = [
    "ACTIVATIONS",
    "FIELDS",
    "FORMAT",
    "SAMPLINGS",
    "FitSettings",
    "Network",
    "NetworkVelocity",
    "check_outputs",
    "errors",
    "export",
    "eval_function",
    "field_values",
    "fit",
    "fit_field",
    "holder_seminorm",
    "is_sweep_store",
    "load",
    "load_export",
    "member_data",
    "members",
    "model_files",
    "model_velocity",
    "sample_domain",
    "sample_points",
    "save",
    "training_set",
    "velocity_inputs",
]
