"""Pieces shared by several commands' argument parsers."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["add_set_option", "read_points"]


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """The ``--set SECTION.KEY=VALUE`` option of every command that reads a config."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable); the value is read as TOML",
    )


def read_points(path: str | Path) -> np.ndarray:
    """Read an ``N x d`` array of points from ``.npy`` or ``.csv`` (comma or whitespace)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"points file {str(p)!r} does not exist")
    try:
        if p.suffix == ".npy":
            pts = np.load(p, allow_pickle=False)
        elif p.suffix in (".csv", ".txt"):
            text = p.read_text()
            delim = "," if "," in text else None
            pts = np.loadtxt(p, delimiter=delim, ndmin=2, comments="#")
        else:
            raise ValueError(f"points file {str(p)!r} must be .npy or .csv")
    except (OSError, ValueError) as err:
        if "must be .npy" in str(err):
            raise
        raise ValueError(f"cannot read points from {str(p)!r}: {err}") from err
    pts = np.asarray(pts, dtype=np.float64)
    if pts.ndim == 1:
        pts = pts.reshape(1, -1)
    if pts.ndim != 2:
        raise ValueError(f"points in {str(p)!r} must be an N x d array, got shape {pts.shape}")
    return pts
