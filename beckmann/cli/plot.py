"""``beckmann plot`` (transitional: still registered by :mod:`beckmann.plot`)."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``plot`` to the subcommands."""
    from beckmann import plot

    plot.register_cli(sub)
