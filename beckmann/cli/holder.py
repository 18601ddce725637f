"""``beckmann holder DIR``: Hölder estimates of a field of a stored run (JSON on rank 0)."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, Literal

from beckmann._mpi import on_root
from beckmann.holder.fe import FIELDS, solution_norms
from beckmann.holder.pointcloud import check_alpha

__all__ = ["add_window_arguments", "plot_path", "register", "run_fields"]


def parse_alpha(text: str) -> float | Literal["auto"]:
    """``--alpha``: a number in ``[0, 1]`` or ``auto``."""
    if text == "auto":
        return "auto"
    try:
        a = float(text)
    except ValueError as err:
        raise ValueError(f"--alpha must be a number in [0, 1] or 'auto', got {text!r}") from err
    return check_alpha(a)


HELP = """\
Estimate sup norms of D^j u (j <= k), the seminorm [D^k u]_alpha, the C^{k,alpha} norm, the
modulus of continuity omega(delta) and the headline Hoelder exponent of a field of a run folder.
Prints strict JSON (rank 0).

Window: delta_min = 3h (6h for a field constant in each cell; h the largest cell
diameter), delta_max = 8 delta_min (capped at a quarter of the bounding-box diagonal): the
smallest scales the discrete field resolves, a few octaves wide so that saturation of omega
cannot drive the estimate. Pair distances are compared
with the edges to a relative 1e-9, so the result does not depend on the number of ranks.

Headline exponent ("estimator": "oscillation"): the log-log slope of the mean oscillation
(Campanato: the rms residual of the best affine fit in cubes of side s, an integral mean over
cell quadrature points), clipped to 1. It
removes the smooth part's linear trend and dilutes the cells where a cusp is smoothed, which
bias the slope of omega. "exponent_oscillation" is the unclipped index (1 + b for C^{1,b}).
The band is the range of octave-local slopes. The JSON also has the slopes of omega
("exponent_plain", "exponent_increment"). "verdict": holder, constant, unbounded (the sup
grows toward its peak like rho^-b), or "exponent <= 0 at this resolution".

Derivatives: cellwise exact up to the degree, averaged at the nodes; beyond, patch-local
recovery. Default boundary margin: 2h when derivatives of order >= 2 are measured (stated in
the JSON). See docs/holder.md.
"""


#: Highest derivative order measured: the potential is at most cubic per cell.
MAX_K = 3


def max_order(field: str, degree: int) -> int:
    """The largest ``--k`` for ``field`` of a ``P_degree`` solution.

    The cellwise derivatives (``degree − order(field)``) and one patch-recovered order beyond,
    at most :data:`MAX_K`.
    """
    order = {"flux": 1, "velocity": 1, "hessian": 2}.get(field, 0)
    return max(0, min(MAX_K, int(degree) - order + 1))


def run_fields(sol: Any) -> list[str]:
    """The fields ``--field all`` measures: every one of :data:`FIELDS` the run has.

    A mixed run's potential is DG: no ``potential`` or ``hessian``.
    """
    if getattr(sol, "flux_rt", None) is not None:
        return [f for f in FIELDS if f not in ("potential", "hessian")]
    return list(FIELDS)


def plot_path(path: str, field: str) -> str:
    """``h.png`` -> ``h-flux.png``: one picture per field with ``--field all``."""
    from pathlib import Path

    p = Path(path)
    return str(p.with_name(f"{p.stem}-{field}{p.suffix or '.png'}"))


def handler(args: argparse.Namespace, comm: Any) -> int:
    """Estimate, write ``--json-out`` and ``--plot`` on rank 0, print the JSON."""
    from beckmann import store
    from beckmann.store.files import check_report, described_write
    from beckmann.store.jsonio import write_text_atomic

    alpha = parse_alpha(args.alpha)
    if not 0 <= args.k <= MAX_K:
        raise ValueError(
            f"--k must be between 0 and {MAX_K} (derivatives of a P1-P3 solution beyond the "
            f"third carry no information), got {args.k}"
        )
    if args.time != 0.0 and args.field not in ("velocity", "all"):
        raise ValueError("--time applies to --field velocity only (or all)")
    if (args.center is None) != (args.radius is None):
        raise ValueError("--center and --radius go together")
    center = None
    if args.center is not None:
        try:
            center = [float(c) for c in args.center.split(",")]
        except ValueError as err:
            raise ValueError(f"--center must be X,Y[,Z], got {args.center!r}") from err
        if not all(math.isfinite(c) for c in center):
            raise ValueError(f"--center must be finite numbers X,Y[,Z], got {args.center!r}")
    check_report(comm, args.json_out)
    sol = store.load_run(args.dir, comm)
    names = run_fields(sol) if args.field == "all" else [args.field]
    for name in names:
        top = max_order(name, int(sol.degree))
        if args.k > top:
            raise ValueError(
                f"--k {args.k} is more than the space supports: {name} of a P{sol.degree} "
                f"solution has cellwise derivatives up to order {top - 1}, and one "
                f"patch-recovered order beyond; use --k <= {top}"
            )
    results = {}
    for name in names:
        results[name] = solution_norms(
            sol,
            name,
            args.k,
            alpha,
            t=args.time,
            method=args.method,
            margin=args.margin,
            delta_min=args.delta_min,
            delta_max=args.delta_max,
            center=center,
            radius=args.radius,
        )
        results[name]["run"] = str(args.dir)
    result: dict[str, Any] = (
        {"run": str(args.dir), "fields": results} if args.field == "all" else results[names[0]]
    )
    text = json.dumps(result, indent=2, allow_nan=False)

    def write() -> None:
        if args.json_out:
            described_write("--json-out", lambda: write_text_atomic(args.json_out, text + "\n"))
        if args.plot:
            for name, res in results.items():
                from beckmann.plot.holder import plot_modulus

                plot_modulus(res, plot_path(args.plot, name) if len(names) > 1 else args.plot)

    on_root(comm, write)
    if comm.rank == 0:
        print(text)
    return 0


def add_window_arguments(p: argparse.ArgumentParser) -> None:
    """``--method``, ``--delta-min``, ``--delta-max``: shared by ``holder`` and ``study``."""
    p.add_argument("--method", choices=("exact", "fast"), default="fast", help="algorithm")
    p.add_argument(
        "--delta-min",
        type=float,
        default=None,
        help="window start (default 3h; 6h for a field constant in each cell)",
    )
    p.add_argument("--delta-max", type=float, default=None, help="window end (default 8 delta_min)")


def register(sub: Any) -> None:
    """Add ``holder`` to the subcommands."""
    p = sub.add_parser(
        "holder",
        help="Hölder norms, modulus of continuity and exponent of a stored field",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", help="run folder written by `beckmann solve`")
    p.add_argument(
        "--field",
        choices=(*FIELDS, "all"),
        default="potential",
        help="field to measure; 'all': every field of the run in one process, JSON "
        '{"run", "fields": {FIELD: result}}, --plot P writes P-FIELD.png',
    )
    p.add_argument("--time", type=float, default=0.0, help="time t of the velocity")
    p.add_argument("--k", type=int, default=0, help="derivative order k of C^{k,alpha}")
    p.add_argument("--alpha", default="auto", help="Hölder exponent in [0, 1] or 'auto'")
    add_window_arguments(p)
    p.add_argument(
        "--margin",
        type=float,
        default=None,
        help="only nodes this far from the boundary (default 2h for derivative order >= 2)",
    )
    p.add_argument("--center", default=None, metavar="X,Y[,Z]", help="analyse a ball: centre")
    p.add_argument("--radius", type=float, default=None, help="analyse a ball: radius")
    p.add_argument("--json-out", default="", help="also write the JSON to this file")
    p.add_argument("--plot", default="", help="write log ω vs log δ to this PNG")
    p.set_defaults(func=handler)
