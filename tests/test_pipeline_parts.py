"""The pipeline's shortcuts give what the general methods give (to round-off)."""

from __future__ import annotations

import pytest

from beckmann import config, pipeline
from beckmann._dolfinx import MPI


@pytest.mark.parametrize(("degree", "kind"), [(1, "unit_square"), (2, "disk"), (3, "unit_square")])
def test_cost_from_the_stiffness_matrix_equals_the_assembled_energy(degree, kind):
    """summary's beckmann_cost (½ φᵀAφ, one mat-vec) = ½ ∫ |∇φ|² dx assembled by DOLFINx."""
    sets = [f"mesh.kind='{kind}'", "mesh.n=12", "mesh.h=0.15", f"solver.degree={degree}",
            "target.kind='expression'", "target.expr='1 + x*y**2 + 0.3*sin(3*x)'"]
    sol = pipeline.solve(config.resolve(sets=sets), MPI.COMM_WORLD)
    ref = sol.cost()
    assert ref > 1e-5
    assert sol.info["beckmann_cost"] == pytest.approx(ref, rel=1e-12)


@pytest.mark.serial
def test_solve_imports_neither_the_holder_package_nor_scipy():
    """``beckmann solve`` starts without beckmann.holder or SciPy; ``beckmann.study`` works."""
    import subprocess
    import sys

    code = (
        "import sys, beckmann, beckmann.cli, beckmann.cli.solve, beckmann.pipeline\n"
        "bad = [m for m in sys.modules if m.startswith(('beckmann.holder', 'scipy'))]\n"
        "assert not bad, bad\n"
        "from beckmann.holder.studies import study\n"
        "assert beckmann.study is study\n"
        "try:\n    beckmann.nothing\nexcept AttributeError:\n    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
