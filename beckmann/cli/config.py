"""``beckmann config``: print the config reference."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``config`` to the subcommands."""
    p = sub.add_parser("config", help="print the config reference (Markdown)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace, comm: Any) -> int:
    from beckmann import config

    if comm.rank == 0:
        print(config.markdown_reference())
    return 0
