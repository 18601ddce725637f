"""The ring task of issue 16, through the CLI: prompt r, a 9-member sweep, default `fit`.

The target is a ring of radius ``r`` (the prompt) around the centre of the unit square, the
source uniform; everything else is at its default (mesh 32 x 32, P2, GAMG). Steps, each a
``beckmann`` subprocess (what a user runs):

1. ``beckmann sweep`` over ``r`` in ``linspace(0.15, 0.35, 9)``;
2. ``beckmann fit STORE --field velocity --out vnet`` **with the default network settings**,
   timed as a whole process (wall clock, and the CPU seconds of the process);
3. at an unseen prompt ``r*`` (default 0.2625, half-way between two grid values):
   ``beckmann solve`` at ``r*`` (the FE reference), ``beckmann sample`` of that run twice with
   independent seeds (FE set A, FE set B), and ``beckmann sample STORE --model vnet --param
   r=r*`` (the network's samples, another seed);
4. MMD² (Gaussian kernel, bandwidth stated) of network vs A and of B vs A, on all samples, the
   same kernel for both; the target is ``MMD²(net, A) <= 3 MMD²(B, A)``. Also printed: the
   network's held-out relative L² error of the fit report (at the grid's members), the relative
   L² error of the velocity at ``r*`` against the FE velocity of the solve at ``r*`` (points
   from ``p_t``, ``t`` uniform), and the mean ring radius of each sample set.

Usage::

    nice -n 5 .venv/bin/python scripts/conditional_generation.py --out /tmp/ring [--ranks 2]

Prints the figures and one JSON line (``--json-out`` also writes it).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
RING = "0.05 + exp(-(sqrt((x - 0.5)**2 + (y - 0.5)**2) - r)**2 / 0.005)"


def run(cmd: list[str], ranks: int = 1) -> tuple[str, float, float]:
    """Run ``beckmann CMD``; its stdout, wall seconds and CPU seconds (user + system)."""
    full = [str(BIN / "beckmann"), *cmd]
    if ranks > 1:
        full = [str(BIN / "mpirun"), "-n", str(ranks), *full]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.perf_counter()
    proc = subprocess.run(full, check=True, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.stdout, wall, cpu


def mmd2(x: np.ndarray, y: np.ndarray, s: float) -> float:
    from beckmann.transport.reference import gaussian_mmd2

    return gaussian_mmd2(x, y, s)


def config(path: Path, grid: tuple[float, float, int] | None, r: float | None) -> Path:
    lines = ['[target]', 'kind = "expression"', f'expr = "{RING}"']
    if r is not None:
        lines.append(f"params = {{ r = {r!r} }}")
    if grid is not None:
        lines += ["[sweep]", "continuity = false", "[sweep.parameters]",
                  f"r = {{ linspace = [{grid[0]!r}, {grid[1]!r}, {grid[2]}] }}"]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def velocity_error_at(run_dir: Path, model: Path, r: float, n: int) -> float:
    """Relative L² error of the network at ``r`` against the FE velocity of ``run_dir``."""
    import beckmann._dolfinx  # noqa: F401 - loads MPI the wheel's way
    from beckmann import requ
    from beckmann._dolfinx import MPI

    comm = MPI.COMM_SELF
    data = requ.training_set(run_dir, "velocity", n, 99, comm, sampling="path")
    net = requ.load(model, field="velocity")
    z = np.hstack([data["x"], np.full((len(data["x"]), 1), r)])
    e = net(z) - data["y"]
    return float(np.sqrt(np.mean(np.sum(e**2, axis=1)) / np.mean(np.sum(data["y"] ** 2, axis=1))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="working folder (replaced)")
    ap.add_argument("--grid", default="0.15,0.35,9", help="r linspace: start,stop,count")
    ap.add_argument("--r", type=float, default=0.2625, help="the unseen prompt")
    ap.add_argument("--n", type=int, default=4000, help="samples per set")
    ap.add_argument("--ranks", type=int, default=1, help="ranks of sweep/solve/sample")
    ap.add_argument("--fit-ranks", type=int, default=1, help="ranks of fit")
    ap.add_argument("--mmd-bandwidth", type=float, default=0.05, help="MMD kernel width s")
    ap.add_argument("--fit-arg", action="append", default=[], help="extra fit options")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    a, b, k = args.grid.split(",")
    grid = (float(a), float(b), int(k))
    store, vnet, fe_run = out / "store", out / "vnet", out / "fe"
    _, t_sweep, _ = run(["sweep", str(config(out / "sweep.toml", grid, None)), "--out",
                         str(store), "--overwrite", "-q"], args.ranks)  # fmt: skip
    fit_out, t_fit, cpu_fit = run(
        ["fit", str(store), "--field", "velocity", "--out", str(vnet), "--overwrite",
         *args.fit_arg], args.fit_ranks,
    )  # fmt: skip
    fit = json.loads(fit_out)
    run(["solve", str(config(out / "fe.toml", None, args.r)), "--out", str(fe_run),
         "--overwrite", "-q"], args.ranks)  # fmt: skip
    sets = {}
    for name, src, seed, extra in (
        ("fe_a", fe_run, 1, []),
        ("fe_b", fe_run, 2, []),
        ("net", store, 3, ["--model", str(vnet), "--param", f"r={args.r!r}"]),
    ):
        path = out / f"{name}.npy"
        run(["sample", str(src), "--n", str(args.n), "--seed", str(seed), "--out", str(path),
             "--overwrite", "--json-out", str(out / f"{name}.json"), *extra],
            args.ranks)  # fmt: skip
        sets[name] = np.load(path)
    s = args.mmd_bandwidth
    from beckmann.transport.reference import median_bandwidth

    s_med = median_bandwidth(sets["fe_a"])
    res = {
        "r": args.r,
        "grid": list(np.linspace(*grid[:2], grid[2]).round(6)),
        "sweep_seconds": round(t_sweep, 2),
        "fit_wall_seconds": round(t_fit, 2),
        "fit_cpu_seconds": round(cpu_fit, 2),
        "fit_train_seconds": fit["train_seconds"],
        "fit_settings": {key: fit[key] for key in ("width", "depth", "steps", "training_points",
                                                   "sampling", "test_measure")},  # fmt: skip
        "fit_heldout_l2_error": fit["l2_error"],
        "velocity_l2_error_at_r": velocity_error_at(fe_run, vnet, args.r, 4000),
        "samples": args.n,
    }
    for label, width in (("mmd", s), ("mmd_median", s_med)):
        net, floor = mmd2(sets["net"], sets["fe_a"], width), mmd2(sets["fe_b"], sets["fe_a"], width)
        res[label] = {"bandwidth": width, "net_vs_fe": net, "fe_vs_fe": floor,
                      "ratio": net / floor}  # fmt: skip
    for name, pts in sets.items():
        res[f"mean_radius_{name}"] = float(np.linalg.norm(pts - 0.5, axis=1).mean())
    print(
        f"ring r* = {args.r}: sweep {grid[2]} members {t_sweep:.1f} s; fit (defaults "
        f"{fit['width']}x{fit['depth']}, {fit['steps']} steps, {fit['training_points']} points "
        f"from {fit['test_measure']}) {t_fit:.1f} s wall, {cpu_fit:.1f} s CPU\n"
        f"held-out rel. L2 error (grid members) {fit['l2_error']:.4f}; at r* "
        f"{res['velocity_l2_error_at_r']:.4f}\n"
        f"MMD² (s = {s:g}): net vs FE {res['mmd']['net_vs_fe']:.3e}, FE vs FE "
        f"{res['mmd']['fe_vs_fe']:.3e}, ratio {res['mmd']['ratio']:.2f} (target <= 3)\n"
        f"MMD² (median s = {s_med:.3g}): ratio {res['mmd_median']['ratio']:.2f}\n"
        f"mean radius: net {res['mean_radius_net']:.4f}, FE {res['mean_radius_fe_a']:.4f}",
        file=sys.stderr,
    )
    line = json.dumps(res)
    print(line)
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")


if __name__ == "__main__":
    main()
