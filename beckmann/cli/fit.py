"""``beckmann fit`` (transitional: still registered by :mod:`beckmann.requ`)."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``fit`` to the subcommands."""
    from beckmann import requ

    requ.register_cli(sub)
