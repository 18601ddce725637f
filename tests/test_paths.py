"""Probability paths: the linear and Fisher-Rao fluxes, energies, and the linear blow-up.

References: UFL assembly of the same integrals (independent of the numpy quadrature of
``PathFlux.energy``), the weak continuity equation of each grid flux, normalisation of ``p_s``,
and the known scaling of the linear path's speed with the density floor.
"""

from __future__ import annotations

import numpy as np
import pytest

from beckmann import config, paths, pipeline
from beckmann._dolfinx import MPI, fem, la, ufl

BUMP = "f + exp(-((x - 0.7)**2 + (y - 0.7)**2) / 0.01)"


def _solve(floor: float, n: int = 24):
    cfg = config.resolve(
        sets=[
            f"mesh.n={n}",
            "target.kind=expression",
            f"target.expr={BUMP}",
            f"target.params={{f = {floor}}}",
            "target.min_density=0",
        ]
    )
    return pipeline.solve(cfg, MPI.COMM_WORLD)


@pytest.fixture(scope="module")
def sol():
    return _solve(0.2)


def _assemble(expr, comm, degree=8):
    local = fem.assemble_scalar(fem.form(expr * ufl.dx(metadata={"quadrature_degree": degree})))
    return comm.allreduce(local, op=MPI.SUM)


def test_linear_energy_matches_ufl(sol):
    """∫∫ |F|²/p_t dx dt: numpy quadrature with the exact t-integral vs UFL + Gauss in t."""
    pf = paths.solve_path(sol, "linear")
    e = pf.energy()
    F = ufl.grad(sol.phi)
    tg, wg = np.polynomial.legendre.leggauss(12)
    tc = fem.Constant(sol.msh, 0.0)
    form = fem.form(
        ufl.inner(F, F)
        / ((1 - tc) * sol.p0 + tc * sol.p1)
        * ufl.dx(metadata={"quadrature_degree": 8})
    )
    ref = 0.0
    for t, w in zip(0.5 * (tg + 1), wg, strict=True):
        tc.value = t
        ref += 0.5 * w * sol.comm.allreduce(fem.assemble_scalar(form), op=MPI.SUM)
    assert e["kinetic_energy"] == pytest.approx(ref, rel=1e-5)
    # twice the Beckmann cost bounds it from below and above by the density range
    assert e["kinetic_energy"] > 0
    assert pf.info["solves"] == 0


def test_fisher_rao_flux_solves_continuity(sol):
    """Each grid flux satisfies ∫ F_s·∇w = ∫ ∂_s p_s w (weak Δφ = −∂_s p), p_s has mass 1."""
    path = paths.FisherRaoPath()
    pf = paths.solve_path(sol, path, n_times=5)
    assert pf.info["solves"] == 5
    V = sol.V
    w = ufl.TestFunction(V)
    rate = fem.Function(V)
    for t, F in zip(pf.times, pf.fluxes, strict=True):
        path.rate(float(t), rate)
        lhs = fem.assemble_vector(fem.form(ufl.inner(F, ufl.grad(w)) * ufl.dx))
        lhs.scatter_reverse(la.InsertMode.add)
        rate.x.array[:] -= _assemble(rate, sol.comm) / _assemble(
            fem.Constant(sol.msh, 1.0), sol.comm
        )
        rhs = fem.assemble_vector(fem.form(rate * w * ufl.dx))
        rhs.scatter_reverse(la.InsertMode.add)
        n = V.dofmap.index_map.size_local
        err = sol.comm.allreduce(float(np.abs(lhs.array[:n] - rhs.array[:n]).max()), op=MPI.MAX)
        scale = sol.comm.allreduce(float(np.abs(rhs.array[:n]).max()), op=MPI.MAX)
        assert err < 1e-7 * scale
        path.set_time(float(t))
        assert _assemble(path.ufl_density(), sol.comm) == pytest.approx(1.0, abs=1e-8)


def test_fisher_rao_endpoints_and_zero_flow():
    """p_0 = p0, p_1 = p1 pointwise; with p1 = p0 nothing moves."""
    sol = _solve(0.2, n=8)
    path = paths.FisherRaoPath()
    path.bind(sol.p0, sol.p1)
    q0, q1 = sol.p0.x.array, sol.p1.x.array
    np.testing.assert_allclose(path.density(0.0, q0, q1), q0, rtol=1e-6)
    np.testing.assert_allclose(path.density(1.0, q0, q1), q1, rtol=1e-6)
    same = pipeline.solve(config.resolve(sets=["mesh.n=8"]), MPI.COMM_WORLD)
    pf = paths.solve_path(same, "fisher-rao", n_times=3)
    assert pf.energy()["max_speed"] < 1e-8


def test_linear_blows_up_fisher_rao_does_not():
    """As the target's floor → 0 the linear path's max speed grows like 1/floor; Fisher-Rao's
    grows far slower (logarithmically)."""
    res = {}
    for floor in (1e-2, 1e-4):
        s = _solve(floor, n=32)  # n = 16: the P2 bump dips below 0 at floor 1e-4
        res[floor] = paths.compare_paths(s, n_times=9)
    lin = res[1e-4]["linear"]["max_speed"] / res[1e-2]["linear"]["max_speed"]
    fr = res[1e-4]["fisher-rao"]["max_speed"] / res[1e-2]["fisher-rao"]["max_speed"]
    assert lin > 30  # ~1/floor: a 100x smaller floor
    assert fr < 4  # measured 2.05 -> 4.79 (n = 32)
    assert res[1e-4]["linear"]["max_speed"] > 10 * res[1e-4]["fisher-rao"]["max_speed"]
    assert res[1e-4]["linear"]["kinetic_energy"] > res[1e-4]["fisher-rao"]["kinetic_energy"]


def test_bad_path_arguments(sol):
    with pytest.raises(ValueError, match="unknown path"):
        paths.make_path("geodesic")
    with pytest.raises(ValueError, match="at least 2 times"):
        paths.solve_path(sol, "fisher-rao", n_times=1)
    # a huge time grid is refused at once, before any solve or allocation
    with pytest.raises(ValueError, match="lower --grid"):
        paths.solve_path(sol, "fisher-rao", n_times=10**8)
