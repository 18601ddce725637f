"""Reload costs of a full sweep store (docs/storage.md, "Cheaper reads"), in this process.

Prints the seconds to open the store's mesh and spaces, to read φ and F of the first θ, the
median of the next 7, and the continuity store pass over every θ. Usage (a store of the bench
sweep: ``beckmann sweep full.toml --out STORE`` with ``scripts/bench_sweep.py``'s config)::

    flock /tmp/bench.lock python scripts/bench_store_read.py STORE
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from beckmann._dolfinx import MPI  # noqa: E402
from beckmann.sweep.continuity import continuity_report  # noqa: E402
from beckmann.sweep.store import SweepStore  # noqa: E402


def main(folder: str) -> None:
    comm = MPI.COMM_WORLD
    store = SweepStore(folder, comm)
    t0 = time.perf_counter()
    store.space()
    store.flux_space()
    t1 = time.perf_counter()
    per = []
    for i in range(min(8, len(store.completed()))):
        a = time.perf_counter()
        store.potential(i)
        store.flux(i)
        per.append(time.perf_counter() - a)
    t2 = time.perf_counter()
    continuity_report(store, comm)
    t3 = time.perf_counter()
    if comm.rank == 0:
        print(f"mesh+spaces {t1 - t0:.3f} s, first θ {per[0]:.3f} s, further θ median "
              f"{np.median(per[1:]) * 1e3:.1f} ms, continuity store pass {t3 - t2:.3f} s")


if __name__ == "__main__":
    main(sys.argv[1])
