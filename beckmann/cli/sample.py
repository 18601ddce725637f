"""``beckmann sample`` (transitional: still registered by :mod:`beckmann.transport`)."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``sample`` to the subcommands."""
    from beckmann import transport

    transport.register_cli(sub)
