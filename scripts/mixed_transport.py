"""Samples that leave the domain: the Lagrange flux (primal) against the RT flux (mixed).

    .venv/bin/python scripts/mixed_transport.py [--n 20000] [--ranks 1] [--out /tmp/mixed-transport]

For the built-in example (``beckmann solve``, P2 and P1) and the "edge" example of docs/mixed.md
(target bump next to the face x = 1, P1, n = 16), solves both formulations and transports ``n``
samples with RK4 (50 steps) through the CLI, then prints one JSON line per case: the
``projected_samples`` of ``beckmann sample``'s report (distinct samples that left the domain and
were projected back), its fraction, and the mixed run's cellwise divergence defect.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
EDGE = [
    "--set", "mesh.n=16", "--set", "solver.degree=1", "--set", "solver.method=mumps",
    "--set", "target.kind=expression",
    "--set", "target.expr=0.05 + exp(-((x - 0.97)**2 + (y - 0.5)**2) / 0.005)",
]  # fmt: skip
CASES = {"builtin-P2": [], "builtin-P1": ["--set", "solver.degree=1"], "edge-P1": EDGE}


def beckmann(ranks: int, *args: str) -> None:
    cmd = [str(BIN / "beckmann"), *args]
    if ranks > 1:
        cmd = [str(BIN / "mpirun"), "-n", str(ranks), *cmd]
    subprocess.run(cmd, check=True, timeout=1800, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--out", default="/tmp/mixed-transport")
    args = ap.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    for case, sets in CASES.items():
        for form in ("primal", "mixed"):
            run = root / f"{case}-{form}"
            beckmann(args.ranks, "solve", *sets, "--set", f"solver.formulation={form}",
                     "--out", str(run), "--overwrite", "-q")  # fmt: skip
            rep = run / "sample.json"
            beckmann(args.ranks, "sample", str(run), "--n", str(args.n), "--method", "rk4",
                     "--out", str(run / "samples.npy"), "--overwrite",
                     "--json-out", str(rep))  # fmt: skip
            r = json.loads(rep.read_text())
            s = json.loads((run / "summary.json").read_text())
            print(json.dumps({
                "case": case, "formulation": form, "ranks": args.ranks, "n": r["n"],
                "projected_samples": r["projected_samples"],
                "fraction": r["projected_samples"] / r["n"],
                "divergence_defect": s.get("divergence_defect"),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
