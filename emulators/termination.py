"""Stopping the emulators when the owning process is asked to terminate.

Ctrl-C already raises KeyboardInterrupt, which unwinds `with LocalCloud()` blocks and pytest
fixtures. SIGTERM and SIGHUP by default end the process at once, skipping all cleanup and
leaving Java servers behind. While a local cloud runs, those two signals therefore:

1. send SIGTERM to every tracked emulator process group right away (no waiting, no locks,
   so it is safe whatever the interrupted code was doing), then
2. call a handler installed before ours, if any, or else raise KeyboardInterrupt, so that
   the program unwinds as after Ctrl-C and its normal `stop()` reaps the processes.

A process killed with SIGKILL gets no say; the registry reaps its leftovers on the next start.
"""

from __future__ import annotations

import signal
import threading
import weakref
from types import FrameType
from typing import Any, Protocol


class Signallable(Protocol):
    def signal_now(self) -> None:
        """SIGTERM every process this object owns, without waiting."""


_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_tracked: weakref.WeakSet[Any] = weakref.WeakSet()
_previous: dict[int, Any] = {}
_interrupted = False


def track(owner: Signallable) -> None:
    """Have SIGTERM/SIGHUP stop `owner`'s processes. Handlers are installed on first use,
    and only from the main thread (Python allows signal handlers nowhere else)."""
    _tracked.add(owner)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _SIGNALS:
        if sig not in _previous:
            _previous[sig] = signal.signal(sig, _on_signal)


def untrack(owner: Signallable) -> None:
    """Stop watching `owner`; once nothing is tracked, restore the previous handlers."""
    _tracked.discard(owner)
    if _tracked or threading.current_thread() is not threading.main_thread():
        return
    global _interrupted
    for sig, previous in list(_previous.items()):
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, previous)
        del _previous[sig]
    _interrupted = False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _interrupted
    for owner in list(_tracked):
        owner.signal_now()
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN and not _interrupted:
        # Raised once only: a repeated signal must not break off the cleanup it started.
        _interrupted = True
        raise KeyboardInterrupt(f"terminated by {signal.Signals(signum).name}")
