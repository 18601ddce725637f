"""Saving and loading networks: ``MODEL.json`` (architecture) + ``MODEL.npz`` (weights), no pickle.

The JSON holds the format name and version, the activation, the layer widths, the input box, the
output normalisation, the field and input names and the training report (``info``). The
``.npz`` holds ``W0, b0, W1, b1, ...`` in float64.

Loading is defensive, since a model file may come from anywhere: the JSON is size-limited, every
array header in the ``.npz`` is read and checked against the widths the JSON declares *before*
any array data is allocated (a header declaring a huge array is refused), no pickled object is
ever read, and NaN or infinite weights or normalisation are rejected, naming the file.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann.requ.flux_velocity import FluxVelocity
from beckmann.requ.network import Network
from beckmann.store import dumps_json
from beckmann.store.folder import read_stamped_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "architecture",
    "load",
    "model_files",
    "read_npz",
    "save",
]

FloatArray = npt.NDArray[np.float64]

FORMAT = "beckmann-network"
FORMAT_VERSION = 1
#: The version of a velocity in the flux form (``velocity_form``, density tables): a reader of
#: version 1 only refuses it instead of taking the flux network for the velocity.
FLUX_FORMAT_VERSION = 2
_MAX_JSON_BYTES = 64 * 2**20
#: Largest array (in elements) a model file may declare; a 4096 x 4096 layer is 16.8M.
MAX_ARRAY_ELEMENTS = 2**25


def model_files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(MODEL.json, MODEL.npz)`` for ``MODEL``, ``MODEL.json`` or ``MODEL.npz``."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".npz")


def architecture(model: Network | FluxVelocity) -> dict[str, Any]:
    """The JSON-serialisable description of ``model`` saved next to its weights.

    A :class:`~beckmann.requ.flux_velocity.FluxVelocity` is saved as its flux network (the
    widths, box and normalisation are the flux network's) with ``field = "velocity"``,
    ``velocity_form = "flux/p_t"`` and ``density_grid`` (box and nodes per axis of the tables
    ``density_p0``, ``density_p1`` in the ``.npz``).
    """
    if isinstance(model, FluxVelocity):
        arch = architecture(model.flux)
        arch.update(
            version=FLUX_FORMAT_VERSION, field="velocity", velocity_form=model.form,
            info=model.info,
            density_grid={
                "lower": [float(v) for v in model.grid_lower],
                "upper": [float(v) for v in model.grid_upper],
                "shape": list(model.p0.shape),
            },
        )  # fmt: skip
        return arch
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "activation": model.activation,
        "widths": model.widths,
        "scalar": model.scalar,
        "field": model.field,
        "input_names": list(model.input_names),
        "input_lower": [float(v) for v in model.lower],
        "input_upper": [float(v) for v in model.upper],
        "output_shift": [float(v) for v in model.shift],
        "output_scale": float(model.scale),
        "info": model.info,
    }


def save(model: Network | FluxVelocity, path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``PATH.json`` (architecture) and ``PATH.npz`` (weights); no pickle.

    A ``.npz`` or ``.json`` suffix on ``path`` is dropped. Not collective: call it on one rank.

    Returns:
        The paths of the JSON and the weights file.
    """
    js, npz = model_files(path)
    js.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}
    net = model.flux if isinstance(model, FluxVelocity) else model
    for i, (W, b) in enumerate(net.weights):
        arrays[f"W{i}"] = np.asarray(W, dtype=np.float64)
        arrays[f"b{i}"] = np.asarray(b, dtype=np.float64)
    if isinstance(model, FluxVelocity):
        arrays["density_p0"], arrays["density_p1"] = model.p0, model.p1
    # Written beside and renamed, so that a reader never sees half a model file.
    part_npz, part_js = npz.with_name(npz.name + ".part"), js.with_name(js.name + ".part")
    with open(part_npz, "wb") as f:
        np.savez(f, **arrays)
    part_js.write_text(dumps_json(architecture(model)) + "\n")
    os.replace(part_npz, npz)
    os.replace(part_js, js)
    return js, npz


def read_npz(path: Path, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, FloatArray]:
    """The float arrays of an ``.npz``, each header checked before its data is read.

    Args:
        path: The file.
        shapes: If given, the exact names and shapes required; otherwise any shapes of at most
            :data:`MAX_ARRAY_ELEMENTS` elements.

    Raises:
        ValueError: Not a zip of ``.npy`` files, an object or non-numeric dtype, a shape other
            than required, a declared size too large, or NaN/inf values; the message names
            ``path``.
    """
    out: dict[str, FloatArray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"unsupported .npy version {version}")
                    if dtype.kind not in "fiu" or dtype.hasobject:
                        raise ValueError(f"array {name!r} has dtype {dtype}, not a number type")
                    want = None if shapes is None else shapes.get(name)
                    if shapes is not None and want is None:
                        raise ValueError(f"unexpected array {name!r}")
                    if want is not None and tuple(shape) != want:
                        raise ValueError(f"array {name!r} has shape {shape}, expected {want}")
                    if math.prod(shape) > MAX_ARRAY_ELEMENTS:
                        raise ValueError(f"array {name!r} declares shape {shape}: too large")
                    count = math.prod(shape)
                    data = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)
                    if data.size != count:
                        raise ValueError(f"array {name!r} is truncated")
                    order = "F" if fortran else "C"
                    out[name] = data.reshape(shape, order=order).astype(np.float64)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"cannot read weights {str(path)!r}: {err}") from err
    except ValueError as err:
        raise ValueError(f"cannot read weights {str(path)!r}: {err}") from err
    if shapes is not None and set(shapes) - set(out):
        raise ValueError(f"weights {str(path)!r} lack arrays {sorted(set(shapes) - set(out))}")
    for name, a in out.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"weights {str(path)!r}: array {name!r} contains NaN or inf")
    return out


def _read_json(js: Path) -> dict[str, Any]:
    if js.stat().st_size > _MAX_JSON_BYTES:
        raise ValueError(f"{str(js)!r} is larger than {_MAX_JSON_BYTES} bytes: not a model")
    arch = read_stamped_json(js, FORMAT, f"a beckmann network (missing format {FORMAT!r})")
    version = arch.get("version")
    if version not in (FORMAT_VERSION, FLUX_FORMAT_VERSION):
        raise ValueError(
            f"{str(js)!r} has format version {version!r}; "
            f"this beckmann reads versions {FORMAT_VERSION} and {FLUX_FORMAT_VERSION}"
        )
    if (version == FLUX_FORMAT_VERSION) != ("velocity_form" in arch):
        what = "lacks its velocity_form" if "velocity_form" not in arch else "has a velocity_form"
        raise ValueError(f"{str(js)!r}: a model of format version {version} {what}")
    return arch


def _floats(arch: dict[str, Any], key: str, n: int, js: Path) -> FloatArray:
    a = np.asarray(arch[key], dtype=np.float64).reshape(-1)
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{str(js)!r}: {key} must be {n} finite numbers, got {arch[key]!r}")
    return a


def load(
    path: str | os.PathLike[str],
    *,
    input_dim: int | None = None,
    input_names: Sequence[str] | None = None,
    field: str | None = None,
) -> Network | FluxVelocity:
    """Load a model written by :func:`save`, checking it against what the caller needs.

    Not collective (call it on every rank that needs the model, or on one and broadcast).

    Args:
        path: ``MODEL``, ``MODEL.json`` or ``MODEL.npz``.
        input_dim: If given, the number of inputs the caller will pass.
        input_names: If given, the input names the caller expects (order matters).
        field: If given, the field the model must approximate.

    Raises:
        ValueError: Missing files, a file that is not a beckmann model, weights that do not match
            the architecture or are not finite, or a model incompatible with
            ``input_dim``/``input_names``/``field``.
    """
    js, npz = model_files(path)
    stem = js.with_suffix("")
    for f in (js, npz):
        if not f.is_file():
            raise ValueError(f"model file {str(f)!r} not found (a model is MODEL.json + MODEL.npz)")
    arch = _read_json(js)
    try:
        widths = [int(w) for w in arch["widths"]]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"{str(js)!r}: bad layer widths {widths}")
        shapes: dict[str, tuple[int, ...]] = {}
        for i in range(len(widths) - 1):
            shapes[f"W{i}"] = (widths[i], widths[i + 1])
            shapes[f"b{i}"] = (widths[i + 1],)
        form = arch.get("velocity_form")
        if form is not None:
            if form != FluxVelocity.form:
                raise ValueError(f"{str(js)!r}: unknown velocity_form {form!r}")
            grid_shape = tuple(int(n) for n in arch["density_grid"]["shape"])
            if len(grid_shape) != widths[0] or min(grid_shape) < 2:
                raise ValueError(f"{str(js)!r}: bad density grid {list(grid_shape)}")
            if math.prod(grid_shape) > MAX_ARRAY_ELEMENTS:
                raise ValueError(f"{str(js)!r}: density grid {list(grid_shape)} too large")
            shapes["density_p0"] = shapes["density_p1"] = grid_shape
        try:
            arrays = read_npz(npz, shapes)
        except ValueError as err:
            if "has shape" in str(err):
                raise ValueError(f"{err} (layer widths {widths} in the JSON)") from err
            raise
        weights = [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(len(widths) - 1)]
        d, m = widths[0], widths[-1]
        model: Network | FluxVelocity = Network(
            activation=str(arch["activation"]),
            weights=weights,
            lower=_floats(arch, "input_lower", d, js),
            upper=_floats(arch, "input_upper", d, js),
            shift=_floats(arch, "output_shift", m, js),
            scale=float(arch["output_scale"]),
            scalar=bool(arch["scalar"]),
            field="flux" if form is not None else str(arch.get("field", "")),
            input_names=[str(n) for n in arch["input_names"]],
            info=dict(arch.get("info", {})),
        )
        if form is not None:
            grid = arch["density_grid"]
            assert isinstance(model, Network)
            model = FluxVelocity(
                model, _floats(grid, "lower", d, js), _floats(grid, "upper", d, js),
                arrays["density_p0"], arrays["density_p1"], model.info,
            )  # fmt: skip
    except KeyError as err:
        raise ValueError(f"model {str(stem)!r} lacks entry {err}") from err
    except (TypeError, ValueError) as err:
        if isinstance(err, ValueError) and str(stem) in str(err):
            raise
        raise ValueError(f"cannot read model {str(stem)!r}: {err}") from err
    net = model.flux if isinstance(model, FluxVelocity) else model
    if np.any(net.upper <= net.lower):
        raise ValueError(f"model {str(stem)!r}: bad input normalisation box")
    if not (math.isfinite(net.scale) and net.scale > 0):
        raise ValueError(f"model {str(stem)!r}: bad output normalisation")
    if input_dim is not None and model.input_dim != input_dim:
        raise ValueError(
            f"model {str(stem)!r} takes {model.input_dim} inputs {model.input_names}, "
            f"but {input_dim} were given"
        )
    if input_names is not None and list(input_names) != model.input_names:
        raise ValueError(
            f"model {str(stem)!r} takes inputs {model.input_names}, expected {list(input_names)}"
        )
    if field is not None and model.field != field:
        raise ValueError(f"model {str(stem)!r} approximates {model.field!r}, not {field!r}")
    return model
