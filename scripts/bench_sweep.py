"""Benchmarks of parametric sweeps, timed as whole processes (what a user meets).

Two studies, each interleaving its contestants (a, b, a, b, ...) so that load from other users of
the machine hits both alike; medians over ``--repeats`` are quoted, with every sample.

``full`` (issue 11, target 1): the default ``beckmann sweep`` of K targets against a naive loop
that runs ``beckmann solve`` once per θ (mesh, spaces, densities, assembly, preconditioner,
solve and the run's output files, all rebuilt per θ). Per θ: the sweep's whole-process wall time
(setup, solves, store writes and the default continuity report) over K, against the median
whole-process time of one naive solve. Defaults: K = 64, unit square n = 512 (263k P1 dofs),
target ``(1 + theta)*cos(pi*x)*cos(pi*y) + theta*cos(2*pi*x) + 3``, θ in linspace(0, 1, 64).

``reduced`` (issue 11, targets 2-3): a full sweep over a 10 x 10 grid of the moving bump
``0.2 + exp(-((x - a)**2 + (y - b)**2) / 0.02)``, (a, b) in [0.3, 0.7]², against the reduced
sweep (``method = "reduced"``) over a ``--grid`` x ``--grid`` grid, every grid θ certified, at
n = 256 P1. Then, in this process, on ``--random`` θ drawn in the box: the certified bound
against the true error of a full solve (the sweep engine's own full path), the effectivity
(bound / true error) and the true relative error against ``reduced_tol``. ``--tols`` adds the
basis size per ``reduced_tol`` (a whole reduced sweep per tolerance, as ``beckmann sweep`` runs it).
It also prints the *floor* of any certificate that looks at the target at every node (the
nodal certificate of a target that does not separate; the moving bump separates, and its
separated certificate reads 257 + 257 factor values per θ, so the floor does not bound it;
docs/reduced.md): start-up (a process that only imports what ``beckmann sweep`` imports) and
the full sweep's setup phase, which the reduced sweep pays as well, plus per grid θ one
``np.exp`` over the N nodes (the target's only transcendental, nothing else of it) and one row
of the residual GEMM (N x M, M the basis size), timed here on one thread. ``floor / full``
above 1 means no such certificate reaches the target on this machine.

Usage::

    python scripts/bench_sweep.py full                      # 64 θ, n = 512
    python scripts/bench_sweep.py full --k 16 --n 128       # quick
    python scripts/bench_sweep.py full --expr "0.2 + exp(-((x - theta)**2 + (y - 0.5)**2) / 0.05)"
                                                            # a target not polynomial in θ
    python scripts/bench_sweep.py reduced                   # 100 x 100 reduced vs 10 x 10 full
    python scripts/bench_sweep.py reduced --n 64 --grid 30 --repeats 1 --tols 1e-1,1e-2
    python scripts/bench_sweep.py reduced --repeats 0 --tols 1e-1,1e-2,1e-3,1e-4   # table only
    python scripts/bench_sweep.py reduced --default-threads  # as a user runs it: no OMP_NUM_THREADS

Every contestant runs with ``OMP_NUM_THREADS=1`` unless ``--default-threads`` (then the
environment is the caller's, as for a user who sets nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# one BLAS/OpenMP thread per process, for every contestant: on a shared machine threaded BLAS
# spins against the other users (a reduced certificate took 0.17-0.33 s per θ with the default
# threads under load, 0.039 s with one)
_CALLER_THREADS = os.environ.get("OMP_NUM_THREADS")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = str(ROOT / ".venv" / "bin" / "beckmann")
FULL_EXPR = "(1 + theta)*cos(pi*x)*cos(pi*y) + theta*cos(2*pi*x) + 3"
BUMP = "0.2 + exp(-((x - a)**2 + (y - b)**2) / 0.02)"


def run(cmd: list[str], timeout: float) -> float:
    """Wall seconds of a whole process (it must succeed)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=timeout, stdout=subprocess.DEVNULL, env=os.environ)
    return time.perf_counter() - t0


def full_config(n: int, k: int, expr: str = FULL_EXPR) -> str:
    return f"""[mesh]
kind = "unit_square"
n = {n}
[solver]
degree = 1
[target]
kind = "expression"
expr = "{expr}"
[sweep.parameters]
theta = {{ linspace = [0, 1, {k}] }}
"""


def bump_config(n: int, k: int, method: str, tol: float, max_size: int, train: int = 0) -> str:
    extra = (
        f'method = "reduced"\nreduced_tol = {tol}\nreduced_max = {max_size}\n'
        + (f"reduced_train = {train}\n" if train else "")
        if method == "reduced"
        else ""
    )
    return f"""[mesh]
kind = "unit_square"
n = {n}
[solver]
degree = 1
[target]
kind = "expression"
expr = "{BUMP}"
[sweep.parameters]
a = {{ linspace = [0.3, 0.7, {k}] }}
b = {{ linspace = [0.3, 0.7, {k}] }}
[sweep]
{extra}"""


def study_full(args: argparse.Namespace, tmp: Path) -> dict:
    cfg = tmp / "full.toml"
    cfg.write_text(full_config(args.n, args.k, args.expr))
    thetas = np.linspace(0.0, 1.0, args.naive_k)
    naive, sweeps, phases = [], [], []
    chunks = np.array_split(thetas, args.repeats)
    for r in range(args.repeats):
        for th in chunks[r]:
            out = tmp / "naive"
            naive.append(run([BIN, "solve", str(cfg), "--set", f"target.params={{theta = {th}}}",
                              "--out", str(out), "--overwrite", "-q"], args.timeout))
            shutil.rmtree(out, ignore_errors=True)
        out = tmp / "sweep"
        shutil.rmtree(out, ignore_errors=True)
        sweeps.append(run([BIN, "sweep", str(cfg), "--out", str(out), "-q"], args.timeout))
        summary = json.loads((out / "summary.json").read_text())
        phases.append({**summary["timings"], "method": summary.get("method"),
                       "affine": summary.get("affine")})  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)
    nv = statistics.median(naive)
    sw = statistics.median(sweeps) / args.k
    return {
        "study": "full",
        "ndofs": (args.n + 1) ** 2,
        "K": args.k,
        "target": args.expr,
        "naive_s_per_theta_median": nv,
        "naive_samples_s": naive,
        "sweep_wall_s_samples": sweeps,
        "sweep_s_per_theta_median": sw,
        "sweep_phases_s": phases,
        "continuity_over_solve": [p["continuity"] / p["solve"] for p in phases],
        "ratio_naive_over_sweep_per_theta": nv / sw,
    }


def random_check(store_dir: Path, n_random: int, tol: float) -> dict:
    """Bound vs true error at random θ in the box (full solves of the store's truth).

    The truth is the store's ``reduced_rhs``: ``"quadrature"``, the sweep engine's own full path
    (``beckmann solve``'s right-hand side); ``"interpolant"``, ``A φ = M I_h f / ∫ I_h f − ∫ p0 w``
    with a mass matrix assembled here by UFL. With the interpolant truth, ``truth_gap`` is
    ``‖∇(φ_interpolant − φ_quadrature)‖ / ‖∇φ_quadrature‖``: how far the two truths lie apart.
    """
    from scipy.spatial import cKDTree

    from beckmann import sweep
    from beckmann._dolfinx import MPI, dolfinx, fem, ufl
    from beckmann.density.discrete import DiscreteDensity
    from beckmann.sweep.engine import Engine
    from beckmann.sweep.reduced import ReducedModel

    comm = MPI.COMM_SELF
    store = sweep.SweepStore(store_dir, comm)
    cfg = {**store.config, "solver": {**store.config["solver"], "method": "mumps"}}
    eng = Engine(cfg, store.grid, comm, block=1)
    model, _ = ReducedModel.load(store)
    _, perm = cKDTree(model.V.tabulate_dof_coordinates()).query(eng.x)
    lo, hi = (np.asarray(a) for a in store.grid.box())
    u_, w_ = ufl.TrialFunction(eng.V), ufl.TestFunction(eng.V)
    M = dolfinx.fem.petsc.assemble_matrix(fem.form(u_ * w_ * ufl.dx))
    M.assemble()
    zero = DiscreteDensity(fem.Function(eng.V), fem.Function(eng.points.Q), 1.0, np.nan)
    rng = np.random.default_rng(2026)
    rows = []
    for u in rng.random((n_random, lo.size)):
        th = dict(zip(store.grid.names, map(float, lo + u * (hi - lo)), strict=True))
        d1, d0 = eng.density("target", th, "θ"), eng.density("source", th, "θ")
        (phi_q,), _ = eng.solve_rhs([eng.rhs(d0, d1)])
        gap = None
        phi = phi_q
        if model.rhs == "interpolant":
            b0 = eng.quadrature_rhs.assemble(zero, d0, eng.b).array[: eng.nloc].copy()
            eng.phi.x.array[: eng.nloc] = eng.raw("target", th)
            eng.phi.x.scatter_forward()
            M.mult(eng.phi.x.petsc_vec, eng.Aphi)
            Mf = eng.Aphi.array[: eng.nloc].copy()
            (phi,), _ = eng.solve_rhs([Mf / Mf.sum() - b0])
        d = model.coefficients(th)
        cert = model.certify(th, d)
        e = phi - model.potential(d)[perm]

        def energy(v: np.ndarray) -> float:
            eng.phi.x.array[: eng.nloc] = v
            eng.phi.x.scatter_forward()
            eng.poisson.A.mult(eng.phi.x.petsc_vec, eng.Aphi)
            return float(np.sqrt(v @ eng.Aphi.array[: eng.nloc]))

        err, norm = energy(e), energy(phi)
        if model.rhs == "interpolant":
            gap = energy(phi - phi_q) / energy(phi_q)
        rows.append({"theta": th, "true": err, "bound": cert["error_bound"], "truth_gap": gap,
                     "effectivity": cert["error_bound"] / err, "true_relative": err / norm,
                     "cost_error": abs(0.5 * norm**2 - cert["cost"]),
                     "cost_bound": cert["cost_bound"]})
    M.destroy()
    model.destroy()
    eng.destroy()
    eff = [r["effectivity"] for r in rows]
    gaps = [r["truth_gap"] for r in rows if r["truth_gap"] is not None]
    return {
        "n": n_random,
        "truth": model.rhs,
        "truth_gap_median": statistics.median(gaps) if gaps else None,
        "truth_gap_max": max(gaps) if gaps else None,
        "bound_ge_true_every_time": all(r["bound"] >= r["true"] for r in rows),
        "cost_bound_ge_cost_error_every_time": all(r["cost_bound"] >= r["cost_error"]
                                                   for r in rows),
        "effectivity_min": min(eff),
        "effectivity_median": statistics.median(eff),
        "effectivity_max": max(eff),
        "true_relative_max": max(r["true_relative"] for r in rows),
        "reduced_tol": tol,
        "rows": rows,
    }


def basis_sizes(args: argparse.Namespace, tmp: Path, tols: list[float]) -> list[dict]:
    """Basis size per reduced_tol for the moving bump, as ``beckmann sweep`` builds it.

    One whole reduced sweep of the ``--grid`` x ``--grid`` grid per tolerance (its training and
    validation sets, any retraining and enrichment rounds), read from its summary.
    """
    out = []
    for tol in tols:
        cfg = tmp / f"tol{tol:g}.toml"
        cfg.write_text(bump_config(args.n, args.grid, "reduced", tol, args.max_size, args.train))
        folder = tmp / f"tol{tol:g}"
        shutil.rmtree(folder, ignore_errors=True)
        wall = run([BIN, "sweep", str(cfg), "--out", str(folder), "-q"], args.timeout)
        red = json.loads((folder / "summary.json").read_text())["reduced"]
        out.append({"reduced_tol": tol, "wall_s": wall,
                    **{k: red.get(k) for k in ("size", "stop", "training", "validation",
                                               "retrained", "rounds", "certified",
                                               "max_relative_bound")}})
        shutil.rmtree(folder, ignore_errors=True)
    return out


def certificate_floor(fulls: list[float], full_timings: list[dict], K: int, N: int,
                      M: int) -> dict[str, float]:
    """Lower bound on a reduced sweep whose certificate evaluates the target at every node.

    Start-up (a process importing DOLFINx and the sweep: median of 3) and the full sweep's setup
    phase (mesh, spaces, operator), plus ``K`` times the cheapest per-θ work of such a
    certificate: one ``np.exp`` over ``N`` values and one ``(1, M) x (M, N)`` row of the residual
    product, both on this thread (``OMP_NUM_THREADS=1``). Everything else a reduced sweep does
    (the target's other operations, the weighted sums, the basis solves, the greedy, the
    writes) is left out.
    """
    from scipy.linalg.blas import dgemm

    imports = "import beckmann._dolfinx, beckmann.sweep.reduced_run, beckmann.cli"
    start = statistics.median(run([sys.executable, "-c", imports], 600.0) for _ in range(3))
    fixed = start + statistics.median(t["setup"] for t in full_timings)
    rng = np.random.default_rng(0)
    arg = -rng.random(N) * 30.0  # the exponent's range over the box
    out, xi = np.empty(N), rng.random((N, M))
    B = 128
    D, F = rng.random((B, M)), rng.random((B, N))

    def median_time(f, reps: int) -> float:
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    t_exp = median_time(lambda: np.exp(arg, out=out), 200)
    t_gemm = median_time(lambda: dgemm(-1.0, xi.T, D.T, beta=1.0, c=F.T, trans_a=1,
                                       overwrite_c=1), 20) / B
    floor = fixed + K * (t_exp + t_gemm)
    return {"startup_s": start, "startup_and_setup_s": fixed, "exp_per_theta_ms": 1e3 * t_exp,
            "gemm_row_per_theta_ms": 1e3 * t_gemm, "floor_s": floor,
            "floor_over_full": floor / statistics.median(fulls)}


def study_reduced(args: argparse.Namespace, tmp: Path) -> dict:
    full_cfg, red_cfg = tmp / "full10.toml", tmp / "reduced.toml"
    full_cfg.write_text(bump_config(args.n, 10, "full", args.tol, args.max_size))
    red_cfg.write_text(bump_config(args.n, args.grid, "reduced", args.tol, args.max_size,
                                   args.train))
    fulls, reds, red_summary, full_summaries = [], [], {}, []
    for _ in range(args.repeats):
        for cfg, times in ((full_cfg, fulls), (red_cfg, reds)):
            out = tmp / cfg.stem
            shutil.rmtree(out, ignore_errors=True)
            times.append(run([BIN, "sweep", str(cfg), "--out", str(out), "-q"], args.timeout))
            if cfg is full_cfg:
                full_summaries.append(json.loads((out / "summary.json").read_text())["timings"])
            if cfg is red_cfg:
                s = json.loads((out / "summary.json").read_text())
                red_summary = {"timings": s["timings"], **{k: v for k, v in s["reduced"].items()
                                                           if k != "history"}}
    res: dict = {
        "study": "reduced",
        "ndofs": (args.n + 1) ** 2,
        "full_thetas": 100,
        "reduced_thetas": args.grid**2,
    }
    if args.repeats:  # --repeats 0: only --tols (and --random needs a timed store)
        res.update({
            "full_wall_s_samples": fulls,
            "reduced_wall_s_samples": reds,
            "full_wall_s_median": statistics.median(fulls),
            "reduced_wall_s_median": statistics.median(reds),
            "ratio_reduced_over_full_wall": statistics.median(reds) / statistics.median(fulls),
            "reduced_summary": red_summary,
        })
        res["floor"] = certificate_floor(fulls, full_summaries, args.grid**2, (args.n + 1) ** 2,
                                         int(red_summary["size"]))
    if args.random and args.repeats:
        res["random"] = random_check(tmp / red_cfg.stem, args.random, args.tol)
    if args.tols:
        res["basis_size_vs_tol"] = basis_sizes(args, tmp, [float(t) for t in args.tols.split(",")])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", choices=("full", "reduced"))
    ap.add_argument("--n", type=int, default=None, help="cells per side (full 512, reduced 256)")
    ap.add_argument("--k", type=int, default=64, help="full: θ in the sweep")
    ap.add_argument("--naive-k", type=int, default=3, help="full: θ timed in the naive loop")
    ap.add_argument("--expr", default=FULL_EXPR, help="full: the target (parameter theta)")
    ap.add_argument("--grid", type=int, default=100, help="reduced: grid points per axis")
    ap.add_argument("--tol", type=float, default=1e-2, help="reduced: reduced_tol")
    ap.add_argument("--max-size", type=int, default=96, help="reduced: reduced_max")
    ap.add_argument("--train", type=int, default=0, help="reduced: reduced_train (0: default)")
    ap.add_argument("--random", type=int, default=50, help="reduced: random θ checked")
    ap.add_argument("--tols", default="", help="reduced: comma-separated tolerances")
    ap.add_argument("--default-threads", action="store_true",
                    help="run every contestant without OMP_NUM_THREADS=1 (a user's default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=7200.0)
    ap.add_argument("--json-out", help="also write the results here")
    args = ap.parse_args()
    if args.n is None:
        args.n = 512 if args.study == "full" else 256
    if args.default_threads:  # the contestants (subprocesses) get the caller's environment
        if _CALLER_THREADS is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = _CALLER_THREADS
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        res = study_full(args, tmp) if args.study == "full" else study_reduced(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["command"] = " ".join(sys.argv)
    res["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    text = json.dumps(res, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
