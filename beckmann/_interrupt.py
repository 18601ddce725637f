"""Ctrl-C under MPI ends the job: the ranks stop together, or a watchdog ends it.

``mpirun`` forwards SIGINT to every rank, where Python raises ``KeyboardInterrupt`` and the
command's error path (:func:`beckmann.cli._fail`) stops all ranks together. That fails when the
interrupt reaches one rank only in a place it cannot propagate from (a garbage-collector
callback, a ``__del__``: Python prints "Exception ignored" and goes on), or when one rank's
clean-up enters a collective call the others never join: both ranks then wait inside MPI, in C,
where no Python code, thread or signal handler of theirs runs again. Seen in 2 of 8 sweeps on 2
ranks interrupted near the end of their solves.

So, per rank, :func:`watch_interrupts`:

* delivers an interrupt that could not propagate again (``sys.unraisablehook``), so that it
  reaches the command's own code;
* starts a small watchdog *process*. The C-level signal handler writes the signal number to a
  pipe (``signal.set_wakeup_fd``: no GIL, no main thread needed); the watchdog reads it, waits
  :data:`INTERRUPT_DEADLINE` seconds and, if this rank is still running then, prints one line
  and kills it, so the launcher ends the job. When the rank exits first, the watchdog finds its
  parent gone and exits quietly; it exits too when the rank exits without an interrupt (the
  pipe closes).
"""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import threading
from typing import Any

__all__ = ["INTERRUPT_DEADLINE", "watch_interrupts"]

#: Seconds after Ctrl-C by which a rank that has not stopped is killed.
INTERRUPT_DEADLINE = 15.0

# No stdio of its own (the launcher waits for every holder of a rank's output to close it):
# the line goes to the rank's stderr through /proc when it is needed.
_WATCHDOG = """\
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
fd, parent, rank, deadline = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
while True:
    got = os.read(fd, 64)
    if not got:
        sys.exit(0)
    if signal.SIGINT in got:
        break
end = time.monotonic() + deadline
while (left := end - time.monotonic()) > 0:
    if select.select([fd], [], [], left)[0] and not os.read(fd, 64):
        sys.exit(0)  # the rank has exited
if os.getppid() == parent:
    try:
        with open(f"/proc/{parent}/fd/2", "w") as err:
            err.write(f"beckmann: error: interrupted; rank {rank} did not stop within "
                      f"{deadline:g} s, ending the job\\n")
    except OSError:
        pass
    os.kill(parent, signal.SIGKILL)
"""


def watch_interrupts(rank: int, deadline: float = INTERRUPT_DEADLINE) -> Any:
    """Arm the interrupt handling of this rank (see the module); returns the watchdog or None.

    Only from the main thread, and only where Python's own SIGINT handler is in place (not
    where the launcher ignores SIGINT).
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        return None
    previous_hook = sys.unraisablehook

    def redeliver(unraisable: Any) -> None:
        # raised again from a thread a moment later, once the callback has returned (raised
        # here, it would be raised inside this hook and ignored once more)
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            threading.Timer(0.001, _thread.interrupt_main).start()
            return
        previous_hook(unraisable)

    sys.unraisablehook = redeliver
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(r), str(os.getpid()), str(rank),
             str(deadline)],
            pass_fds=(r,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the terminal's process group: no Ctrl-C of its own
        )
    except OSError:
        os.close(r)
        os.close(w)
        return None
    os.close(r)
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    return proc
