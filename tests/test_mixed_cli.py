"""``solver.formulation = "mixed"`` through the public interface: the CLI and the pipeline API.

The example ``EDGE`` (P1, n = 16) has its target bump next to the face x = 1: the Lagrange flux
of the primal solve has a normal component on that face, so transported samples leave the
square and are projected back; the Raviart-Thomas flux has F·n = 0 exactly and none leave.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from beckmann import config, pipeline
from beckmann._dolfinx import MPI
from beckmann.store.jsonio import read_summary
from beckmann.store.run import load_run

EDGE = [
    "--set", "mesh.n=16", "--set", "solver.degree=1", "--set", "solver.method=mumps",
    "--set", "target.kind=expression",
    "--set", "target.expr=0.05 + exp(-((x - 0.97)**2 + (y - 0.5)**2) / 0.005)",
    "--set", "output.times=[0.0, 1.0]",
]  # fmt: skip
MIXED = ["--set", "solver.formulation=mixed"]
# interior points (no cell boundary ambiguity matters: values compared on one mesh), and points
# on the faces x = 0, x = 1, y = 0 where F·n must vanish
RNG = np.random.default_rng(7)
INTERIOR = RNG.uniform(0.05, 0.95, size=(20, 2))
FACES = np.array([[0.0, 0.37], [1.0, 0.52], [0.41, 0.0]])
NORMALS = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


def _cfg(*sets: str) -> dict:
    pairs = [s for s in sets if s != "--set"]
    return config.resolve(None, pairs, base=pipeline.BUILTIN_EXAMPLE)


@pytest.mark.serial
@pytest.mark.parametrize("ranks", [2])  # serial runs: the API tests below (both sessions)
def test_cli_mixed_run(tmp_path, ranks):
    out = tmp_path / "mixed"
    run_cli("solve", *EDGE, *MIXED, "--out", str(out), "-q", ranks=ranks)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["formulation"] == "mixed"
    assert summary["elements"] == "RT_1 x DG_0"
    assert summary["method"] == "mumps" and "mumps" in summary["solver"]
    assert 0.0 <= summary["divergence_defect"] <= 1e-10  # max over cells |div F − Π(p0 − p1)|
    assert summary["boundary_flux"] < 1e-12
    for sub in ("flux", "potential"):
        assert (out / "checkpoint" / sub / "checkpoint.json").is_file()
    np.save(tmp_path / "pts.npy", np.vstack([INTERIOR, FACES]))
    probe = run_cli("probe", str(out), "--points", str(tmp_path / "pts.npy"), ranks=ranks)
    res = json.loads(probe.stdout)
    F = np.array(res["flux"])
    assert np.abs(np.einsum("nd,nd->n", F[-3:], NORMALS)).max() < 1e-12
    assert np.abs(F[:-3]).max() > 1e-3
    # holder measures the RT flux (the DG potential is refused: test_api_escape_primal_vs_mixed)
    hold = run_cli("holder", str(out), "--field", "flux", ranks=ranks)
    sup = json.loads(hold.stdout)["sup_tensor"][0]  # sup |F| over the nodes
    assert 0.9 * np.linalg.norm(F, axis=1).max() < sup < 3.0 * np.linalg.norm(F, axis=1).max()
    # transport with the H(div) flux: no sample leaves the square
    samp = run_cli("sample", str(out), "--n", "1000", "--method", "rk4",
                   "--out", str(tmp_path / "s.npy"), "--json-out", str(tmp_path / "s.json"),
                   ranks=ranks)  # fmt: skip
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["n"] == 1000 and report["projected_samples"] == 0, samp.stdout
    if ranks == 2:
        # the checkpoint written on 2 ranks reloads on 1 with identical values
        sol = load_run(out, MPI.COMM_SELF)
        again = sol.evaluate(np.vstack([INTERIOR, FACES]))
        for key in ("potential", "flux", "velocity"):
            np.testing.assert_allclose(again[key], np.array(res[key]), rtol=1e-12, atol=1e-15)
        assert sol.cost() == pytest.approx(summary["beckmann_cost"], rel=1e-12)


@pytest.mark.serial
def test_cli_sweep_refuses_mixed(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('[mesh]\nn = 4\n[solver]\nformulation = "mixed"\n[target]\nkind = '
                    '"expression"\nexpr = "1 + a*x"\n[sweep.parameters]\na = [0.1, 0.2]\n')
    proc = run_cli("sweep", str(path), "--out", str(tmp_path / "sw"), check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "beckmann: error: beckmann sweep solves the primal formulation only; "
        "solver.formulation = 'mixed' applies to `beckmann solve`"
    ]


def test_api_escape_primal_vs_mixed(mpi_tmp_path, comm):
    """Serially and under mpirun -n 2: the Lagrange flux loses samples, the RT flux none."""
    from beckmann.holder.fe import solution_norms
    from beckmann.transport import sample_transport

    counts = {}
    for form in ("primal", "mixed"):
        cfg = _cfg(*EDGE, "--set", f"solver.formulation={form}")
        pipeline.run(cfg, comm, out=mpi_tmp_path / form)
        summary = read_summary(mpi_tmp_path / form)  # "primal" is the default
        elements = {"primal": "P_1", "mixed": "RT_1 x DG_0"}[form]
        assert (summary["formulation"], summary["elements"]) == (form, elements)
        sol = load_run(mpi_tmp_path / form, comm)
        assert type(sol).__name__ == ("MixedSolution" if form == "mixed" else "Solution")
        if form == "mixed":  # on every rank, before anything collective
            with pytest.raises(ValueError, match=r"^holder --field potential needs a continuous"
                               r" potential; a mixed run's φ is DG"):  # fmt: skip
                solution_norms(sol, "potential")
        for path in ("linear", "fisher-rao"):
            rep = sample_transport(sol, 1000, path=path, method="rk4", n_times=6, bins=4,
                                   energy_points=100, path_report=False)  # fmt: skip
            counts[form, path] = rep["report"]["projected_samples"]
    # (31 and 24 of 1000 when written, serially: F·n = O(h) on the face x = 1)
    assert counts["mixed", "linear"] == 0 and counts["primal", "linear"] >= 5, counts
    assert counts["mixed", "fisher-rao"] == 0 and counts["primal", "fisher-rao"] >= 5, counts


def test_api_mixed_agrees_with_primal(comm):
    """Cost and flux of the two formulations through pipeline.solve: O(h²) and O(h) (P1)."""
    exact = ["--set", "target.kind=expression", "--set",
             "target.expr=1 + 0.5*cos(pi*x)*cos(pi*y)", "--set", "solver.degree=1",
             "--set", "solver.method=mumps"]  # fmt: skip
    pts = RNG.uniform(0.0, 1.0, size=(400, 2))
    dcost, dflux = [], []
    for n in (8, 16, 32):
        sols = {
            form: pipeline.solve(
                _cfg(*exact, "--set", f"mesh.n={n}", "--set", f"solver.formulation={form}"), comm
            )
            for form in ("primal", "mixed")
        }
        assert sols["mixed"].info["divergence_defect"] < 1e-10
        c = {f: s.cost() for f, s in sols.items()}
        F = {f: s.evaluate(pts, what=("flux",))["flux"] for f, s in sols.items()}
        dcost.append(abs(c["mixed"] - c["primal"]))
        dflux.append(float(np.sqrt(np.mean(np.sum((F["mixed"] - F["primal"]) ** 2, axis=1)))))
    rc = np.log2(np.array(dcost[:-1]) / np.array(dcost[1:]))
    rf = np.log2(np.array(dflux[:-1]) / np.array(dflux[1:]))
    assert np.all(rc > 1.5), (dcost, rc)
    assert np.all(rf > 0.8), (dflux, rf)
    # both tend to the exact cost ½‖∇φ‖², φ = cos πx cos πy / (4π²)
    assert c["mixed"] == pytest.approx(0.5 * (np.pi**2 / 2) / (4 * np.pi**2) ** 2, rel=2e-2)
