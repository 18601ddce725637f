"""Linear vs Fisher-Rao path as the target's density floor goes to 0: kinetic energy, max |v|.

Target ``floor + exp(-|x - (0.7, 0.7)|² / 0.01)`` from a uniform source on the unit square (P2).
The linear path's speed ``|F| / p_t`` grows like ``1/floor``; the Fisher-Rao path's grows slowly.

    python scripts/path_blowup.py --n 32 --floors 1e-1 1e-2 1e-3 1e-4
"""

from __future__ import annotations

import argparse
import json

from beckmann import config, paths, pipeline
from beckmann._dolfinx import MPI


def main() -> None:
    """Print one JSON line per floor (rank 0)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--grid", type=int, default=17, help="Fisher-Rao time grid")
    ap.add_argument("--floors", type=float, nargs="+", default=[1e-1, 1e-2, 1e-3, 1e-4])
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    for floor in args.floors:
        cfg = config.resolve(
            sets=[
                f"mesh.n={args.n}",
                "target.kind=expression",
                "target.expr=f + exp(-((x - 0.7)**2 + (y - 0.7)**2) / 0.01)",
                f"target.params={{f = {floor}}}",
                "target.min_density=0",
            ]
        )
        res = paths.compare_paths(pipeline.solve(cfg, comm), n_times=args.grid)
        if comm.rank == 0:
            print(json.dumps({"floor": floor, **res}), flush=True)


if __name__ == "__main__":
    main()
