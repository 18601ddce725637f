"""The mixed RT_k x DG_{k-1} solve against the exact case and the primal solve (docs/math.md §10).

Exact case: p0 = 1, p1 = 1 + ½ cos πx cos πy on the unit square, so Δφ = p0 − p1 gives
φ = cos πx cos πy / (4π²) and F = ∇φ.
"""

import numpy as np
import pytest

from beckmann._dolfinx import MPI, dmesh, fem, ufl
from beckmann.mixed import DIVERGENCE_TOL, MixedPoisson
from beckmann.poisson import NeumannPoisson


def norm(u, msh):
    local = fem.assemble_scalar(fem.form(ufl.inner(u, u) * ufl.dx(degree=8)))
    return float(np.sqrt(msh.comm.allreduce(local, op=MPI.SUM)))


def exact(msh):
    x = ufl.SpatialCoordinate(msh)
    phi = ufl.cos(np.pi * x[0]) * ufl.cos(np.pi * x[1]) / (4 * np.pi**2)
    f = -0.5 * ufl.cos(np.pi * x[0]) * ufl.cos(np.pi * x[1])  # p0 - p1
    return phi, f


@pytest.mark.parametrize(("k", "method"), [(1, "mumps"), (2, "mumps"), (1, "gamg")])
def test_rates_divergence_and_boundary(k, method):
    errors = []
    for n in (8, 16, 32) if method == "mumps" else (32, 64):
        msh = dmesh.create_unit_square(MPI.COMM_WORLD, n, n)
        phi_ex, f = exact(msh)
        mp = MixedPoisson(msh, k, method=method, rtol=1e-13)
        F, phi = mp.solve(f)
        errors.append(norm(F - ufl.grad(phi_ex), msh))
        assert mp.divergence_defect(F, f) < 1e-10
        bn = msh.comm.allreduce(fem.assemble_scalar(fem.form(
            ufl.inner(F, ufl.FacetNormal(msh)) ** 2 * ufl.ds)), op=MPI.SUM)
        assert np.sqrt(bn) < 1e-13
        mp.destroy()
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > k - 0.1), (errors, rates)


def test_cost_agrees_with_primal():
    diffs = []
    for n in (8, 16, 32):
        msh = dmesh.create_unit_square(MPI.COMM_WORLD, n, n)
        _, f = exact(msh)
        mp = MixedPoisson(msh, 1, method="mumps")
        F, _ = mp.solve(f)
        V = fem.functionspace(msh, ("Lagrange", 1))
        g = fem.Function(V)
        g.interpolate(fem.Expression(-f, V.element.interpolation_points))
        prim = NeumannPoisson(V, method="mumps")
        phi = prim.solve(g)
        cm = 0.5 * norm(F, msh) ** 2
        cp = 0.5 * norm(ufl.grad(phi), msh) ** 2
        diffs.append(abs(cm - cp))
        assert norm(F - ufl.grad(phi), msh) < 2 * norm(F - ufl.grad(exact(msh)[0]), msh) + \
            2 * norm(ufl.grad(phi - exact(msh)[0]), msh)
        mp.destroy()
        prim.destroy()
    rates = np.log2(np.array(diffs[:-1]) / np.array(diffs[1:]))
    assert np.all(rates > 1.5), (diffs, rates)


def test_gamg_resumes_until_the_divergence_is_round_off():
    """One MINRES pass at rtol 1e-8 leaves div F far from Π f; solve() resumes until it is not."""
    msh = dmesh.create_unit_square(MPI.COMM_WORLD, 32, 32)
    _, f = exact(msh)
    mp = MixedPoisson(msh, 1, method="gamg", rtol=1e-8)
    F1, _ = mp.solve_vector(mp.assemble_rhs(f))  # a single pass
    once, its1 = mp.divergence_defect(F1, f), mp.iterations
    F, _ = mp.solve(f)
    assert once > 1e-9  # the refinement has something to do
    assert mp.divergence <= DIVERGENCE_TOL and mp.divergence_defect(F, f) <= 1e-10
    assert mp.iterations > its1
    mp.destroy()
