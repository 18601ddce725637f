"""Hostile inputs to the network files and commands (issue 12): refused in one line, early.

- ``fit --width 1000000``: refused from a memory estimate before any data is read;
- a model ``.npz`` whose few bytes declare a 25 GB array: refused from the header, and nothing
  like that is allocated (``tracemalloc``);
- a text file named ``.npz`` (model or export): no traceback, no numpy ``allow_pickle`` advice;
- NaN weights or a NaN normalisation: refused at load, naming the file and the array;
- a prompt θ outside the training box of a network: refused unless ``extrapolate``.
"""

import json
import math
import tracemalloc
import zipfile

import numpy as np
import pytest
from conftest import run_cli

pytest.importorskip("jax")
pytest.importorskip("optax")

from beckmann import requ  # noqa: E402
from beckmann.requ.surrogate import check_prompt, prompt_box  # noqa: E402


def _model(info=None):
    """A small untrained velocity network with inputs (x, y, t, r), weights drawn by hand."""
    rng = np.random.default_rng(0)
    w = [(rng.normal(size=(4, 5)), rng.normal(size=5)), (rng.normal(size=(5, 2)), np.zeros(2))]
    return requ.Network(
        activation="requ", weights=w, lower=[0, 0, 0, 0.1], upper=[1, 1, 1, 0.4],
        shift=np.zeros(2), scale=1.0, scalar=False, field="velocity",
        input_names=["x", "y", "t", "r"], info=info or {},
    )  # fmt: skip


def _one_line_error(proc, *needles):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("beckmann: error: "), proc.stderr
    for n in needles:
        assert n in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "allow_pickle" not in proc.stderr


@pytest.mark.serial
def test_fit_huge_width_refused_before_reading_anything(tmp_path):
    # The source does not even exist: the estimate comes first, so nothing was read or allocated.
    proc = run_cli("fit", str(tmp_path / "nothing"), "--width", "1000000",
                   "--out", str(tmp_path / "m"), check=False, timeout=120)  # fmt: skip
    _one_line_error(proc, "--width 1000000", "GiB", "lower --width")
    proc = run_cli("fit", str(tmp_path / "nothing"), "--seed", "-1",
                   "--out", str(tmp_path / "m"), check=False, timeout=120)  # fmt: skip
    _one_line_error(proc, "--seed must be a non-negative integer")
    assert not list(tmp_path.iterdir())


def _huge_npz(path, name="W0"):
    """A zip of a few hundred bytes whose .npy header declares 80000 x 40000 float64 (25.6 GB)."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (80000, 40000)}
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open(f"{name}.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
    assert path.stat().st_size < 1000 and 8 * math.prod(header["shape"]) > 25e9


def test_declared_25_gb_array_refused_from_the_header(tmp_path):
    m = _model()
    requ.save(m, tmp_path / "m")
    _huge_npz(tmp_path / "m.npz")
    requ.export(m, tmp_path / "e")
    _huge_npz(tmp_path / "e.npz")
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"m\.npz.*'W0' has shape \(80000, 40000\)"):
        requ.load(tmp_path / "m")
    with pytest.raises(ValueError, match=r"e\.npz.*'W0\.npy'.*\(80000, 40000\).*refused"):
        requ.load_export(tmp_path / "e.npz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2**24  # refused from the header: nothing near 25 GB (or 16 MB) allocated


@pytest.mark.serial
def test_text_npz_refused_without_pickle_advice(tmp_path):
    m = _model()
    requ.save(m, tmp_path / "m")
    text = "W0,b0\n1,2\n"
    (tmp_path / "m.npz").write_text(text)
    with pytest.raises(ValueError, match=r"cannot read weights .*m\.npz") as err:
        requ.load(tmp_path / "m")
    assert "pickle" not in str(err.value)
    (tmp_path / "e.npz").write_text(text)
    with pytest.raises(ValueError, match="not a .npz archive") as err:
        requ.load_export(tmp_path / "e.npz")
    assert "pickle" not in str(err.value)
    # Through the commands that read models: one line, no numpy advice.
    _one_line_error(
        run_cli("export", str(tmp_path / "m"), "--out", str(tmp_path / "x"), check=False),
        "m.npz",
    )
    proc = run_cli("sample", str(tmp_path), "--model", str(tmp_path / "m"), "--n", "10",
                   "--out", str(tmp_path / "s.npy"), check=False)  # fmt: skip
    assert proc.returncode != 0 and "allow_pickle" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_nan_weights_and_normalisation_refused_at_load(tmp_path):
    m = _model()
    requ.save(m, tmp_path / "m")
    with np.load(tmp_path / "m.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["b0"] = arrays["b0"].copy()
    arrays["b0"][1] = np.nan
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(ValueError, match=r"m\.npz.*'b0' contains NaN"):
        requ.load(tmp_path / "m")
    # NaN in the JSON's input box (Python's json reads the non-standard NaN literal)
    requ.save(m, tmp_path / "n")
    arch = json.loads((tmp_path / "n.json").read_text())
    arch["input_lower"][2] = float("nan")
    (tmp_path / "n.json").write_text(json.dumps(arch))
    with pytest.raises(ValueError, match=r"n\.json.*input_lower must be 4 finite numbers"):
        requ.load(tmp_path / "n")
    # An exported file with a NaN weight
    bad = _model()
    bad.weights[1][0][0, 0] = np.inf
    requ.export(bad, tmp_path / "e")
    with pytest.raises(ValueError, match=r"e\.npz.*'W1' contains NaN or inf"):
        requ.load_export(tmp_path / "e.npz")


def test_prompt_outside_the_training_box_is_refused():
    m = _model(info={"parameters": ["r"], "thetas": [[0.15], [0.25], [0.35]]})
    assert prompt_box(m) == {"r": (0.15, 0.35)}  # the θ trained on, not the input box
    assert check_prompt(m, {"r": 0.25}) is False
    assert check_prompt(m, {"r": 0.35}) is False  # the edge is inside
    with pytest.raises(ValueError, match=r"--param r=0\.4 \(trained on \[0\.15, 0\.35\]\)") as e:
        check_prompt(m, {"r": 0.40}, name="'vnet'")
    assert "'vnet'" in str(e.value) and "--extrapolate" in str(e.value)
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(ValueError, match=r"r=0\.1 "):
        check_prompt(m, {"r": 0.1})
    assert check_prompt(m, {"r": 0.40}, extrapolate=True) is True
    # Without the training report: the θ part of the input box.
    assert prompt_box(_model()) == {"r": (0.1, 0.4)}
