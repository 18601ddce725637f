"""``beckmann paths`` (transitional: registered together with ``sample``)."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """``paths`` is added by :mod:`beckmann.cli.sample` for now."""
