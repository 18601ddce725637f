"""Two moons, from samples, through the CLI with the defaults: MMD² to held-out data vs noise.

The issue-16 target: with the default settings, the transported samples' MMD² to held-out data
is at most 2x the noise floor (MMD² between two disjoint subsets of the data).

Steps (each a ``beckmann`` subprocess, so this measures what a user gets):

1. generate 20k training and 5k held-out two-moons points (numpy only: the construction of
   scikit-learn's ``make_moons``, noise 0.05), scaled by one factor into the unit square;
2. ``beckmann solve`` with ``target.kind = "samples"`` on the training points and
   ``target.floor = 0.02`` (``--floor``; the default 0 is refused, since the KDE vanishes away
   from the moons), every other option at its default (``--set`` adds more);
3. ``beckmann sample RUN --n 20000 --reference heldout.npy``; the held-out report's
   ``mmd2.ratio_to_floor`` is the figure, and a second report against a training subset gives
   the "two training subsets" floor of the issue.

4. with ``--fit``: ``beckmann fit RUN --field velocity --time-input`` with the default network
   (the flux form: F(x) fitted, divided by the tabulated p_t; ``--fit-arg`` adds options), its
   held-out relative L² error, and ``sample --model`` against the held-out data.

Usage::

    .venv/bin/python scripts/two_moons.py --out /tmp/moons [--ranks 2] [--fit]

Prints one JSON line with the bandwidth, the MMD² values and the ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def two_moons(n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` two-moons points (scikit-learn's construction), in the unit square."""
    n_out = n // 2
    n_in = n - n_out
    t_out = np.pi * rng.random(n_out)
    t_in = np.pi * rng.random(n_in)
    outer = np.c_[np.cos(t_out), np.sin(t_out)]
    inner = np.c_[1.0 - np.cos(t_in), 1.0 - np.sin(t_in) - 0.5]
    x = np.concatenate([outer, inner]) + noise * rng.standard_normal((n, 2))
    x = x[rng.permutation(n)]
    # one scale for both axes: the box [-1.4, 2.4] x [-1.4, 1.9] (centred moons) -> unit square
    centre = np.array([0.5, 0.25])
    return (x - centre) / 3.8 + 0.5


def run(cmd: list[str], ranks: int) -> float:
    """Run ``beckmann CMD``; its wall seconds."""
    full = [str(BIN / "beckmann"), *cmd]
    if ranks > 1:
        full = [str(BIN / "mpirun"), "-n", str(ranks), *full]
    tic = time.perf_counter()
    subprocess.run(full, check=True, stdout=subprocess.DEVNULL, timeout=3600)
    return time.perf_counter() - tic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="working folder")
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--heldout", type=int, default=5000)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--n", type=int, default=20000, help="transported samples")
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--floor", type=float, default=0.02, help="target.floor of the solve")
    ap.add_argument("--set", action="append", default=[], help="extra solve --set options")
    ap.add_argument("--sample-arg", action="append", default=[], help="extra sample options")
    ap.add_argument("--fit-arg", action="append", default=[], help="extra fit options")
    ap.add_argument(
        "--fit",
        action="store_true",
        help="also `beckmann fit RUN --field velocity --time-input` with the default network and "
        "sample with it (--model): its held-out relative L2 error, time and MMD² ratio",
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    train = two_moons(args.train, args.noise, rng)
    held = two_moons(args.heldout, args.noise, rng)
    assert train.min() > 0 and train.max() < 1, "points outside the unit square"
    np.save(out / "train.npy", train)
    np.save(out / "heldout.npy", held)
    # a training subset of the held-out size: the "two training subsets" floor
    np.save(out / "train_sub.npy", train[: args.heldout])
    # target.floor: the one setting of the task (the default 0 is refused: a KDE of the moons
    # vanishes away from them, below min_density); every other option at its default
    sets = ["target.kind=samples", f"target.path={(out / 'train.npy').resolve()}",
            f"target.floor={args.floor!r}", *args.set]  # fmt: skip
    solve = ["solve", "--out", str(out / "run"), "--overwrite", "-q"]
    for s in sets:
        solve += ["--set", s]
    run(solve, args.ranks)
    result: dict[str, object] = {}
    for name in ("heldout", "train_sub"):
        rep = out / f"sample_{name}.json"
        samples = out / f"samples_{name}.npy"
        samples.unlink(missing_ok=True)  # sample refuses to replace a file
        run(
            ["sample", str(out / "run"), "--n", str(args.n), "--seed", "1",
             "--out", str(samples), "--json-out", str(rep),
             "--reference", str(out / f"{name}.npy"), *args.sample_arg],
            args.ranks,
        )  # fmt: skip
        r = json.loads(rep.read_text())
        result[name] = {
            "mmd2": r["reference"]["mmd2"]["samples_vs_data"],
            "floor": r["reference"]["mmd2"]["data_vs_data"],
            "ratio": r["reference"]["mmd2"]["ratio_to_floor"],
            "mmd_bandwidth": r["reference"]["mmd2"]["bandwidth"],
            "tv": r["reference"]["tv_histogram"],
            "coverage": r["reference"]["coverage"],
        }
        result["method"] = r["method"]
        result["steps"] = r["steps"]
        result["projected_samples"] = r["projected_samples"]
        result["max_speed"] = r.get("path_energy", {}).get("max_speed")
    if args.fit:
        model = out / "vnet"
        wall = run(["fit", str(out / "run"), "--field", "velocity", "--time-input", "--out",
                    str(model), "--overwrite", "--json-out", str(out / "fit.json"),
                    *args.fit_arg], 1)  # fmt: skip
        fit = json.loads((out / "fit.json").read_text())
        rep = out / "sample_model.json"
        run(["sample", str(out / "run"), "--n", str(args.n), "--seed", "1", "--model", str(model),
             "--out", str(out / "samples_model.npy"), "--overwrite", "--json-out", str(rep),
             "--reference", str(out / "heldout.npy"), *args.sample_arg], args.ranks)  # fmt: skip
        r = json.loads(rep.read_text())
        result["fit"] = {
            "l2_error": fit["l2_error"], "test_measure": fit["test_measure"],
            "velocity_form": fit["velocity_form"],
            "wall_seconds": round(wall, 2), "train_seconds": fit["train_seconds"],
            "width": fit["width"], "depth": fit["depth"], "steps": fit["steps"],
            "mmd2_heldout": r["reference"]["mmd2"]["samples_vs_data"],
            "ratio": r["reference"]["mmd2"]["ratio_to_floor"],
        }  # fmt: skip
    summary = json.loads((out / "run" / "summary.json").read_text())
    result["target_density"] = summary.get("densities", {}).get("target")
    # the figure: held-out MMD² over the floor between two training subsets
    ho, tr = result["heldout"], result["train_sub"]
    result["ratio_heldout_to_training_floor"] = ho["mmd2"] / tr["floor"]  # type: ignore[index]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
