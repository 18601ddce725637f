"""``sample --reference``: MMD², histogram TV and coverage against data, beside the data's own
noise floor. References: a brute-force MMD², the median of all pairwise distances, brute-force
nearest neighbours, and sample sets whose distance to the data is known to be zero or not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli
from scipy.spatial.distance import cdist, pdist

from beckmann.transport.reference import compare_to_data, coverage, gaussian_mmd2, median_bandwidth

LO, HI = np.zeros(2), np.ones(2)


def _blob(n, rng, centre=(0.5, 0.5), s=0.1):
    return np.asarray(centre) + s * rng.standard_normal((n, 2))


def test_mmd_median_and_coverage_brute_force():
    rng = np.random.default_rng(0)
    x, y = _blob(300, rng), _blob(250, rng, (0.55, 0.5))
    s = 0.2
    k = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2 * s * s))  # noqa: E731
    ref = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    assert gaussian_mmd2(x, y, s) == pytest.approx(ref, rel=1e-10, abs=1e-14)
    assert median_bandwidth(x) == pytest.approx(np.median(pdist(x)), rel=1e-12)
    r = 0.03
    d = cdist(x, y)
    cov = coverage(x, y, r)
    assert cov["far_from_data"] == pytest.approx(np.mean(d.min(axis=1) > r))
    assert cov["data_far_from_samples"] == pytest.approx(np.mean(d.min(axis=0) > r))


def test_floor_and_ratios():
    """Samples of the data's own law sit at the floor; shifted or widened ones are flagged."""
    rng = np.random.default_rng(1)
    data = _blob(6000, rng)
    same = compare_to_data(_blob(3000, rng), data, LO, HI, points=1500, seed=2)
    assert same["compared_points"] == 1500
    assert 0.3 < same["mmd2"]["ratio_to_floor"] < 3.0
    assert 0.5 < same["tv_histogram"]["ratio_to_floor"] < 2.0
    shifted = compare_to_data(_blob(3000, rng, (0.58, 0.5)), data, LO, HI, points=1500, seed=2)
    assert shifted["mmd2"]["ratio_to_floor"] > 10
    assert shifted["mmd2"]["data_vs_data"] == same["mmd2"]["data_vs_data"]  # same seed, same A, B
    wide = compare_to_data(_blob(3000, rng, s=0.2), data, LO, HI, points=1500, seed=2)
    cov = wide["coverage"]
    # the default radius is the 0.95 quantile of the B-to-A neighbour distance (first split)
    assert cov["data_vs_data"]["far_from_data"] == pytest.approx(0.05, abs=0.01)
    assert cov["samples_vs_data"]["far_from_data"] > 3 * cov["data_vs_data"]["far_from_data"]
    with pytest.raises(ValueError, match="at least 4"):
        compare_to_data(data, data[:3], LO, HI)
    with pytest.raises(ValueError, match="dimensional"):
        compare_to_data(data, np.c_[data, data[:, :1]], LO, HI)


@pytest.mark.serial
def test_cli_reference_any_rank_count(tmp_path):
    """The reference block is strict JSON, names its comparisons and is the same on 1 and 2
    ranks; data of the target's own law sit near the floor, the untransported ones do not."""
    run = tmp_path / "run"
    run_cli("solve", "--set", "mesh.n=16", "--out", str(run), "-q")
    # data: exact samples of the solved target, drawn by a serial sample run with another seed
    run_cli("sample", str(run), "--n", "6000", "--seed", "11", "--out", str(tmp_path / "d.npy"))
    reports = []
    for ranks in (1, 2):
        rep = tmp_path / f"r{ranks}.json"
        run_cli(
            "sample", str(run), "--n", "3000", "--seed", "3",
            "--out", str(tmp_path / f"s{ranks}.npy"), "--json-out", str(rep),
            "--reference", str(tmp_path / "d.npy"),
            "--reference-points", "1500", ranks=ranks,
        )  # fmt: skip
        reports.append(json.loads(rep.read_text()))
    a, b = reports[0]["reference"], reports[1]["reference"]
    for key in ("samples_vs_data", "data_vs_data", "bandwidth"):
        assert a["mmd2"][key] == pytest.approx(b["mmd2"][key], rel=1e-6)
    assert a["coverage"] == b["coverage"]
    assert set(reports[0]["comparisons"]) == {"distances", "reference"}
    assert a["mmd2"]["ratio_to_floor"] < 4.0
    assert a["data"].endswith("d.npy") and a["mmd2"]["bandwidth_rule"].startswith("median")
    # a reverse run ends near the uniform source: far from the target's data
    bad = tmp_path / "bad.json"
    run_cli(
        "sample", str(run), "--n", "3000", "--reverse", "--out", str(tmp_path / "x.npy"),
        "--json-out", str(bad), "--reference", str(tmp_path / "d.npy"),
        "--reference-points", "1500",
    )  # fmt: skip
    far = json.loads(bad.read_text())["reference"]
    assert far["mmd2"]["ratio_to_floor"] > 5 * a["mmd2"]["ratio_to_floor"]
    proc = run_cli("sample", str(run), "--n", "10", "--out", str(tmp_path / "y.npy"),
                   "--reference", str(tmp_path / "missing.npy"), check=False)  # fmt: skip
    assert proc.returncode == 2 and "missing.npy" in proc.stderr
