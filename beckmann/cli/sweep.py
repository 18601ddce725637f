"""``beckmann sweep`` (transitional: still registered by :mod:`beckmann.sweep`)."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``sweep`` to the subcommands."""
    from beckmann import sweep

    sweep.register_cli(sub)
