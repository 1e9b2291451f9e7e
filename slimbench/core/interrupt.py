"""Ctrl-C and `kill` end a run with one line, even where the signal lands at a point Python cannot raise
from. A KeyboardInterrupt raised inside a finalizer or an at-fork callback (starting a measuring process runs
logging's) is printed as "Exception ignored" and dropped, and the run would go on. So the handler also notes
the signal, such a dropped interrupt is not printed, and the places that start or wait for work call
`check()`, which raises it again."""

from __future__ import annotations

import signal
import sys
import threading

_received = threading.Event()


def _raise(signum, frame):
    _received.set()
    raise KeyboardInterrupt


def _quiet_dropped_interrupt(hook):
    def handle(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _received.is_set():
            return  # raised again at the next check()
        hook(unraisable)

    handle.slimbench = True
    return handle


def install() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt and are remembered; a SIGINT the process was started
    ignoring (a background job of a shell) stays ignored."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _raise)
    signal.signal(signal.SIGTERM, _raise)
    if not getattr(sys.unraisablehook, "slimbench", False):
        sys.unraisablehook = _quiet_dropped_interrupt(sys.unraisablehook)


def check() -> None:
    """Raise KeyboardInterrupt if a signal arrived, whether or not its first raise got through."""
    if _received.is_set():
        raise KeyboardInterrupt
