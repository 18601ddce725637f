"""Progress display for long work (sweeps, transport, fitting), drawn by ``rich``.

Only rank 0 draws, and only when its stream is a terminal, so logs, pipes, CI and tests stay
clean; ``BECKMANN_NO_PROGRESS=1`` silences it everywhere. Nothing here is collective:
``update`` may be called on every rank (the others only count), so a bar never changes the order
of MPI calls.

Example::

    from beckmann.progress import progress

    with progress(len(cases), "sweep", comm) as bar:
        for case in cases:
            run(case)
            bar.update(postfix=f"theta={case}")
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Progress", "progress"]


class Progress:
    """A progress bar; a counter only, unless enabled.

    Args:
        total: Number of steps expected (``None`` or 0: unknown, a counter is shown).
        desc: Short label printed before the bar.
        enabled: Draw at all. :func:`progress` decides this from the rank and the stream.
        stream: Where to draw (stderr by default).

    Attributes:
        n: Steps done so far (counted on every rank).
    """

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.total = int(total) if total else None
        self.desc = desc
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.n = 0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            class _Console(Console):
                def show_cursor(self, show: bool = True) -> bool:
                    return False  # leave the cursor alone: a killed run must not hide it

            console = _Console(file=self.stream, force_terminal=True, highlight=False)
            columns: list[Any] = [TextColumn("{task.description}")]
            if self.total:
                columns += [BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
            else:
                columns += [TextColumn("{task.completed}")]
            columns += [TimeElapsedColumn(), TextColumn("{task.fields[postfix]}")]
            self._bar = RichProgress(*columns, console=console, refresh_per_second=5)
            self._bar.start()
            self._task = self._bar.add_task(self.desc, total=self.total, postfix="")
        return self

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        """Advance by ``n`` steps; ``postfix`` replaces the short note after the bar."""
        self.n += n
        if self._bar is not None:
            fields = {} if postfix is None else {"postfix": postfix}
            self._bar.update(self._task, advance=n, **fields)

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self._bar is not None:
            self._bar.refresh()
            self._bar.stop()
            self._bar = None

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
        A :class:`Progress`; use it as a context manager and call ``update(n=1, postfix=None)``.
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
