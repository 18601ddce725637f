"""C⁰ and C¹ errors of fitted networks against parameter count (docs/math.md §9), and a benchmark.

Reference problem: φ = cos(πx)cos(πy)/(4π²) on [0, 1]² with ∇φ, N uniform random training points
(seed 0) and 2000 held-out points (seed 1). Every network is trained with the same Sobolev loss
(values and gradient, λ = 1), full batch, Adam with warm-up + cosine decay, the same steps.

Rates mode (default): depth-2 networks of increasing width for ReQu, ReLU and tanh; prints the
table of held-out errors, the log–log slopes of error against parameters, and writes a PNG.

    python scripts/requ_rates.py --out requ_rates.png
    python scripts/requ_rates.py --quick            # a smoke run: 2 widths, 200 steps

Benchmark mode: train one ReQu network until the held-out relative C¹ error
(sup|e| + sup|∇e|) / (sup|φ| + sup|∇φ|) is at most 1e-2, checking every 250 steps; reports the
steps, parameters and wall time (including JIT compilation and the checks).

    python scripts/requ_rates.py --benchmark          # ReQu width 32, depth 2, <= 8000 steps
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from beckmann import requ


def reference(n: int, seed: int):
    x = np.random.default_rng(seed).random((n, 2))
    c, s = np.cos(np.pi * x), np.sin(np.pi * x)
    phi = c[:, 0] * c[:, 1] / (4 * np.pi**2)
    grad = np.stack([-s[:, 0] * c[:, 1], -c[:, 0] * s[:, 1]], axis=1) / (4 * np.pi)
    return x, phi, grad


def slope(p, e) -> float:
    return float(np.polyfit(np.log(p), np.log(e), 1)[0])


def rates(args) -> int:
    train = reference(args.points, 0)
    held = reference(2000, 1)
    rows = []
    for act in args.activations:
        for w in args.widths:
            model = requ.fit(
                *train, activation=act, width=w, depth=args.depth, steps=args.steps,
                learning_rate=args.lr, seed=args.seed, bounds=([0, 0], [1, 1]),
                check_every=500, progress=sys.stderr.isatty(),
            )  # fmt: skip
            err = requ.errors(model, *held)
            row = {
                "activation": act, "width": w, "parameters": model.parameters,
                "c0_error": err["c0_error"], "c1_error": err["c1_error"],
                "c0_rel": err["c0_rel"], "c1_rel": err["c1_rel"], "l2_error": err["l2_error"],
                "seconds": model.info["seconds"],
            }  # fmt: skip
            rows.append(row)
            print(
                f"{act:8s} width {w:4d}  P {model.parameters:6d}  C0 {err['c0_error']:.3e}  "
                f"C1 {err['c1_error']:.3e}  C1 rel {err['c1_rel']:.3e}  "
                f"L2 rel {err['l2_error']:.3e}  {model.info['seconds']:.1f} s",
                flush=True,
            )
    print()
    print("| activation | slope C0 vs P | slope C1 vs P | best C1 rel |")
    print("|---|---|---|---|")
    summary = {}
    for act in args.activations:
        r = [row for row in rows if row["activation"] == act]
        P = [row["parameters"] for row in r]
        s0 = slope(P, [row["c0_error"] for row in r]) if len(r) > 1 else float("nan")
        s1 = slope(P, [row["c1_error"] for row in r]) if len(r) > 1 else float("nan")
        best = min(row["c1_rel"] for row in r)
        summary[act] = {"slope_c0": s0, "slope_c1": s1, "best_c1_rel": best}
        print(f"| {act} | {s0:.2f} | {s1:.2f} | {best:.2e} |")
    if "requ" in summary and "relu" in summary:
        ratios = [
            a["c1_error"] / b["c1_error"]
            for a in rows
            if a["activation"] == "relu"
            for b in rows
            if b["activation"] == "requ" and b["width"] == a["width"]
        ]
        print(
            f"\nReLU/ReQu C1 error ratio at equal width: {', '.join(f'{q:.1f}' for q in ratios)} "
            f"({'ReQu better' if min(ratios) > 1 else 'ReQu not better'} at every width)"
            if ratios
            else ""
        )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"rows": rows, "summary": summary, "args": vars(args)}, f, indent=2)
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
        for act in args.activations:
            r = [row for row in rows if row["activation"] == act]
            P = [row["parameters"] for row in r]
            for ax, key in zip(axes, ("c0_error", "c1_error"), strict=True):
                ax.loglog(P, [row[key] for row in r], "o-", label=act)
        for ax, title in zip(axes, ("C⁰ error (held-out)", "C¹ error (held-out)"), strict=True):
            ax.set_xlabel("parameters P")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.suptitle(f"φ = cos(πx)cos(πy)/(4π²), depth {args.depth}, {args.steps} Adam steps")
        fig.tight_layout()
        fig.savefig(args.out, dpi=120)
        print(f"wrote {args.out}")
    return 0


def benchmark(args) -> int:
    train = reference(args.points, 0)
    held = reference(2000, 1)
    t0 = time.perf_counter()
    model = requ.fit(
        *train, activation=args.activations[0], width=args.widths[0], depth=args.depth,
        steps=args.steps, learning_rate=args.lr, seed=args.seed, bounds=([0, 0], [1, 1]),
        validation=held, target_c1_rel=args.target, check_every=250,
        progress=sys.stderr.isatty(),
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    err = model.info["validation"]
    report = {
        "activation": args.activations[0],
        "width": args.widths[0],
        "depth": args.depth,
        "parameters": model.parameters,
        "steps": model.info["steps"],
        "seconds": seconds,
        "reached": err["c1_rel"] <= args.target,
        "c1_rel": err["c1_rel"],
        "c0_rel": err["c0_rel"],
        "l2_error": err["l2_error"],
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    return 0 if report["reached"] else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", action="store_true", help="time to reach --target C1 rel")
    p.add_argument("--activations", nargs="+", default=None)
    p.add_argument("--widths", type=int, nargs="+", default=None)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=1e-2)
    p.add_argument("--quick", action="store_true", help="2 widths, 200 steps (smoke test)")
    p.add_argument("--out", default="requ_rates.png", help="PNG plot ('' for none)")
    p.add_argument("--json-out", default="")
    args = p.parse_args()
    if args.benchmark:
        args.activations = args.activations or ["requ"]
        args.widths = args.widths or [32]
        args.steps = args.steps or 8000
        return benchmark(args)
    args.activations = args.activations or ["requ", "relu", "tanh"]
    args.widths = args.widths or ([4, 8] if args.quick else [4, 8, 16, 32, 64])
    args.steps = args.steps or (200 if args.quick else 4000)
    return rates(args)


if __name__ == "__main__":
    raise SystemExit(main())
