"""Sampling and transport: exact sampling, two-bump square, radial disk, reverse runs, CLI.

The references are independent of the transport: bin masses of the target by quadrature, exact
samples of the target (the noise floor), ``Solution.evaluate`` (dolfinx's own point search and
``Function.eval``) for the fast evaluator, and the start positions for a forward-backward run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from beckmann import config, pipeline, transport
from beckmann._dolfinx import MPI
from beckmann.paths import solve_path

N = 20_000
RING = "0.2 + exp(-(sqrt(x*x + y*y) - 0.6)**2 / 0.02)"


@pytest.fixture(scope="module")
def square():
    cfg = config.resolve(sets=["mesh.n=24"], base=pipeline.BUILTIN_EXAMPLE)
    return pipeline.solve(cfg, MPI.COMM_WORLD)


@pytest.fixture(scope="module")
def disk():
    cfg = config.resolve(
        sets=["mesh.kind=disk", "mesh.h=0.08", "target.kind=expression", f"target.expr={RING}"]
    )
    return pipeline.solve(cfg, MPI.COMM_WORLD)


def _bbox(sol):
    x = sol.msh.geometry.x[:, : sol.gdim]
    lo, hi = np.empty(sol.gdim), np.empty(sol.gdim)
    sol.comm.Allreduce(np.ascontiguousarray(x.min(axis=0)), lo, op=MPI.MIN)
    sol.comm.Allreduce(np.ascontiguousarray(x.max(axis=0)), hi, op=MPI.MAX)
    return lo - 1e-9, hi + 1e-9


def test_sampling_matches_density_histogram(square):
    """Exact samples of p1: the histogram agrees with quadrature bin masses up to noise."""
    sol = square
    s = transport.sample_density(sol.p1, N, seed=3)
    x = transport.gather_samples(s, sol.comm, root=None)
    lo, hi = _bbox(sol)
    bins = 16
    P = transport.bin_masses(sol.p1, lo, hi, bins)
    tv = transport.histogram_tv(x, P, lo, hi)
    # E[TV] of a multinomial sample: ½ Σ E|n_b/N − P_b| ≈ ½ Σ sqrt(2 P_b (1 − P_b) / (π N))
    expected = 0.5 * np.sum(np.sqrt(2 * P * (1 - P) / (np.pi * N)))
    assert tv < 1.3 * expected
    counts = transport.bin_counts(x, None, lo, hi, bins)
    big = N * P >= 5
    chi2 = np.sum((counts[big] - N * P[big]) ** 2 / (N * P[big]))
    dof = int(big.sum()) - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof)
    # a clearly different density (the uniform source) is rejected by the same statistic
    s0 = transport.gather_samples(transport.sample_density(sol.p0, N, 3), sol.comm, root=None)
    assert transport.histogram_tv(s0, P, lo, hi) > 5 * expected


def test_sampling_independent_of_rank_count(square):
    """The same seed gives the same samples on a mesh distributed over any number of ranks."""
    comm = MPI.COMM_WORLD
    x = transport.gather_samples(transport.sample_density(square.p1, 5000, 11), comm, root=None)
    cfg = config.resolve(sets=["mesh.n=24"], base=pipeline.BUILTIN_EXAMPLE)
    serial = pipeline.solve(cfg, MPI.COMM_SELF)
    y = transport.gather_samples(
        transport.sample_density(serial.p1, 5000, 11), MPI.COMM_SELF, root=None
    )
    np.testing.assert_allclose(x, y, atol=1e-12)


def test_bernstein_bound_and_mass():
    """Bernstein coefficients give the cell mean exactly and bound the polynomial."""
    from beckmann._dolfinx import basix

    el = basix.create_element(
        basix.ElementFamily.P,
        basix.CellType.triangle,
        3,
        basix.LagrangeVariant.gll_warped,
        discontinuous=True,
    )
    rng = np.random.default_rng(0)
    vals = rng.normal(size=el.dim)
    b = transport.bernstein_matrix(el) @ vals
    qp, qw = basix.make_quadrature(basix.CellType.triangle, 6)
    pv = el.tabulate(0, qp)[0, :, :, 0] @ vals
    assert b.mean() == pytest.approx(2 * np.dot(qw, pv), rel=1e-12)  # reference area ½
    fine = rng.dirichlet(np.ones(3), size=5000)[:, 1:]
    assert np.max(el.tabulate(0, fine)[0, :, :, 0] @ vals) <= b.max() + 1e-12


@pytest.mark.parametrize("path", ["linear", "fisher-rao"])
def test_evaluator_matches_dolfinx_eval(square, path):
    """The cached-cell evaluator agrees with Solution.evaluate / PathFlux.velocity."""
    sol = square
    pf = solve_path(sol, path, n_times=5)
    tr = transport.Transporter(transport.FieldEvaluator(pf))
    rng = np.random.default_rng(1)
    pts = rng.uniform(0.01, 0.99, size=(200, 2))
    mine = pts[sol.comm.rank :: sol.comm.size]
    t = 0.3
    v, _ = tr.velocity(t, mine, np.full(len(mine), -1, dtype=np.int32))
    v_all = np.concatenate(sol.comm.allgather(v))
    order = np.concatenate([np.arange(r, 200, sol.comm.size) for r in range(sol.comm.size)])
    ref = np.zeros_like(v_all)
    if path == "linear":
        ref[np.argsort(order)] = sol.evaluate(pts, t=t)["velocity"][np.argsort(order)]
        ref = sol.evaluate(pts[order], t=t)["velocity"]
        np.testing.assert_allclose(v_all, ref, rtol=1e-9, atol=1e-12)
    else:
        # F_t interpolated linearly between grid times 0.25 and 0.5, p_t exact: compare with the
        # DG_k interpolant of the same field (interpolation error only)
        from beckmann.fields import Solution

        vel = pf.velocity(t)
        aux = Solution(sol.msh, sol.phi, sol.p0, sol.p1)
        loc = aux.locator()
        x3, cells, own = loc.locate(pts[order])
        vals = np.zeros((200, 2))
        idx = np.flatnonzero(own)
        if idx.size:
            vals[idx] = vel.eval(x3[idx], cells[idx]).reshape(-1, 2)
        ref = sol.comm.allreduce(vals, op=MPI.SUM)
        scale = np.abs(ref).max()
        assert np.abs(v_all - ref).max() < 0.02 * scale


@pytest.mark.parametrize("path", ["linear", "fisher-rao"])
def test_square_two_bumps(square, path):
    res = transport.sample_transport(
        square, N, path=path, steps=16, seed=5, energy_points=2000, path_report=False
    )
    _check_distances(res["report"])


@pytest.mark.parametrize("path", ["linear", "fisher-rao"])
def test_disk_radial(disk, path):
    res = transport.sample_transport(
        disk, N, path=path, steps=16, seed=7, energy_points=2000, path_report=False
    )
    rep = res["report"]
    _check_distances(rep)
    # escapes through the polygonal boundary are rare and were all projected back
    assert rep["projected_samples"] < 0.01 * N
    assert rep["projection_events"] >= rep["projected_samples"]
    if disk.comm.rank == 0:
        r = np.linalg.norm(res["samples"], axis=1)
        assert r.max() <= 1.0 + 1e-12


def _check_distances(rep):
    d = rep["distances"]
    # TV on ~50 samples per bin is noise-dominated (floor ~0.06): untransported ~4x above it;
    # the energy distance by 7x (disk ring) to 20x (two bumps)
    for metric, far in (("tv_histogram", 3.0), ("energy", 5.0)):
        assert d["transported"][metric] < 2.0 * d["exact"][metric], (metric, d)
        assert d["untransported"][metric] > far * d["transported"][metric], (metric, d)


def test_reverse_run_and_round_trip(square):
    """Target -> source matches p0; forward then backward returns to the start."""
    res = transport.sample_transport(
        square, N, steps=16, seed=9, reverse=True, energy_points=2000, path_report=False
    )
    _check_distances(res["report"])
    sol = square
    pf = solve_path(sol, "linear")
    ev = transport.FieldEvaluator(pf)
    s = transport.sample_density(sol.p0, 4000, 2, ev.cells)
    x0 = transport.gather_samples(s, sol.comm, root=None)
    tr = transport.Transporter(ev)
    s = tr.rk4(s, 0.0, 1.0, 20)
    moved = transport.gather_samples(s, sol.comm, root=None)
    s = tr.rk4(s, 1.0, 0.0, 20)
    back = transport.gather_samples(s, sol.comm, root=None)
    err = np.linalg.norm(back - x0, axis=1)
    assert np.median(np.linalg.norm(moved - x0, axis=1)) > 0.02
    assert np.quantile(err, 0.99) < 1e-4


def test_rk45_agrees_with_rk4(square):
    sol = square
    pf = solve_path(sol, "linear")
    ev = transport.FieldEvaluator(pf)
    s = transport.sample_density(sol.p0, 2000, 4, ev.cells)
    a = transport.Transporter(ev).rk4(
        transport.Samples(s.ids.copy(), s.x.copy(), s.cells.copy(), s.n), steps=40
    )
    tr = transport.Transporter(ev)
    b = tr.rk45(s, rtol=1e-6)
    xa = transport.gather_samples(a, sol.comm, root=None)
    xb = transport.gather_samples(b, sol.comm, root=None)
    assert np.quantile(np.linalg.norm(xa - xb, axis=1), 0.99) < 1e-4
    assert tr.stats["steps"] >= 2


def test_projection_of_escaped_points(square):
    """A point pushed outside is projected to the nearest boundary point and counted."""
    sol = square
    ev = transport.FieldEvaluator(solve_path(sol, "linear"))
    tr = transport.Transporter(ev)
    pts = np.array([[1.02, 0.5], [0.3, -0.01]]) if sol.comm.rank == 0 else np.zeros((0, 2))
    s = transport.Samples(np.arange(len(pts)), pts.copy(), np.full(len(pts), -1, np.int32), 2)
    s = tr.relocate(s)
    x = transport.gather_samples(s, sol.comm, root=None)
    np.testing.assert_allclose(x, [[1.0, 0.5], [0.3, 0.0]], atol=1e-12)
    assert sol.comm.allreduce(tr.stats["projection_events"], op=MPI.SUM) == 2
    assert tr.projected_samples() == 2


def test_bad_arguments(square):
    with pytest.raises(ValueError, match="number of samples"):
        transport.sample_density(square.p0, 0, 1)
    with pytest.raises(ValueError, match="method"):
        transport.sample_transport(square, 10, method="euler")
    with pytest.raises(ValueError, match="unknown path"):
        transport.sample_transport(square, 10, path="wasserstein")


@pytest.mark.serial
def test_cli_sample_mpi(tmp_path):
    run = tmp_path / "run"
    run_cli("solve", "--set", "mesh.n=16", "--out", str(run), "-q")
    out = tmp_path / "s.npy"
    rep = tmp_path / "r.json"
    run_cli(
        "sample",
        str(run),
        "--n",
        "4000",
        "--steps",
        "8",
        "--seed",
        "3",
        "--out",
        str(out),
        "--json-out",
        str(rep),
        "--save-every",
        "4",
        ranks=2,
    )
    x = np.load(out)
    assert x.shape == (4000, 2) and np.all(np.isfinite(x))
    traj = np.load(tmp_path / "s.traj.npy")
    assert traj.shape == (3, 4000, 2)
    np.testing.assert_allclose(traj[-1], x)
    report = json.loads(rep.read_text())
    assert report["ranks"] == 2 and report["n"] == 4000
    d = report["distances"]
    assert d["transported"]["tv_histogram"] < d["untransported"]["tv_histogram"]
    # the serial run draws the same samples and moves them the same way
    out1 = tmp_path / "s1.npy"
    run_cli("sample", str(run), "--n", "4000", "--steps", "8", "--seed", "3", "--out", str(out1))
    np.testing.assert_allclose(np.load(out1), x, atol=1e-8)


@pytest.mark.serial
def test_cli_sample_errors(tmp_path):
    proc = run_cli("sample", str(tmp_path), "--n", "10", "--out", "x.npy", check=False)
    assert proc.returncode == 2 and "not a beckmann run folder" in proc.stderr
    proc = run_cli("sample", str(tmp_path), "--n", "0", "--out", "x.npy", check=False, ranks=2)
    assert proc.returncode == 2 and proc.stderr.count("--n must be") == 1
