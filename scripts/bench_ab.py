"""Interleaved A/B of the whole command: the peer, beckmann from another tree, beckmann here.

``beckmann solve`` at n (P1, p1 = 1 + ½ cos πx cos πy, as ``bench_solve.py``) is run as a user
runs it, once with ``PYTHONPATH=TREE`` (a copy of the package at another commit: it shadows the
editable install) and once as installed, with the peer (scikit-fem + pyamg) before them, ``reps``
times; printed: medians of wall and CPU time and peak memory, and the phases of the median runs.

    git archive <commit> beckmann | tar -x -C /tmp/before          # the other tree
    python scripts/bench_ab.py 1024 3 /tmp/before
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_solve as bs  # noqa: E402


def main() -> None:
    n, reps, tree = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "BECKMANN_NO_PROGRESS": "1"}  # fmt: skip
    env.pop("PYTHONPATH", None)
    me = [sys.executable, bs.__file__]
    work = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    cfg = work / "bench.toml"
    cfg.write_text(f'[mesh]\nkind = "unit_square"\nn = {n}\n[solver]\ndegree = 1\n'
                   f'[target]\nkind = "expression"\nexpr = "{bs.EXPR}"\n')  # fmt: skip
    rows: dict[str, list[tuple[float, float, float]]] = {}
    sums: dict[str, list[dict]] = {}
    print("load before", os.getloadavg(), flush=True)
    try:
        for rep in range(reps):
            for who in ("peer", "before", "after"):
                if who == "peer":
                    cmd, e = [*me, "--worker", "peer", "--n", str(n)], env
                else:
                    cmd = [str(bs.BIN / "beckmann"), "solve", str(cfg), "--out",
                           str(work / who), "--overwrite", "-q"]  # fmt: skip
                    e = {**env, "PYTHONPATH": tree} if who == "before" else env
                wall, rss, _, cpu = bs.timed([*me, "--worker", "wrap", "--", *cmd], e)
                rows.setdefault(who, []).append((wall, cpu, rss))
                if who != "peer":
                    sums.setdefault(who, []).append(
                        json.loads((work / who / "summary.json").read_text()))
                print(f"rep {rep} {who:7s} wall {wall:6.2f} cpu {cpu:6.2f} peak {rss:.2f} GB "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("load after", os.getloadavg())
    pw = statistics.median(r[0] for r in rows["peer"])
    pc = statistics.median(r[1] for r in rows["peer"])
    for who, rs in rows.items():
        w, c, m = (statistics.median(r[i] for r in rs) for i in range(3))
        print(f"{who:7s} wall {w:6.2f} ({w / pw:.2f}x)  cpu {c:6.2f} ({c / pc:.2f}x)  "
              f"peak {m:.2f} GB")
    for who, ss in sums.items():
        walls = [r[0] for r in rows[who]]
        pick = sorted(range(len(walls)), key=walls.__getitem__)[(len(walls) - 1) // 2]
        s = ss[pick]
        t, parts = s["timings"], s.get("output_timings", {})
        print(f"{who} median run phases: " + ", ".join(f"{k} {v:.2f}" for k, v in t.items())
              + f"; outside phases {walls[pick] - sum(t.values()):.2f}; output "
              f"{100 * t['output'] / walls[pick]:.1f} %; parts "
              + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
              + f"; quadrature degree {s['quadrature_degree']}, {s['iterations']} its, "
              f"{s['method']}")


if __name__ == "__main__":
    main()
