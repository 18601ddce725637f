r"""``run_reduced``: a sweep by the certified reduced basis (``[sweep] method = "reduced"``).

Offline, on one group of all ranks: the engine (mesh, operator, factorisation), ``λ_{1,h}``, the
greedy EIM on the training set (:func:`beckmann.sweep.training.training_set`) with one Neumann
solve per basis function, until the certified relative bound is below ``reduced_tol`` on the
training set (with the margin :data:`GREEDY_MARGIN`) or the basis has ``reduced_max``
functions (``summary["reduced"]["stop"]`` says which). Online: every grid θ gets its
coefficients and its certified bounds (``O(N M)`` each with the default interpolant truth,
blocks of 128 θ, no solve). The store keeps the
basis, the magic points, the per-θ coefficients and bounds (``reduced.h5``) and the layout,
never a field per θ::

    sweep.json        config and grid (format "beckmann-sweep", method "reduced")
    layout/           mesh and dof coordinates (as a full sweep's)
    reduced.h5        xi, psi (layout order), points, B, Z, G, eta_alg; per grid θ:
                      coefficients, error_bound, relative_bound, cost, cost_bound, phi_norm
    summary.json      basis size, stop reason, timings, bounds, continuity from coefficients
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann._dolfinx import MPI
from beckmann._mpi import agree, collective
from beckmann._version import __version__
from beckmann.progress import progress as progress_bar
from beckmann.store.jsonio import dumps_json, jsonable, write_text_atomic
from beckmann.store.writes import write_on_root
from beckmann.sweep.eim import relative_bound
from beckmann.sweep.engine import Engine
from beckmann.sweep.modulus import coefficient_continuity
from beckmann.sweep.offline import build_reduced
from beckmann.sweep.reduced import ReducedModel
from beckmann.sweep.spec import SweepSpec
from beckmann.sweep.store import write_layout
from beckmann.sweep.training import training_set
from beckmann.sweep.writer import STORE_FORMAT, STORE_VERSION

__all__ = ["COARSE_FRACTION", "ENRICH_ROUNDS", "GREEDY_MARGIN", "run_reduced"]

FloatArray = npt.NDArray[np.float64]

#: The greedy stops at this fraction of ``reduced_tol``: its nodal criterion differs from the
#: certified bound (quadrature right-hand sides) by the interpolation error of the residual, a
#: few per cent on resolved meshes; the margin lets the certified bounds of the grid meet
#: ``reduced_tol`` (``summary["reduced"]["certified"]`` counts those that do).
GREEDY_MARGIN = 0.9

#: Greedy runs at most: after a run whose certified bound misses ``reduced_tol`` at some grid θ
#: (off a random training set), those θ join the training set and the greedy runs again, with
#: the margin raised to the power of the round (0.9, 0.81, 0.73 of ``reduced_tol``).
ENRICH_ROUNDS = 3

#: The greedy's first training set has this fraction of ``reduced_train`` θ (a 12 x 12
#: sub-grid for 400); the ``reduced_train`` set (20 x 20) validates it, and if it misses a θ
#: the greedy runs again on that whole set (``summary["reduced"]["retrained"]``). 144
#: training θ gave the basis of 400 for the moving bump at ``reduced_tol`` 1e-1 and 1e-2.
COARSE_FRACTION = 0.36


def _write_meta(folder: Path, cfg: dict[str, Any], spec: SweepSpec, comm: MPI.Comm) -> None:
    def write() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / "sweep.json").exists() or (folder / "layout").exists():
            raise ValueError(
                f"{str(folder)!r} already holds a sweep; a reduced sweep needs a new --out"
            )
        meta = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "beckmann": __version__,
            "method": "reduced",
            "config": cfg,
            "grid": _ROWS,
        }
        # the grid's θ values compactly (json's C encoder; 10^4 θ took 0.2-0.4 s indented)
        grid = json.dumps(jsonable(spec.grid.to_json()), allow_nan=False)
        text = dumps_json(meta).replace(f'"{_ROWS}"', grid, 1)
        write_text_atomic(folder / "sweep.json", text + "\n")

    write_on_root(comm, "sweep.json", write)


def certify_grid(
    model: ReducedModel, grid_values: FloatArray, comm: MPI.Comm, show: bool, tol: float
) -> dict[str, FloatArray]:
    """Coefficients and certified bounds of every grid θ; collective.

    The residual norms are the cheap diagonal bound where that already certifies ``tol``,
    exact elsewhere (:meth:`ReducedModel.certify_many`).
    """
    K = grid_values.shape[0]
    with progress_bar(K, "certify", comm, disable=not show) as bar:
        cert = model.certify_many(grid_values, exact_above=tol, update=bar.update)
    out = {k: cert[k] for k in ("error_bound", "phi_norm", "cost", "cost_bound", "coefficients")}
    out["relative_bound"] = relative_bound(out["error_bound"], out["phi_norm"])
    return out


def run_reduced(
    cfg: dict[str, Any],
    spec: SweepSpec,
    comm: MPI.Comm,
    *,
    out: str | Path,
    resume: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Build the reduced basis of the sweep in ``cfg`` and certify every grid θ; collective.

    Returns:
        The summary written to ``out/summary.json``.

    Raises:
        ValueError: ``resume`` (a reduced store is built in one go), an existing store, a
            target that does not depend on θ or a source that does (on every rank).
        RuntimeError: A failing solver, eigensolver or file (on every rank).
    """
    folder = Path(out)
    agree(comm, "--resume does not apply to a reduced sweep (it is built in one go)"
          if resume else None)
    grid, opts = spec.grid, spec.options
    log = print if (progress and comm.rank == 0) else None
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    _write_meta(folder, cfg, spec, comm)
    eng: Engine | None = None
    # the offline solves share one MUMPS factorisation (one solve per basis function, in
    # sequence: ~20 ms each at 66k P1 dofs against ~0.15 s for GAMG to rtol 1e-10); each
    # solve's algebraic error is bounded and charged to the certificate (eta_alg)
    ecfg = {**cfg, "solver": {**cfg["solver"], "method": "mumps"}}
    with collective(comm):
        eng = Engine(ecfg, grid, comm, block=1, warm_start=False)
    assert eng is not None
    try:
        write_layout(folder, eng, comm)
        timings["setup"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        # the greedy trains on a coarse sub-grid and is validated on the reduced_train set
        # (cheap: certified bounds, no snapshot kept); if it misses one, the greedy runs again
        # on the whole reduced_train set
        valid = training_set(grid, opts["reduced_train"])
        train = training_set(grid, max(1, round(opts["reduced_train"] * COARSE_FRACTION)))
        if train.shape[0] >= valid.shape[0]:
            train, valid = valid, valid[:0]
        n_valid = int(valid.shape[0])  # 0: no validation (the training set is reduced_train's)
        values = np.asarray(grid.values, dtype=np.float64)
        timings["offline"] = timings["online"] = 0.0
        rounds = 0
        retrained = False
        lam1: float | None = None
        while True:  # a grid θ the training set missed joins it, and the greedy runs again
            rounds += 1
            t1 = time.perf_counter()
            model, res = build_reduced(
                eng,
                train,
                grid.names,
                tol=GREEDY_MARGIN**rounds * opts["reduced_tol"],
                max_size=opts["reduced_max"],
                log=(lambda s: print(s, flush=True)) if log else None,
                lam1=lam1,
            )
            lam1 = model.lam1
            if valid.shape[0] and res.stop == "tol":
                vc = model.certify_many(valid, exact_above=opts["reduced_tol"])
                missed_v = ~(relative_bound(vc["error_bound"], vc["phi_norm"])
                             <= opts["reduced_tol"])
                if missed_v.any():  # the coarse set was too coarse: train on the whole set
                    model.destroy()
                    train, valid = valid, valid[:0]
                    rounds -= 1  # the same margin: the set grew, not the target
                    retrained = True
                    timings["offline"] += time.perf_counter() - t1
                    continue
            timings["offline"] += time.perf_counter() - t1
            t2 = time.perf_counter()
            cert = certify_grid(model, values, comm, progress, opts["reduced_tol"])
            timings["online"] += time.perf_counter() - t2
            missed = np.flatnonzero(~(cert["relative_bound"] <= opts["reduced_tol"]))
            if (missed.size == 0 or res.stop != "tol" or rounds >= ENRICH_ROUNDS
                    or train.shape[0] == len(grid)):
                break
            model.destroy()
            train = np.vstack([train, values[missed]])
        t3 = time.perf_counter()
        tol = opts["reduced_tol"]
        info = {
            "size": model.size,
            "stop": res.stop,
            "tol": tol,
            "max": opts["reduced_max"],
            "training": int(train.shape[0]),
            "rounds": rounds,
            "validation": n_valid,
            "retrained": retrained,
            "history": [float(h) for h in res.history],
            "lambda1": model.lam1,
            "threads": model.threads,
            "certified": int(np.count_nonzero(cert["relative_bound"] <= tol)),
            "uncertified": [int(i) for i in np.flatnonzero(cert["relative_bound"] > tol)[:20]],
            "max_error_bound": float(cert["error_bound"].max(initial=0.0)),
            "max_relative_bound": float(cert["relative_bound"].max(initial=0.0)),
            "max_cost_bound": float(cert["cost_bound"].max(initial=0.0)),
        }
        model.save(folder, cert, {"info": json.dumps(info)})
        model.destroy()
        timings["write"] = time.perf_counter() - t3
    finally:
        eng.destroy()
    t4 = time.perf_counter()
    report = coefficient_continuity(
        np.asarray(grid.values, dtype=np.float64), cert["coefficients"], model.G
    ) if opts["continuity"] else {}
    timings["continuity"] = time.perf_counter() - t4
    timings = {k: float(comm.allreduce(v, op=MPI.MAX)) for k, v in timings.items()}
    rows = _rows_text(grid.names, np.asarray(grid.values, dtype=np.float64), cert)
    summary = {
        "version": __version__,
        "method": "reduced",
        "ranks": comm.size,
        "groups": 1,
        "thetas": len(grid),
        "solved": model.size,
        "reused": 0,
        "timings": timings,
        "seconds_per_theta": (timings["online"] + timings["write"]) / max(len(grid), 1),
        "reduced": info,
        "rows": _ROWS,
        "continuity": report,
    }
    # the 10^4 rows of a large grid compactly, one per line (json's C encoder: the indented
    # encoder took 0.6-1.9 s for them); the rest indented as every summary
    text = dumps_json(summary).replace(f'"{_ROWS}"', rows, 1) + "\n"
    path = folder / "summary.json"
    write_on_root(comm, path.name, lambda: write_text_atomic(path, text))
    return {**summary, "rows": json.loads(rows)}


#: Placeholder of a large list in a JSON text (the summary's rows, sweep.json's grid), replaced
#: by its compact text.
_ROWS = "@@beckmann-reduced-rows@@"

_ROW_KEYS = ("cost", "cost_bound", "error_bound", "relative_bound", "phi_norm")


def _rows_text(names: list[str], values: FloatArray, cert: dict[str, FloatArray]) -> str:
    """The summary rows (index, θ and the certified figures per grid θ) as strict JSON text."""
    cols = []
    for k in _ROW_KEYS:
        a = np.asarray(cert[k], dtype=np.float64)
        col = a.tolist()
        if not np.isfinite(a).all():  # inf (no relative bound) and NaN as null, as jsonable
            col = [v if math.isfinite(v) else None for v in col]
        cols.append(col)
    lines = [
        json.dumps({"index": i, "theta": dict(zip(names, th, strict=True)),
                    **dict(zip(_ROW_KEYS, vals, strict=True))}, allow_nan=False)
        for i, (th, *vals) in enumerate(zip(values.tolist(), *cols, strict=True))
    ]
    return "[\n    " + ",\n    ".join(lines) + "\n  ]" if lines else "[]"
