"""Regularity rates (docs/math.md §6, issue 3): the Hölder estimators confirm Schauder theory.

Every measured number is checked against an independent reference: a closed-form solution
evaluated at the same nodes (radial solutions on the disk, ``cos cos`` on the square), the corner
exponent ``π/ω = 2/3`` of the L-shape, or the quotient ``|∇φ| / p_0`` evaluated pointwise by
:meth:`Solution.evaluate`. Meshes are small (the suite takes well under a minute serially), and the
same tests run under ``mpirun -n 2``.

Tolerances, and why:

* ``C^{0,α}`` targets ``1 + r^α`` on the unit disk (h = 0.05, P2): the radial solution has
  ``D²φ = r^α`` × (bounded matrix) + const, so ``ω(δ) = C δ^α``. The FE field smooths the cusp
  over a cell and no node sits exactly at the cusp, which lowers ``ω`` by ``≈ C r0^α`` at
  every scale, so the plain log–log slope is biased *up* (measured 0.45 / 0.61 / 0.80 for
  α = 0.25 / 0.5 / 0.75; the exact field sampled at the same nodes shows the same bias); the
  increment slope (fit of ``ω(2δ) − ω(δ)``, offset-free) gives 0.33 / 0.56 / 0.79. Tolerance:
  increment within 0.1 of α (FE and exact), plain within 0.05 of the exact field's plain slope
  and in ``[α − 0.05, α + 0.25]``.
* ``C^{1,α}`` target ``1 + r^{3/2}`` (α = 1/2), P3, interior nodes (``margin = 0.15``): the
  plain slope of ``D³φ`` measured 0.47; tolerance 0.1.
* Smooth target: the FE exponent of ``D²φ`` within 0.05 of the exact field's, both ≥ 0.9.
* Schauder ratio ``‖φ‖_{C^{2,1/2}} / ‖p0 − p1‖_{C^{0,1/2}}`` (window from δ = 0.3) on the disk,
  h = 0.1, 0.07, 0.05: the reference is the same ratio of the closed-form radial solution
  (``φ``, ``∇φ``, ``D²φ`` and ``p0 − p1`` evaluated at the same nodes, ``φ`` shifted to the FE
  mean zero), measured by the estimators, which are checked against brute force in
  tests/test_holder.py. Tolerance 5 %: measured FE/exact 0.972, 0.989, 0.989; the ratio must
  stay bounded (change between levels no more than the exact field's, + 2 %).
* L-shape: ``φ ~ r^{2/3}``; exponent of φ (h = 0.05) measured 0.650, tolerance 0.05;
  ``sup |∇φ| ~ h^{−1/3}``: measured rate 0.33–0.35, tolerance [0.2, 0.5].
* Velocity with source floor c: ``‖v_0‖_{C^{0,1/2}}`` measured 0.80, 1.36, 2.45 for c = 0.2,
  0.1, 0.05: must increase, with log-log slope in [−1.1, −0.5] (the quotient predicts → −1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from beckmann import config, holder, pipeline
from beckmann._dolfinx import MPI, fem

pytestmark = pytest.mark.slow


def solve(*sets: str):
    return pipeline.solve(config.resolve(sets=list(sets)), MPI.COMM_WORLD)


def owned_nodes(sol):
    n = sol.V.dofmap.index_map.size_local
    return sol.V.tabulate_dof_coordinates()[:n, : sol.gdim]


_CACHE: dict = {}


def disk_solution(expr: str, h: float, degree: int = 2):
    key = (expr, h, degree)
    if key not in _CACHE:
        _CACHE[key] = solve(
            "mesh.kind=disk",
            f"mesh.h={h}",
            f"solver.degree={degree}",
            "target.kind=expression",
            f"target.expr={expr}",
        )
    return _CACHE[key]


def radial_hessian(sol, alpha: float, X: np.ndarray) -> np.ndarray:
    """Exact (xx, xy, yy) of D²φ for p0 uniform, p1 = (1 + r^α)/Z on the unit disk.

    Δφ = a − b r^α with a = p0 − 1/Z, b = 1/Z; radially φ' = a r/2 − b r^{α+1}/(α+2),
    φ'' = a/2 − b (α+1) r^α/(α+2); D²φ = φ'' r̂r̂ᵀ + (φ'/r)(I − r̂r̂ᵀ).
    """
    comm = MPI.COMM_WORLD
    n = sol.V.dofmap.index_map.size_local
    Xv = owned_nodes(sol)
    rv = np.linalg.norm(Xv, axis=1)
    z_local = np.sum((1.0 + rv**alpha) / sol.p1.x.array[:n])
    Z = comm.allreduce(z_local, op=MPI.SUM) / comm.allreduce(n, op=MPI.SUM)
    p0 = comm.allreduce(float(sol.p0.x.array[:n].max(initial=-np.inf)), op=MPI.MAX)
    a, b = p0 - 1.0 / Z, 1.0 / Z
    r = np.maximum(np.linalg.norm(X, axis=1), 1e-300)
    e = X / r[:, None]
    d2 = a / 2 - b * (alpha + 1) * r**alpha / (alpha + 2)
    d1 = a / 2 - b * r**alpha / (alpha + 2)
    xx = d2 * e[:, 0] ** 2 + d1 * (1 - e[:, 0] ** 2)
    yy = d2 * e[:, 1] ** 2 + d1 * (1 - e[:, 1] ** 2)
    xy = (d2 - d1) * e[:, 0] * e[:, 1]
    return np.c_[xx, xy, yy]


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
def test_c0alpha_target_gives_c2alpha_potential(alpha):
    sol = disk_solution(f"1 + (x**2 + y**2)**({alpha}/2)", 0.05, degree=3)
    r = holder.solution_norms(sol, "potential", 2)
    # reference: the closed-form D²φ at the same nodes, margin and window
    X = owned_nodes(sol)
    R = MPI.COMM_WORLD.allreduce(float(np.linalg.norm(X, axis=1).max(initial=0)), op=MPI.MAX)
    X = X[np.linalg.norm(X, axis=1) <= R - r["margin"]]  # the margin (about: disk, not polygon)
    ref = holder.estimate(
        X,
        radial_hessian(sol, alpha, X),
        MPI.COMM_WORLD,
        delta_min=r["delta_min"],
        delta_max=r["delta_max"],
    )
    # the recovered D²φ matches the exact one at the nodes, away from the cusp (which any FE
    # field smooths over a cell) and from the polygonal boundary
    D2h = holder.recover_derivatives(sol.phi, 2)[2]
    n = D2h.function_space.dofmap.index_map.size_local
    vals = D2h.x.array[: 4 * n].reshape(n, 4)[:, [0, 1, 3]]
    Xn = D2h.function_space.tabulate_dof_coordinates()[:n, :2]
    rad = np.linalg.norm(Xn, axis=1)
    ring = (rad >= 0.2) & (rad <= 0.85)
    exact = radial_hessian(sol, alpha, Xn)
    err = holder.sup_norm(vals[ring] - exact[ring], MPI.COMM_WORLD)
    assert err <= 0.03 * holder.sup_norm(exact[ring], MPI.COMM_WORLD)
    # ... and the headline exponent (the mean-oscillation slope) is Schauder's: D²φ ∈ C^{0,α};
    # the point-cloud estimate of the exact field at the same nodes is biased up by the smooth
    # part next to the cusp, so the FE headline must be at least as close to α
    e = r["exponent"]["estimate"]
    assert e == pytest.approx(alpha, abs=0.05)
    assert abs(e - alpha) <= abs(ref.exponent.estimate - alpha) + 0.01
    assert r["exponent"]["low"] <= r["exponent"]["estimate"] <= r["exponent"]["high"]
    assert r["verdict"] == "holder"


def test_disk_headline_exponent_tracks_alpha():
    """Issue target: disk, 1 + r^{1/4}, h = 0.03, P3: the headline D²φ exponent within 0.1 of α.

    No node sits at the cusp, so ω ≈ C δ^α − C r0^α: the plain slope of ω is biased up
    (measured 0.39); the headline is the mean-oscillation slope (measured 0.24).
    """
    sol = disk_solution("1 + (x**2 + y**2)**(0.25/2)", 0.03, degree=3)
    r = holder.solution_norms(sol, "hessian", 0)
    assert r["estimator"] == "oscillation"
    assert r["exponent"]["estimate"] == pytest.approx(0.25, abs=0.1)
    assert r["exponent_plain"]["estimate"] > 0.25 + 0.1


def test_c1alpha_target_gives_c3alpha_potential():
    sol = disk_solution("1 + (x**2 + y**2)**0.75", 0.05, degree=3)
    # D³φ is beyond the degree's cellwise derivatives: patch-local recovery (measured 0.488)
    r3 = holder.solution_norms(sol, "potential", 3, margin=0.15)
    assert r3["exponent"]["estimate"] == pytest.approx(0.5, abs=0.1)
    # one derivative less is Lipschitz: D²φ reads far above (measured 0.82 on this window)
    r2 = holder.solution_norms(sol, "potential", 2, margin=0.15)
    assert r2["exponent"]["estimate"] > 0.75


@pytest.mark.parametrize("n", [32])
def test_smooth_target_exponent_near_one(n):
    sol = solve(
        f"mesh.n={n}",
        "solver.degree=2",
        "target.kind=expression",
        "target.expr=1 + 0.5*cos(pi*x)*cos(pi*y)",
    )
    margin = 0.1
    r = holder.solution_norms(sol, "potential", 2, margin=margin)
    X = owned_nodes(sol)
    X = X[(X.min(axis=1) >= margin) & (X.max(axis=1) <= 1 - margin)]
    c, s = np.cos(np.pi * X), np.sin(np.pi * X)
    # φ = cos(πx) cos(πy) / (4π²)
    D2 = np.c_[-c[:, 0] * c[:, 1], s[:, 0] * s[:, 1], -c[:, 0] * c[:, 1]] / 4
    ref = holder.estimate(X, D2, MPI.COMM_WORLD, delta_min=r["delta_min"], delta_max=r["delta_max"])
    assert ref.exponent.estimate >= 0.85
    assert r["exponent"]["estimate"] >= 0.85
    assert r["exponent"]["estimate"] == pytest.approx(ref.exponent.estimate, abs=0.05)


def radial_norms(sol, alpha: float, delta_min: float) -> tuple[float, float]:
    """``(‖φ‖_{C^{2,1/2}}, ‖p0 − p1‖_{C^{0,1/2}})`` of the closed-form radial solution.

    Summed over multi-indices like :func:`holder.field_norms`, at the owned P2 nodes, seminorms
    over pairs at least ``delta_min`` apart. ``φ = a r²/4 − b r^{α+2}/(α+2)² + C`` (see
    :func:`radial_hessian`), ``C`` such that ``φ`` has mean zero on the mesh, as the solver's.
    """
    from beckmann._dolfinx import ufl

    comm = MPI.COMM_WORLD
    X = owned_nodes(sol)
    rv = np.linalg.norm(X, axis=1)
    # the data of the problem on the (polygonal) mesh domain: p0 = 1/|Ω_h|, p1 = (1 + r^α)/Z
    x = ufl.SpatialCoordinate(sol.msh)
    vol = comm.allreduce(fem.assemble_scalar(fem.form(1.0 * ufl_dx(sol.msh))), op=MPI.SUM)
    r_ufl = ufl.sqrt(x[0] ** 2 + x[1] ** 2)
    Z = comm.allreduce(
        fem.assemble_scalar(fem.form((1.0 + r_ufl**alpha) * ufl_dx(sol.msh, 8))), op=MPI.SUM
    )
    p0 = 1.0 / vol
    a, b = p0 - 1.0 / Z, 1.0 / Z

    def phi0(x):
        r = np.hypot(x[0], x[1])
        return a * r**2 / 4 - b * r ** (alpha + 2) / (alpha + 2) ** 2

    u = fem.Function(sol.V)
    u.interpolate(phi0)
    mean = comm.allreduce(fem.assemble_scalar(fem.form(u * ufl_dx(sol.msh))), op=MPI.SUM) / vol
    phi = phi0(X.T) - mean
    r = np.maximum(rv, 1e-300)
    d1 = a * r / 2 - b * r ** (alpha + 1) / (alpha + 2)
    grad = d1[:, None] * X / r[:, None]
    hess = radial_hessian(sol, alpha, X)
    sup = sum(holder.sup_norm(c, comm) for c in (phi, *grad.T, *hess.T))
    semi = sum(holder.seminorm(X, c, comm, 0.5, delta_min=delta_min) for c in hess.T)
    rhs = p0 - (1.0 + rv**alpha) / Z
    den = holder.sup_norm(rhs, comm) + holder.seminorm(X, rhs, comm, 0.5, delta_min=delta_min)
    return sup + semi, den


def ufl_dx(msh, degree: int | None = None):
    from beckmann._dolfinx import ufl

    meta = {} if degree is None else {"quadrature_degree": degree}
    return ufl.dx(domain=msh, metadata=meta)


def test_schauder_ratio_bounded_and_settling():
    ratios, refs = [], []
    for h in (0.1, 0.07, 0.05):
        sol = disk_solution("1 + (x**2 + y**2)**0.25", h)
        f = fem.Function(sol.V)
        f.x.array[:] = sol.p0.x.array - sol.p1.x.array
        num = holder.solution_norms(sol, "potential", 2, 0.5, delta_min=0.3, margin=0.0)
        den = holder.field_norms(f, 0, 0.5, delta_min=0.3, margin=0.0)
        assert num["delta_min"] == den["delta_min"] == 0.3
        ratios.append(num["norm"] / den["norm"])
        ref_num, ref_den = radial_norms(sol, 0.25, 0.3)
        refs.append(ref_num / ref_den)
    ratios, refs = np.array(ratios), np.array(refs)
    assert np.all(np.abs(ratios / refs - 1) < 0.05), (ratios, refs)
    # bounded: it changes between levels no more than the exact field's sampled ratio does
    assert np.all(np.abs(np.diff(ratios)) <= np.abs(np.diff(refs)) + 0.02 * ratios[1:]), ratios


def lshape(h):
    return solve(
        "mesh.kind=lshape",
        f"mesh.h={h}",
        "solver.degree=2",
        "source.kind=expression",
        "source.expr=0.1 + exp(-((x-0.5)**2 + (y-0.5)**2)/0.05)",
        "target.kind=expression",
        "target.expr=0.1 + exp(-((x+0.5)**2 + (y+0.5)**2)/0.05)",
    )


def test_lshape_corner_singularity():
    h_sup = []
    for h in (0.1, 0.05):
        sol = lshape(h)
        r1 = holder.solution_norms(sol, "potential", 1)
        h_sup.append((r1["h"], r1["sup_tensor"][1]))
    r0 = holder.solution_norms(sol, "potential", 0)
    # φ ~ r^{2/3} at the re-entrant corner: the band. The mean oscillation sampled at
    # quadrature points reads 0.655, 0.650 at h = 0.1, 0.05 (at the nodes it read 0.54: the
    # node at the corner's tip weighs on the smallest cubes)
    assert r0["exponent"]["estimate"] == pytest.approx(2 / 3, abs=0.05)
    (h1, s1), (h2, s2) = h_sup
    rate = math.log(s2 / s1) / math.log(h1 / h2)  # sup|∇φ| ~ h^{-rate}, theory 1/3
    assert 0.2 <= rate <= 0.5, h_sup
    # contrast: no corner, no growth (the same problem type on the unit square)
    sups = []
    for n in (16, 32):
        sq = solve(
            f"mesh.n={n}",
            "solver.degree=2",
            "source.kind=expression",
            "source.expr=0.1 + exp(-((x-0.7)**2 + (y-0.7)**2)/0.05)",
            "target.kind=expression",
            "target.expr=0.1 + exp(-((x-0.3)**2 + (y-0.3)**2)/0.05)",
        )
        sups.append(holder.solution_norms(sq, "potential", 1)["sup_tensor"][1])
    assert sups[1] == pytest.approx(sups[0], rel=0.03)


def test_velocity_norm_grows_as_density_floor_vanishes():
    comm = MPI.COMM_WORLD
    floors = (0.2, 0.1, 0.05)
    norms = []
    for c in floors:
        sol = solve(
            "mesh.n=16",
            "solver.degree=2",
            "source.kind=expression",
            f"source.expr={c} + (x-0.3)**2",
            "target.kind=expression",
            "target.expr=1 + 0.5*cos(pi*x)*cos(pi*y)",
        )
        r = holder.solution_norms(sol, "velocity", 0, 0.5, t=0.0)
        norms.append(r["norm"])
        # reference sup|v_0|: the quotient |∇φ| / p0 evaluated pointwise at the nodes
        X = np.concatenate(comm.allgather(owned_nodes(sol)))
        v = sol.evaluate(X, 0.0, what=("velocity",))["velocity"]
        assert r["sup_norms"][0] == pytest.approx(np.linalg.norm(v, axis=1).max(), rel=0.05)
    assert norms[0] < norms[1] < norms[2], norms
    slope = np.polyfit(np.log(floors), np.log(norms), 1)[0]
    assert -1.1 <= slope <= -0.5, (norms, slope)
