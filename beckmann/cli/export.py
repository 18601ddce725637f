"""``beckmann export``: a fitted network as a self-contained file with a NumPy loader."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["handler", "register"]


def register(sub: Any) -> None:
    """Add ``export`` to the subcommands."""
    from beckmann.requ.export import EXPORT_FORMATS

    p = sub.add_parser(
        "export",
        help="export a fitted network (beckmann fit) as one .npz and a NumPy/JAX loader",
        description=(
            "Write OUT.npz (weights, normalisation, activation, input names; no pickle) and "
            "OUT.py, a loader needing only NumPy: `load_export('OUT.npz')` returns v(x, t, θ) "
            "as a plain function (pass xp=jax.numpy for JAX)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", help="model path of `beckmann fit --out MODEL` (MODEL.json + .npz)")
    p.add_argument("--to", default="numpy", choices=EXPORT_FORMATS, help="export format")
    p.add_argument("--out", required=True, help="output path: writes OUT.npz and OUT.py")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace, comm: Any) -> int:
    """Run ``beckmann export``; the files are written on rank 0."""
    from beckmann._mpi import on_root
    from beckmann.requ import load, model_files
    from beckmann.requ.export import export
    from beckmann.store import dumps_json

    def run() -> dict[str, str]:
        out = Path(args.out)
        npz = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")
        if npz.resolve() in {f.resolve() for f in model_files(args.model)}:
            raise ValueError(f"--out {args.out!r} would overwrite the model file {str(npz)!r}")
        model = load(args.model)
        npz, loader = export(model, out, args.to)
        return {"model": str(args.model), "to": args.to, "npz": str(npz), "loader": str(loader)}

    report = on_root(comm, run)
    if comm.rank == 0:
        print(dumps_json(report, indent=None), flush=True)
    return 0
