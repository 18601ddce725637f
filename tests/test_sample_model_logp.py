"""``sample --model M --log-density``: log p_t along a network's trajectories is the FE path's.

With a network velocity the samples follow the network's flow, and ``OUT.logp.npy`` holds the
finite-element path density ``p_t = (1 − t) p0 + t p1(θ)`` of the prompt θ at those samples
(docs/transport.md). References: an independent solve at θ (``pipeline.solve``, a θ off the
sweep grid) whose densities dolfinx evaluates (``Solution.evaluate``, not the transport's
Bernstein evaluator) at the saved trajectory points; the neighbouring grid member's density,
which must *not* match (so that the test can tell the prompt's density from a member's); and the
same command on one and two ranks.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import BUMP, run_cli, sweep_toml

from beckmann import config, pipeline, requ
from beckmann._dolfinx import MPI

GRID = [0.35, 0.45, 0.55, 0.65]
OFF = 0.5  # the prompt, between two grid values


def _network() -> requ.Network:
    """A fixed velocity network of inputs (x, y, t, theta): moves points, no training needed."""
    rng = np.random.default_rng(5)
    weights = [(rng.normal(0, 0.8, (4, 8)), rng.normal(0, 0.3, 8)), (rng.normal(0, 0.5, (8, 2)),
               np.zeros(2))]  # fmt: skip
    return requ.Network(
        activation="tanh", weights=weights, lower=np.array([0, 0, 0, GRID[0]]),
        upper=np.array([1, 1, 1, GRID[-1]]), shift=np.zeros(2), scale=0.1, scalar=False,
        field="velocity", input_names=["x", "y", "t", "theta"],
    )  # fmt: skip


def _densities(theta: float, x: np.ndarray, t: float) -> np.ndarray:
    """log p_t at ``x`` from a serial solve at ``theta``, evaluated by dolfinx."""
    c = config.resolve(sets=["mesh.n=6", "solver.degree=1", "solver.method=mumps",
                             "target.kind=expression", f'target.expr="{BUMP}"'])  # fmt: skip
    c = copy.deepcopy(c)
    c["target"]["params"] = {"theta": theta}
    sol = pipeline.solve(c, MPI.COMM_SELF)
    v = sol.evaluate(x, 0.0, what=("source", "target"))
    return np.log((1.0 - t) * v["source"] + t * v["target"])


@pytest.mark.serial
def test_model_log_density_is_the_fe_path_density_at_the_prompt(tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(sweep_toml(GRID))
    store = tmp_path / "store"
    run_cli("sweep", str(cfg), "--out", str(store), "-q")
    requ.save(_network(), tmp_path / "vnet")
    outs = {}
    for ranks in (1, 2):
        out = tmp_path / f"s{ranks}.npy"
        run_cli("sample", str(store), "--model", str(tmp_path / "vnet"), "--param",
                f"theta={OFF}", "--n", "300", "--steps", "20", "--save-every", "10",
                "--log-density", "--out", str(out), "--json-out", str(tmp_path / f"{ranks}.json"),
                ranks=ranks)  # fmt: skip
        outs[ranks] = (np.load(out.with_name(f"s{ranks}.traj.npy")),
                       np.load(out.with_name(f"s{ranks}.logp.npy")))  # fmt: skip
    traj, lp = outs[1]
    np.testing.assert_array_equal(traj, outs[2][0])  # any rank count: the same samples
    np.testing.assert_allclose(lp, outs[2][1], rtol=0, atol=1e-12)
    rep = json.loads((tmp_path / "2.json").read_text())
    assert rep["log_density"]["times"] == [0.0, 0.5, 1.0] and lp.shape == (3, 300)
    assert "p1(θ)" in rep["log_density"]["what"] and "network" in rep["log_density"]["what"]
    assert np.median(np.linalg.norm(traj[-1] - traj[0], axis=1)) > 0.02  # the network moved them
    member = None
    for row, t in zip(lp, rep["log_density"]["times"], strict=True):
        x = traj[round(2 * t)]
        np.testing.assert_allclose(row, _densities(OFF, x, t), rtol=0, atol=1e-10)
        if t == 1.0:
            member = np.abs(row - _densities(GRID[1], x, t)).max()
    # a grid member's p1 would be seen (measured gap 0.26)
    assert member is not None and member > 1e-2, member
