"""Cross-validated KDE bandwidth (density/kde.py): against a brute-force leave-one-out score,
and judged on held-out data against Scott's rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp

from beckmann.density import make_evaluator
from beckmann.density.kde import GaussianKDE, cv_bandwidth

UNIT2 = ([0.0, 0.0], [1.0, 1.0])


def _ring(n, rng, noise=0.01):
    t = 2 * np.pi * rng.random(n)
    return 0.5 + np.c_[0.3 * np.cos(t), 0.3 * np.sin(t)] + noise * rng.standard_normal((n, 2))


def _loglik(train, test, H):
    """Mean log of the Gaussian KDE with covariance H at test points (direct, scipy)."""
    L = np.linalg.cholesky(H)
    y = np.linalg.solve(L, train.T).T
    z = np.linalg.solve(L, test.T).T
    d2 = ((z[:, None, :] - y[None, :, :]) ** 2).sum(axis=2)
    logdet = np.log(np.diag(L)).sum()
    val = logsumexp(-0.5 * d2, axis=1) - np.log(len(train)) - logdet - np.log(2 * np.pi)
    return float(val.mean())


def test_cv_matches_brute_force_leave_one_out():
    """The chosen kernel maximises the full leave-one-out likelihood (brute force) to one grid
    step, and the reported score is that likelihood."""
    rng = np.random.default_rng(3)
    x = _ring(400, rng)  # 400 points: every point is a query, so the score is the full LOO
    cv = cv_bandwidth(x)
    assert cv["queries"] == 400
    H0 = np.asarray(cv["covariance"]) / cv["factor"] ** 2  # the shape of the chosen kernel
    factors = 2.0 ** (np.arange(-24, 5) / 4.0)
    scores = []
    for c in factors:
        L = np.linalg.cholesky(c * c * H0)
        y = np.linalg.solve(L, x.T).T
        d2 = ((y[:, None, :] - y[None, :, :]) ** 2).sum(axis=2)
        np.fill_diagonal(d2, np.inf)
        logdet = np.log(np.diag(L)).sum()
        v = logsumexp(-0.5 * d2, axis=1) - np.log(len(x) - 1) - logdet - np.log(2 * np.pi)
        scores.append(v.mean())
    best = int(np.argmax(scores))
    chosen = int(np.argmin(np.abs(factors - cv["factor"])))
    assert abs(best - chosen) <= 1
    assert cv["cv_score"] == pytest.approx(scores[chosen], abs=1e-3)
    assert not cv["at_grid_edge"]


def test_cv_beats_scott_on_held_out_data():
    """On a thin ring Scott's rule over-smooths: the CV kernel is much narrower and its
    held-out log-likelihood is higher (held-out data never enter the choice)."""
    rng = np.random.default_rng(5)
    train, test = _ring(3000, rng), _ring(1000, rng)
    cv = GaussianKDE(train, rule="cv", bbox=UNIT2)
    scott = GaussianKDE(train, rule="scott", bbox=UNIT2)
    d = cv.description
    assert d["bandwidth_rule"] == "cv" and scott.description["bandwidth_rule"] == "scott"
    assert d["bandwidth"] < 0.5 * scott.description["bandwidth"]
    assert d["cv_score"] > d["scott_score"]
    ll_cv = _loglik(train, test, cv.covariance)
    ll_scott = _loglik(train, test, scott.covariance)
    assert ll_cv > ll_scott + 0.3
    # a mesh-imposed lower bound: the narrowest allowed kernel, flagged
    wide = GaussianKDE(train, rule="cv", min_bandwidth=0.03).description
    assert wide["resolution_limited"] and 0.03 <= wide["bandwidth"] < 0.03 * 2 ** 0.25 + 1e-12
    assert not d["resolution_limited"]
    # the estimate itself is the KDE of that covariance (direct sum at a few points)
    pts = test[:50]
    ref = np.exp([_loglik(train, p[None, :], cv.covariance) for p in pts])
    np.testing.assert_allclose(cv(pts.T), ref, rtol=1e-2, atol=1e-3 * ref.max())


def test_evaluator_rule_and_description(tmp_path):
    rng = np.random.default_rng(7)
    path = tmp_path / "ring.npy"
    np.save(path, _ring(1500, rng))
    section = {"kind": "samples", "path": str(path), "floor": 0.01}
    ev = make_evaluator({**section, "bandwidth_rule": "cv"}, gdim=2, bbox=UNIT2)
    assert ev.description["bandwidth_rule"] == "cv" and ev.description["floor"] == 0.01
    sc = make_evaluator({**section, "bandwidth_rule": "scott"}, gdim=2, bbox=UNIT2)
    assert sc.description["bandwidth"] > 2 * ev.description["bandwidth"]
    fixed = make_evaluator({**section, "bandwidth": 0.02}, gdim=2, bbox=UNIT2)
    assert fixed.description == {"kind": "samples", "floor": 0.01, "bandwidth_rule": "given",
                                 "bandwidth": 0.02, "samples": 1500}  # fmt: skip
    with pytest.raises(ValueError, match="bandwidth rule"):
        make_evaluator({**section, "bandwidth_rule": "silverman"}, gdim=2, bbox=UNIT2)


@pytest.mark.serial
def test_summary_reports_the_chosen_bandwidth_and_its_score(tmp_path):
    """`solve` with target.kind = samples writes the KDE's rule, bandwidth and CV score into
    summary.json["densities"]; the score is the brute-force leave-one-out log-likelihood of the
    recorded kernel, and the bandwidth is the CV choice on those data."""
    import json

    from conftest import run_cli

    rng = np.random.default_rng(11)
    x = _ring(400, rng, noise=0.06)  # 400 points: the CV score is the full leave-one-out mean
    np.save(tmp_path / "ring.npy", x)
    run_cli("solve", "--set", "mesh.n=32", "--set", "target.kind=samples", "--set",
            f"target.path={tmp_path / 'ring.npy'}", "--set", "target.floor=0.05", "--out",
            str(tmp_path / "run"), "-q")  # fmt: skip
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    dens = summary["densities"]
    assert dens["source"] == {"kind": "uniform", "floor": 0.0}
    d = dens["target"]
    assert d["kind"] == "samples" and d["floor"] == 0.05 and d["samples"] == 400
    assert d["bandwidth_rule"] == "cv" and not d["resolution_limited"]
    # the recorded kernel: Scott's covariance n^(-2/(d+4)) Σ (or its isotropic version) x c²
    scott = len(x) ** (-1.0 / 3.0) * np.cov(x.T)
    shape = scott if d["shape"] == "scott" else np.sqrt(np.linalg.det(scott)) * np.eye(2)
    H = d["factor"] ** 2 * shape
    assert np.linalg.det(H) ** 0.25 == pytest.approx(d["bandwidth"], rel=1e-9)
    L = np.linalg.cholesky(H)
    y = np.linalg.solve(L, x.T).T
    d2 = ((y[:, None, :] - y[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(d2, np.inf)
    loo = logsumexp(-0.5 * d2, axis=1) - np.log(len(x) - 1) - np.log(np.diag(L)).sum()
    assert d["cv_score"] == pytest.approx(float((loo - np.log(2 * np.pi)).mean()), abs=1e-3)
    assert d["cv_score"] > d["scott_score"]
    assert d["bandwidth"] == pytest.approx(cv_bandwidth(x)["bandwidth"], rel=1e-9)
