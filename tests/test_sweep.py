"""Parametric sweeps: grids, agreement with independent solves, store, resume, probe, continuity.

API tests run serially and under ``mpirun -n 2`` (there with groups of one rank, so each group
solves its share on its own sub-communicator); tests that spawn ``beckmann`` are serial-only.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import BIN, run_cli

from beckmann import config, pipeline, sweep
from beckmann._dolfinx import MPI

TARGET = "0.2 + exp(-((x - theta)**2 + (y - 0.5)**2) / s)"


def sweep_cfg(params: dict, *, n: int = 10, degree: int = 2, method: str = "mumps",
              expr: str = TARGET, source: str | None = None, **opts) -> dict:
    layer = {
        "mesh": {"kind": "unit_square", "n": n},
        "solver": {"degree": degree, "method": method, "rtol": 1e-12},
        "target": {"kind": "expression", "expr": expr, "params": {"s": 0.05}},
        "sweep": {"parameters": params, **opts},
    }
    if source is not None:
        layer["source"] = {"kind": "expression", "expr": source}
    return config.merge(config.default_config(), layer, extra_sections=("sweep",))


def single(cfg: dict, theta: dict, comm) -> pipeline.Solution:
    c = copy.deepcopy(cfg)
    c.pop("sweep")
    for role in ("target", "source"):
        if c[role]["kind"] == "expression":
            c[role]["params"] = {**c[role]["params"], **theta}
    return pipeline.solve(c, comm)


def rel(a, b, comm) -> float:
    d = comm.allreduce(float(np.sum((a - b) ** 2)), op=MPI.SUM)
    nb = comm.allreduce(float(np.sum(b**2)), op=MPI.SUM)
    return float(np.sqrt(d / nb))


# ----------------------------------------------------------------------------------- grids
def test_grid_kinds():
    g = sweep.make_grid({"a": [0.1, 0.2], "b": {"linspace": [0.0, 1.0, 3]}})
    assert g.values.tolist() == [[0.1, 0.0], [0.1, 0.5], [0.1, 1.0], [0.2, 0.0], [0.2, 0.5],
                                 [0.2, 1.0]]
    assert g.axes == {"a": [0.1, 0.2], "b": [0.0, 0.5, 1.0]}
    r1 = sweep.make_grid({"a": {"random": [0.0, 2.0, 7], "seed": 3}})
    r2 = sweep.make_grid({"a": {"random": [0.0, 2.0, 7], "seed": 3}})
    assert np.array_equal(r1.values, r2.values) and np.all(np.diff(r1.values[:, 0]) > 0)
    assert np.all((r1.values >= 0) & (r1.values < 2))
    lhs = sweep.make_grid({"a": {"lhs": [0.0, 1.0, 10], "seed": 1},
                           "c": [5.0, 6.0],
                           "b": {"lhs": [-1.0, 1.0, 10], "seed": 2}})
    assert len(lhs) == 20 and lhs.axes is None and lhs.names == ["a", "c", "b"]
    block = lhs.values[lhs.values[:, 1] == 5.0]
    # one sample per stratum in every coordinate: the Latin-hypercube property
    assert sorted(np.floor(block[:, 0] * 10).astype(int)) == list(range(10))
    assert sorted(np.floor((block[:, 2] + 1) * 5).astype(int)) == list(range(10))


@pytest.mark.parametrize(
    ("params", "extra", "match"),
    [
        ({"theta": []}, {}, "'theta' has an empty grid"),
        ({"theta": {"linspace": [0.3, 0.7, 0]}}, {}, "'theta' has an empty grid"),
        ({}, {}, "empty"),
        ({"theta": [0.5], "q": [1.0]}, {}, "'q' is not used by the target or source"),
        ({"s": [0.05]}, {}, "parameter 'theta' has no value"),
        ({"theta": {"lhs": [0, 1, 3]}, "s": {"lhs": [0.01, 0.1, 4]}}, {}, "same count"),
        ({"theta": {"random": [0.3, 0.7, 3], "seeds": 1}}, {}, "exactly one of"),
        ({"theta": [0.5, 0.5]}, {}, "repeats"),
        ({"theta": [0.5]}, {"blocks": 2}, "unknown config key sweep.blocks"),
    ],
)
def test_bad_specs(params, extra, match):
    with pytest.raises(ValueError, match=match):
        sweep.parse_sweep(sweep_cfg(params, **extra))


def test_negative_target_names_theta(mpi_tmp_path, comm):
    cfg = sweep_cfg({"theta": [0.5, -1.0, 0.7]}, n=6, expr="theta + x", group_size=1)
    with pytest.raises(ValueError, match=r"θ #1 \(theta=-1\): target density has minimum -1"):
        sweep.run_sweep(cfg, comm, out=mpi_tmp_path / "s")
    # nothing was solved
    assert not list((mpi_tmp_path / "s" / "theta").glob("*.h5"))


# ------------------------------------------------------------------- agreement with solves
@pytest.mark.parametrize(
    ("method", "degree", "source", "block"),
    [("mumps", 2, None, 3), ("gamg", 1, None, 1), ("mumps", 1, "1 + 0.5*theta*x", 16)],
)
def test_every_theta_matches_single_solve(mpi_tmp_path, comm, method, degree, source, block):
    params = {"theta": {"linspace": [0.3, 0.7, 5]}}
    cfg = sweep_cfg(params, n=12, degree=degree, method=method, source=source,
                    group_size=1, block=block, continuity=False)
    summary = sweep.run_sweep(cfg, comm, out=mpi_tmp_path / "s")
    assert summary["solved"] == 5 and summary["groups"] == comm.size
    store = sweep.SweepStore(mpi_tmp_path / "s", comm)
    rows = {r["index"]: r for r in store.rows()}
    for i in range(5):
        sol = single(cfg, store.grid.theta(i), comm)
        phi = store.potential(i, sol.phi.function_space)
        assert rel(phi.x.array, sol.phi.x.array, comm) < 1e-8, store.grid.label(i)
        assert rows[i]["beckmann_cost"] == pytest.approx(sol.info["beckmann_cost"], rel=1e-8)
        assert rows[i]["mass_target"] == pytest.approx(sol.info["mass_target"], rel=1e-12)


def test_flux_store_and_reload_any_ranks(mpi_tmp_path, comm):
    """Stored flux equals grad of the reloaded potential; reload works on this rank count."""
    cfg = sweep_cfg({"theta": [0.4, 0.6]}, n=8, degree=2, continuity=False, group_size=1)
    sweep.run_sweep(cfg, comm, out=mpi_tmp_path / "s")
    store = sweep.SweepStore(mpi_tmp_path / "s", comm)
    sol = single(cfg, store.grid.theta(1), comm)
    F = store.read(1, "flux")
    assert F.shape[1] == 2
    sup = comm.allreduce(float(np.abs(sol.flux().x.array).max(initial=0)), op=MPI.MAX)
    assert np.abs(F).max() == pytest.approx(sup, rel=1e-8)
    phi = store.potential(1)  # on the stored mesh, redistributed over this communicator
    pts = np.array([[0.2, 0.3], [0.77, 0.51]])
    ref = sol.evaluate(pts, what=("potential",))["potential"]
    got = pipeline.Solution(phi.function_space.mesh, phi, phi, phi).evaluate(
        pts, what=("potential",))["potential"]
    assert np.allclose(got, ref, rtol=1e-8, atol=1e-12)


# ------------------------------------------------------------------------------- probe
def test_probe_grid_and_interpolation(mpi_tmp_path, comm):
    cfg = sweep_cfg({"theta": {"linspace": [0.3, 0.7, 9]}}, n=16, degree=2, continuity=False)
    sweep.run_sweep(cfg, comm, out=mpi_tmp_path / "s")
    store = sweep.SweepStore(mpi_tmp_path / "s", comm)
    pts = np.array([[0.231, 0.517], [0.613, 0.389], [0.887, 0.903]])  # inside cells
    on = sweep.probe(store, {"theta": 0.45}, pts, t=0.5)
    ref = single(cfg, {"theta": 0.45}, comm).evaluate(pts, t=0.5)
    for k in ("potential", "flux", "velocity"):
        assert np.allclose(on[k], ref[k], rtol=1e-8, atol=1e-12), k
    with pytest.raises(ValueError, match="not on the sweep grid"):
        sweep.probe(store, {"theta": 0.42}, pts)
    off = sweep.probe(store, {"theta": 0.42}, pts, t=0.5, interpolate=True)
    ref = single(cfg, {"theta": 0.42}, comm).evaluate(pts, t=0.5)
    err_phi = np.abs(np.array(off["potential"]) - ref["potential"]).max()
    est = off["error_estimate"]["potential"]
    assert err_phi <= est < 1e-2 * np.abs(ref["potential"]).max()
    assert np.allclose(off["velocity"], ref["velocity"], rtol=1e-2)
    with pytest.raises(ValueError, match="outside the grid"):
        sweep.probe(store, {"theta": 0.8}, pts, interpolate=True)


# -------------------------------------------------------------------------- continuity
def test_continuity_of_affine_family(mpi_tmp_path, comm):
    """p1 = 1 + θ g with ∫g = 0: φ(θ) = θ φ_g, so the θ-exponent is 1 and the Lipschitz
    constant is the brute-force max over pairs of ‖φ_i − φ_j‖_∞ / |θ_i − θ_j|."""
    cfg = sweep_cfg({"theta": {"random": [0.0, 0.8, 6], "seed": 4}}, n=10, degree=1,
                    expr="1 + theta*cos(pi*x)*cos(pi*y)", group_size=1, joint_points=20000)
    summary = sweep.run_sweep(cfg, comm, out=mpi_tmp_path / "s")
    rep = summary["continuity"]
    assert rep["phi"]["exponent"]["estimate"] == pytest.approx(1.0, abs=0.02)
    store = sweep.SweepStore(mpi_tmp_path / "s", comm)
    th = store.grid.values[:, 0]
    P = [store.read(i) for i in range(6)]
    brute = max(np.abs(P[i] - P[j]).max() / abs(th[i] - th[j])
                for i in range(6) for j in range(i + 1, 6))
    assert rep["phi"]["lipschitz"] == pytest.approx(brute, rel=1e-10)
    assert rep["flux"]["exponent"]["estimate"] == pytest.approx(1.0, abs=0.02)
    assert rep["joint"]["exponent"]["estimate"] > 0.8 and rep["joint"]["alpha"] == 1.0


def test_continuity_streams_a_documented_pair_set(mpi_tmp_path, comm):
    """With more θ than anchors the pass compares consecutive θ and θ against the anchors:
    its sup per pair equals the brute-force sup over exactly those pairs, read back whole."""
    cfg = sweep_cfg({"theta": {"linspace": [0.2, 0.8, 7]}}, n=8, degree=1, group_size=1,
                    continuity=False)
    sweep.run_sweep(cfg, comm, out=mpi_tmp_path / "s")
    store = sweep.SweepStore(mpi_tmp_path / "s", comm)
    rep = sweep.continuity_report(store, comm, anchors=3)
    from beckmann.sweep.modulus import stream_pairs
    pairs = stream_pairs(7, 3)
    assert {tuple(p) for p in pairs.tolist()} == (
        {(b - 1, b) for b in range(1, 7)} | {(a, b) for a in (0, 3, 6) for b in range(7) if a < b})
    assert rep["pairs"] == len(pairs) and rep["anchors"] == 3
    assert "off" in rep["joint"] and "points" not in rep["joint"]  # joint_points = 0: opt-in
    th = store.grid.values[:, 0]
    P = [store.read(i) for i in range(7)]
    F = [store.read(i, "flux") for i in range(7)]
    lip = max(np.abs(P[a] - P[b]).max() / abs(th[a] - th[b]) for a, b in pairs)
    lip_f = max(np.linalg.norm(F[a] - F[b], axis=1).max() / abs(th[a] - th[b]) for a, b in pairs)
    assert rep["phi"]["lipschitz"] == pytest.approx(lip, rel=1e-12)
    assert rep["flux"]["lipschitz"] == pytest.approx(lip_f, rel=1e-12)
    assert stream_pairs(1, 3).shape == (0, 2)  # one θ: no pairs


def test_continuity_holder_norms_of_affine_family(mpi_tmp_path, comm):
    """p1 = 1 + θ g, g = cos πx cos πy (∫g = 0, ∂g/∂n = 0): φ(θ) = θ g / (2π²) in closed form.

    So φ(θ) − φ(θ') = c g with c = (θ − θ') / (2π²), and the sup norms of its derivatives are
    sup |c g| = c, Σ_{|β|=1} sup |D^β (c g)| = 2πc and Σ_{|β|=2} sup |D^β (c g)| = 3π²c (β in
    {xx, xy, yy}, each with sup π²c). Every difference norm is |θ − θ'| times one constant, so
    the fitted θ-exponent is 1 and the ratio to the data is the same for every pair."""
    cfg = sweep_cfg({"theta": {"random": [0.0, 0.8, 5], "seed": 4}}, n=16, degree=2,
                    expr="1 + theta*cos(pi*x)*cos(pi*y)", group_size=1,
                    continuity_holder=True, holder_alpha=0.5, holder_pairs=6)
    rep = sweep.run_sweep(cfg, comm, out=mpi_tmp_path / "s")["continuity"]["holder"]
    assert rep["k"] == 0 and rep["alpha"] == 0.5 and rep["pairs"] == 6
    assert rep["norms"] == {"phi": "C^2,0.5", "flux": "C^1,0.5", "rhs": "C^0,0.5"}
    for key in ("phi", "flux", "rhs"):
        assert rep[key]["exponent"]["estimate"] == pytest.approx(1.0, abs=1e-6), key
    dists = sorted(r["dtheta"] for r in rep["table"])
    assert dists[0] < 0.5 * dists[-1]  # the pairs span a range of |θ − θ'|
    closed = np.array([1.0, 2.0 * np.pi, 3.0 * np.pi**2]) / (2.0 * np.pi**2)
    # P2 on a 16 x 16 mesh: φ to O(h^3); recovered derivatives lose accuracy at the boundary,
    # where the sups of the first and second derivatives lie.
    tol = [2e-3, 2e-2, 8e-2]
    for r in rep["table"]:
        got = np.array(r["phi_sup_norms"]) / r["dtheta"]
        for j in range(3):
            assert got[j] == pytest.approx(closed[j], rel=tol[j]), (j, r)
        assert r["phi"] >= sum(r["phi_sup_norms"])  # the norm adds a seminorm >= 0
    per = [r["phi"] / r["dtheta"] for r in rep["table"]]
    assert max(per) == pytest.approx(min(per), rel=1e-6)
    assert rep["phi"]["lipschitz"] == pytest.approx(per[0], rel=1e-6)
    assert rep["ratio"]["max"] == pytest.approx(rep["ratio"]["min"], rel=1e-6)


def test_continuity_holder_is_off_by_default():
    spec = sweep.parse_sweep(sweep_cfg({"theta": [0.4, 0.6]}))
    assert spec.options["continuity_holder"] is False and spec.options["holder_alpha"] == 0.5
    assert sweep.parse_sweep(sweep_cfg({"theta": [0.4]}, holder_alpha=1)).options[
        "holder_alpha"] == 1.0
    with pytest.raises(ValueError, match="holder_alpha must lie in"):
        sweep.parse_sweep(sweep_cfg({"theta": [0.4]}, holder_alpha=1.5))


# ---------------------------------------------------------------------- CLI (serial only)
CONFIG = """
[mesh]
kind = "unit_square"
n = {n}
[solver]
degree = 2
method = "{method}"
rtol = 1e-12
[target]
kind = "expression"
expr = "0.2 + exp(-((x - theta)**2 + (y - 0.5)**2) / s)"
[sweep.parameters]
theta = {{ linspace = [0.3, 0.7, {k}] }}
s = [0.04, 0.06]
[sweep]
block = {block}
"""


@pytest.mark.serial
def test_cli_ranks_and_groups_agree(tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(CONFIG.format(n=10, method="mumps", k=3, block=4))
    runs = {}
    for ranks, gs in ((1, 0), (2, 1), (2, 2)):
        out = tmp_path / f"s{ranks}{gs}"
        proc = run_cli("sweep", str(cfg), "--out", str(out), "--group-size", str(gs),
                       ranks=ranks)
        brief = json.loads(proc.stdout.strip().splitlines()[-1])
        assert brief["solved"] == 6 and brief["groups"] == (ranks if gs == 1 else 1)
        assert "sweep" not in proc.stderr  # no progress bar when stderr is not a terminal
        runs[(ranks, gs)] = out
    from beckmann import mesh as bmesh
    from beckmann._dolfinx import fem
    from beckmann.sweep import SweepStore

    ref = SweepStore(runs[(1, 0)], MPI.COMM_SELF)
    msh = bmesh.create_mesh(ref.config["mesh"], MPI.COMM_SELF)
    V = fem.functionspace(msh, ("Lagrange", ref.config["solver"]["degree"]))
    for key, out in runs.items():
        st = SweepStore(out, MPI.COMM_SELF)
        for i in range(6):  # a mesh built from the config: cells found by their original index
            a, b = st.values(i, V), ref.values(i, V)
            assert np.abs(a - b).max() <= 1e-10 * np.abs(b).max(), (key, i)
    # probe a stored sweep from the command line, on 2 ranks
    pts = tmp_path / "pts.csv"
    pts.write_text("0.3,0.4\n0.8,0.2\n")
    proc = run_cli("probe", str(runs[(2, 1)]), "--param", "theta=0.5", "--param", "s=0.04",
                   "--points", str(pts), "--json-out", str(tmp_path / "p.json"), ranks=2)
    res = json.loads((tmp_path / "p.json").read_text())
    assert set(res) >= {"potential", "flux", "velocity", "theta"}
    proc = run_cli("probe", str(runs[(1, 0)]), "--param", "theta=0.6", "--param", "s=0.05",
                   "--points", str(pts), "--interpolate")
    res = json.loads(proc.stdout)
    assert res["error_estimate"]["potential"] > 0
    proc = run_cli("probe", str(runs[(1, 0)]), "--param", "theta=0.6", "--param", "s=0.04",
                   "--points", str(pts), check=False)
    assert proc.returncode == 2 and "not on the sweep grid" in proc.stderr
    # a second run into the same folder without --resume is refused
    proc = run_cli("sweep", str(cfg), "--out", str(runs[(1, 0)]), check=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr


@pytest.mark.serial
def test_kill_and_resume(tmp_path):
    """``kill -9`` mid-run, then ``--resume``: nothing stored is recomputed, no entry corrupt.

    A small mesh keeps this cheap; the sweep is killed as soon as a few θ are stored (polling
    every 2 ms; ~10 ms per θ), wherever it is then (solving, or writing an entry).
    """
    cfg = tmp_path / "sweep.toml"
    k = 400  # ~10 ms per θ: a window of seconds between the first entries and the end
    cfg.write_text(CONFIG.format(n=16, method="gamg", k=k // 2, block=1))
    out = tmp_path / "s"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(BIN / "beckmann"), "sweep", str(cfg), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tdir = out / "theta"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if tdir.is_dir() and len(list(tdir.glob("*.h5"))) >= 3:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the sweep finished before the kill; make it slower"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tdir.glob("*.h5")}
    print(f"killed after {len(before)} of {k} θ")
    assert 3 <= len(before) < k, "the sweep finished before the kill; make it slower"
    assert not (out / "summary.json").exists()
    res = run_cli("sweep", str(cfg), "--out", str(out), "--resume", "--set",
                  "sweep.continuity=false")
    brief = json.loads(res.stdout.strip().splitlines()[-1])
    assert brief["solved"] == k - len(before) and brief["reused"] == len(before)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tdir.glob("*.h5")}
    assert len(after) == k and not list(tdir.glob("*.part"))
    assert all(after[n] == v for n, v in before.items())  # nothing stored was rewritten
    from beckmann.sweep import SweepStore

    store = SweepStore(out, MPI.COMM_SELF)
    assert [r["index"] for r in store.rows()] == list(range(k))
    n_phi, n_flux = store.read(0).shape[0], store.read(0, "flux").shape
    for i in range(k):  # every entry complete and readable
        phi, flux = store.read(i), store.read(i, "flux")
        assert phi.shape == (n_phi,) and flux.shape == n_flux, i
        assert np.isfinite(phi).all() and np.isfinite(flux).all(), i
    # one entry from before the kill and one after agree with independent solves
    base = config.resolve(cfg, extra_sections=("sweep",))
    last_before = max(int(n[:-3]) for n in before)
    for i in (last_before, k - 1):
        sol = single(base, store.grid.theta(i), MPI.COMM_SELF)
        phi = store.potential(i, sol.phi.function_space)
        assert rel(phi.x.array, sol.phi.x.array, MPI.COMM_SELF) < 1e-8
    # resuming a complete sweep recomputes nothing
    res = run_cli("sweep", str(cfg), "--out", str(out), "--resume", "--set",
                  "sweep.continuity=false")
    assert json.loads(res.stdout.strip().splitlines()[-1])["solved"] == 0
