"""``beckmann holder`` (transitional: still registered by :mod:`beckmann.holder`)."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``holder`` to the subcommands."""
    from beckmann import holder

    holder.register_cli(sub)
