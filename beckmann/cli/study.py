"""``beckmann study CONFIG --levels N``: a regularity study over mesh levels (table + JSON)."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from beckmann._mpi import on_root
from beckmann.cli.common import add_set_option
from beckmann.cli.holder import add_window_arguments
from beckmann.holder.fe import FIELDS
from beckmann.holder.studies import DEFAULT_FIELDS, parse_expectation, study

__all__ = ["format_table", "register"]

HELP = """\
Solve CONFIG on N mesh levels (doubling mesh.n of a unit square/cube, halving mesh.h of a disk
or L-shape; --refine auto picks the one the mesh uses), measure
each field on ONE fixed window (the coarsest level's [3h, 24h], [6h, 48h] for a field constant
in each cell, unless --delta-min/--delta-max),
and report per level the headline exponent with its band, the seminorm at a fixed alpha, the
sup norm and the verdict, and the observed rates across levels (q ~ h^-rate). A field whose sup
norm grows at a rate >= 0.1 is reported "unbounded". Prints a table; writes DIR/study.json and,
with matplotlib, DIR/study.png. With --expect FIELD=EXPONENT+-TOL (or ±) the command exits 1
when the finest level's exponent is outside the tolerance. See docs/holder.md.
"""


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def format_table(res: dict[str, Any]) -> str:
    """The study as a plain-text table (one row per level and field), then the summary."""
    lines = [
        f"window [{res['window']['delta_min']:.4g}, {res['window']['delta_max']:.4g}]",
        f"{'level':>5} {'h':>8} {'ndofs':>8} {'field':>18} {'exponent':>8} {'band':>15} "
        f"{'est.':>9} {'alpha':>5} {'seminorm':>10} {'sup':>10}  verdict",
    ]
    for lv in res["levels"]:
        for f, r in lv["fields"].items():
            e = r["exponent"]
            band = f"[{_fmt(e['low'])}, {_fmt(e['high'])}]"
            lines.append(
                f"{lv['level']:>5} {lv['h']:>8.4f} {lv['ndofs']:>8} {f:>18} "
                f"{_fmt(e['estimate']):>8} {band:>15} {r['estimator']:>9} {r['alpha']:>5.2f} "
                f"{r['seminorm']:>10.4g} {r['sup']:>10.4g}  {r['verdict']}"
            )
    lines.append("")
    for f, s in res["fields"].items():
        rates = ", ".join(_fmt(x) for x in s["sup_rates"])
        semi = ", ".join(_fmt(x) for x in s["seminorm_rates"])
        lines.append(
            f"{f}: exponent {_fmt(s['exponent']['estimate'])}, sup rates [{rates}], "
            f"seminorm rates [{semi}], verdict {s['verdict']}"
        )
    for c in res["expectations"]:
        mark = "ok" if c["ok"] else "FAILED"
        lines.append(
            f"expect {c['field']} = {c['expected']:g} ± {c['tol']:g}: measured "
            f"{_fmt(c['measured'])}  {mark}"
        )
    return "\n".join(lines)


def check_out(out: Path, comm: Any) -> None:
    """Refuse an ``--out`` that is a file or lies in a beckmann folder, before any solve.

    A study writes ``study.json`` and ``study.png`` into a folder of its own: inside a run
    folder or sweep store they would be foreign files in a folder whose contents its manifest
    describes. Collective: checked on rank 0, raised on every rank.
    """
    from beckmann.store.folder import check_parent_writable, folder_kind

    def check() -> None:
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {str(out)!r} exists and is not a folder")
        full = Path(os.path.abspath(out))
        for folder in (full, *full.parents):
            kind = folder_kind(folder)
            if kind is not None:
                where = "is" if folder == full else f"lies inside {str(folder)!r},"
                raise ValueError(
                    f"--out {str(out)!r} {where} a beckmann {kind} folder; a "
                    "study writes study.json and study.png into a folder of its own"
                )
        check_parent_writable(out / "study.json", "cannot write --out")

    on_root(comm, check)


def handler(args: argparse.Namespace, comm: Any) -> int:
    """Run the study, write DIR/study.json (+ study.png) on rank 0, print the table."""
    check_out(Path(args.out), comm)
    fields: list[str] = []
    for item in args.fields or [",".join(DEFAULT_FIELDS)]:
        fields += [f.strip() for f in item.split(",") if f.strip()]
    if not fields:
        raise ValueError(f"--fields names no field; choose from {', '.join(FIELDS)}")
    expect = [parse_expectation(e) for e in args.expect]
    res = study(
        args.config,
        args.levels,
        refine=args.refine,
        fields=fields,
        expect=expect,
        alpha=args.alpha,
        delta_min=args.delta_min,
        delta_max=args.delta_max,
        sets=args.set,
        method=args.method,
        comm=comm,
    )
    text = json.dumps(res, indent=2, allow_nan=False)
    out = Path(args.out)

    def write() -> bool:
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "study.json").write_text(text + "\n")
        except OSError as err:
            raise RuntimeError(f"cannot write {str(out / 'study.json')!r}: {err}") from err
        from beckmann.plot.holder import plot_study

        plot_study(res, out / "study.png")
        return True

    on_root(comm, write)
    if comm.rank == 0:
        print(format_table(res))
    return 0 if res["ok"] else 1


def register(sub: Any) -> None:
    """Add ``study`` to the subcommands."""
    p = sub.add_parser(
        "study",
        help="regularity study over mesh levels: exponents, seminorms, sup norms, rates",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", default=None, help="TOML config (default: the defaults)")
    p.add_argument("--levels", type=int, required=True, help="number of mesh levels (>= 2)")
    p.add_argument(
        "--refine",
        choices=("auto", "h", "n"),
        default="auto",
        help="halve mesh.h (disk, lshape) / double mesh.n (unit_square, unit_cube); auto: the "
        "one the mesh kind uses",
    )
    p.add_argument(
        "--fields",
        action="append",
        default=None,
        help=f"comma-separated fields (repeatable); from {', '.join(FIELDS)}; "
        f"default {','.join(DEFAULT_FIELDS)}",
    )
    p.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="FIELD=EXPONENT±TOL",
        help="expected exponent at the finest level (ASCII +- accepted; repeatable)",
    )
    p.add_argument("--alpha", type=float, default=None, help="fixed seminorm exponent")
    add_window_arguments(p)
    p.add_argument("--out", required=True, help="folder for study.json and study.png")
    add_set_option(p)
    p.set_defaults(func=handler)
