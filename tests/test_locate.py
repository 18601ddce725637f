"""Point location: a point is evaluated in a cell that contains it, on any number of ranks.

References are geometric: the barycentric coordinates of the point in the chosen cell (computed
here from the vertices), and points deep inside the same cell.
"""

from __future__ import annotations

import numpy as np
import pytest

from beckmann import config, pipeline, transport
from beckmann._dolfinx import MPI
from beckmann.locate import INSIDE_TOL, MeshCells, pick_cells, select_rank
from beckmann.paths import solve_path

#: Issue 12, item 5: two points strictly inside one P1 triangle of the 4 x 4 square, 5e-7 and
#: 5e-6 from its diagonal. DOLFINx's collision test counts the first as colliding with the
#: neighbour across the diagonal too.
NEAR_DIAGONAL = np.array(
    [[0.1000003535533906, 0.09999964644660941], [0.1000035355339059, 0.09999646446609407]]
)
DEEP = np.array([[0.1, 0.05]])  # the same triangle, far from its edges


@pytest.fixture(scope="module")
def p1_square():
    cfg = config.resolve(sets=["mesh.n=4", "solver.degree=1"], base=pipeline.BUILTIN_EXAMPLE)
    return pipeline.solve(cfg, MPI.COMM_WORLD)


def _barycentric(vertices, x):
    J = (vertices[1:] - vertices[0]).T
    lam = np.linalg.solve(J, x - vertices[0])
    return np.r_[1.0 - lam.sum(), lam]


def test_probe_points_in_the_same_cell_get_the_same_flux(p1_square):
    """The issue's reproduction: P1 flux is constant on the triangle, so all three agree."""
    sol = p1_square
    F = sol.evaluate(np.vstack([NEAR_DIAGONAL, DEEP]), what=("flux",))["flux"]
    np.testing.assert_allclose(F[0], F[2], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(F[1], F[2], rtol=1e-12, atol=1e-14)
    assert np.abs(F[2]).max() > 1e-3  # a non-trivial flux, so a wrong cell would show


def test_locator_picks_a_containing_cell(p1_square):
    """The chosen cell (one rank per point) contains the point: all barycentric λ ≥ −tol."""
    sol = p1_square
    loc = sol.locator()
    x, cells, mine = loc.locate(NEAR_DIAGONAL)
    nodes = np.asarray(sol.msh.geometry.dofmaps[0])
    xg = sol.msh.geometry.x[:, :2]
    lam = [_barycentric(xg[nodes[cells[i]]], x[i, :2]).min() for i in np.flatnonzero(mine)]
    worst = sol.comm.allreduce(min(lam, default=1.0), op=MPI.MIN)
    assert worst >= -INSIDE_TOL
    assert sol.comm.allreduce(int(mine.sum()), op=MPI.SUM) == len(NEAR_DIAGONAL)


def test_transport_search_and_velocity_use_the_same_rule(p1_square):
    """MeshCells.search (transport) picks a containing cell; the velocity matches the probe."""
    sol = p1_square
    mc = MeshCells(sol.msh)
    cells, tier, key = mc.search(NEAR_DIAGONAL, owned=True)
    mine, found = select_rank(sol.comm, tier, key)  # a rank may hold only the neighbour
    ok = all(
        tier[i] == 0
        and mc.barycentric(NEAR_DIAGONAL[i : i + 1], cells[i : i + 1]).min() >= -INSIDE_TOL
        for i in np.flatnonzero(mine)
    )
    assert sol.comm.allreduce(int(not ok), op=MPI.SUM) == 0
    assert found.all() and sol.comm.allreduce(int(mine.sum()), op=MPI.SUM) == len(NEAR_DIAGONAL)
    tr = transport.Transporter(transport.FieldEvaluator(solve_path(sol, "linear"), mc))
    mine = NEAR_DIAGONAL if sol.comm.rank == 0 else np.zeros((0, 2))
    v, _ = tr.velocity(0.4, mine, np.full(len(mine), -1, dtype=np.int32))
    v = sol.comm.bcast(v, root=0)
    ref = sol.evaluate(NEAR_DIAGONAL, t=0.4)["velocity"]
    np.testing.assert_allclose(v, ref, rtol=1e-10)


def test_pick_cells_rule():
    """Containing cells beat merely colliding ones; among equals the smaller key wins."""
    point_of = np.array([0, 0, 0, 1, 1])
    cand = np.array([5, 6, 7, 8, 9], dtype=np.int32)
    lam_min = np.array([-1e-7, 0.1, 0.2, -1e-3, -1e-5])
    key = np.array([0.0, 3.0, 2.0, 5.0, 4.0])
    cells, tier, best = pick_cells(3, point_of, cand, lam_min, key)
    np.testing.assert_array_equal(cells, [7, 9, -1])
    np.testing.assert_array_equal(tier, [0.0, 1.0, np.inf])
    np.testing.assert_array_equal(best, [2.0, 4.0, np.inf])
