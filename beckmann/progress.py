"""A tiny progress bar for long work (sweeps, transport, fitting).

Only rank 0 draws, and only when its stderr is a terminal, so logs, pipes, CI and tests stay
clean. Nothing here is collective: ``update`` may be called on every rank (the other ranks do
nothing), so a bar never changes the order of MPI calls.

Example::

    from beckmann.progress import progress

    with progress(len(cases), "sweep", comm) as bar:
        for case in cases:
            run(case)
            bar.update()
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Progress", "progress"]


class Progress:
    """A one-line text progress bar; a no-op unless enabled.

    Args:
        total: Number of steps expected (``None`` or 0: unknown, a counter is shown).
        desc: Short label printed before the bar.
        enabled: Draw at all. :func:`progress` decides this from the rank and the stream.
        stream: Where to draw (stderr by default).
        min_interval: Seconds between redraws, so tight loops stay cheap.
    """

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        min_interval: float = 0.1,
    ) -> None:
        self.total = int(total) if total else 0
        self.desc = desc
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        self.n = 0
        self._start = time.monotonic()
        self._last = -1.0e30
        self._postfix = ""

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        """Advance by ``n`` steps; ``postfix`` replaces the short note after the bar."""
        self.n += n
        if postfix is not None:
            self._postfix = postfix
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= self.min_interval or (self.total and self.n >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self._start
        label = f"{self.desc}: " if self.desc else ""
        if self.total:
            frac = min(self.n / self.total, 1.0)
            width = 30
            filled = int(round(frac * width))
            bar = "#" * filled + "-" * (width - filled)
            eta = elapsed * (1.0 / frac - 1.0) if frac > 0 else 0.0
            text = f"{label}[{bar}] {self.n}/{self.total} {elapsed:5.1f}s<{eta:5.1f}s"
        else:
            text = f"{label}{self.n} {elapsed:5.1f}s"
        if self._postfix:
            text += f" {self._postfix}"
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = 100
        self.stream.write("\r" + text[: max(columns - 1, 10)].ljust(max(columns - 1, 10)))
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(
    total: int | None,
    desc: str = "",
    comm: Any = None,
    *,
    stream: TextIO | None = None,
    disable: bool = False,
) -> Progress:
    """A progress bar that draws on rank 0 only, and only when the stream is a terminal.

    Not collective. Set the environment variable ``BECKMANN_NO_PROGRESS=1`` to silence it.

    Args:
        total: Number of steps (``None``: unknown).
        desc: Short label.
        comm: MPI communicator (``None``: treat as rank 0).
        stream: Stream to draw on (stderr by default).
        disable: Force the bar off (e.g. for ``--quiet``).

    Returns:
        A :class:`Progress`; use it as a context manager and call ``update(n)``.
    """
    stream = stream if stream is not None else sys.stderr
    rank = 0 if comm is None else int(comm.rank)
    enabled = (
        not disable
        and rank == 0
        and _is_tty(stream)
        and os.environ.get("BECKMANN_NO_PROGRESS", "") in ("", "0")
    )
    return Progress(total, desc, enabled=enabled, stream=stream)
