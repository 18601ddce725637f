"""``beckmann fit``: fit a network to a field of a run or a sweep store.

The flags are generated from :class:`beckmann.requ.FitSettings` (one option table, the defaults
shown by ``--help``); the handler calls :func:`beckmann.requ.fit_field` and prints its report.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

__all__ = ["handler", "register"]

_TYPES = {"int": int, "float": float, "str": str, "int | None": int, "str | None": str}


def register(sub: Any) -> None:
    """Add ``fit`` to the subcommands."""
    from beckmann.requ import FitSettings

    p = sub.add_parser(
        "fit",
        help="fit a ReQu (or other) network to a field of a run or sweep, in values and "
        "derivatives",
        description=(
            "Fit a network to the potential (with its gradient), the flux (with its Jacobian) or "
            "the velocity v_t (with its Jacobian) of a solved run or a sweep store; save it as "
            "MODEL.json + MODEL.npz and print a JSON report of the errors on held-out points "
            "drawn like the training points. JAX runs on the CPU unless --platform or "
            "JAX_PLATFORMS says otherwise."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "source",
        help="run folder (`beckmann solve --out DIR`) or sweep store (`beckmann sweep --out DIR`;"
        " inputs (x, θ), or (x, t, θ) for the velocity)",
    )
    for f in dataclasses.fields(FitSettings):
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"dest": f.name, "default": f.default, "help": f.metadata["help"]}
        if f.type == "bool":
            kw["action"] = "store_true"
        else:
            kw["type"] = _TYPES[str(f.type)]
        p.add_argument(flag, **kw)
    p.add_argument("--out", required=True, help="model path: writes MODEL.json and MODEL.npz")
    p.add_argument("--json-out", help="also write the report here (not a model file)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model at --out")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace, comm: Any) -> int:
    """Run ``beckmann fit``; collective. Prints the JSON report on rank 0."""
    from beckmann.requ import FitSettings, fit_field

    settings = FitSettings(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(FitSettings)}
    )
    # FitSettings.check refuses bad values, fit_field estimates the memory before allocating
    from beckmann.requ.model_io import model_files
    from beckmann.store.files import check_outputs, check_report

    check_outputs(comm, "model", model_files(args.out), overwrite=args.overwrite, what="--out")
    check_report(comm, args.json_out)
    report = fit_field(args.source, args.out, settings, comm, json_out=args.json_out)
    if comm.rank == 0:
        from beckmann.store import dumps_json

        print(dumps_json(report, indent=None), flush=True)
    return 0
