"""Pieces shared by several commands' argument parsers."""

from __future__ import annotations

import argparse

from beckmann.store.points import read_points

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
