"""Time and background work for the serverless components, behind one small interface.

The step protocol reads the clock (leases, deadlines), sleeps (backoff between
compare-and-set attempts) and runs a heartbeat beside the step. Production uses the
system's clock and a thread (:class:`SystemRuntime`); the deterministic simulation in
``tests/simulation`` substitutes a virtual clock and cooperative actors, so that the
real worker code runs under schedules a seed reproduces exactly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Periodic(Protocol):
    """A background task started by :meth:`Runtime.every`."""

    def stop(self) -> None:
        """Stop it and wait until a call in progress has returned."""
        ...


class Runtime(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def sleep(self, seconds: float) -> None: ...

    def every(self, interval: float, tick: Callable[[], bool], name: str) -> Periodic:
        """Call ``tick`` every ``interval`` seconds in the background until it returns
        ``False`` or the task is stopped. An exception in ``tick`` is the caller's to
        catch: ``tick`` must not raise."""
        ...


class _ThreadPeriodic:
    def __init__(self, interval: float, tick: Callable[[], bool], name: str) -> None:
        self._interval = interval
        self._tick = tick
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            if not self._tick():
                return

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


class SystemRuntime:
    """The real clock and real threads."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def every(self, interval: float, tick: Callable[[], bool], name: str) -> Periodic:
        return _ThreadPeriodic(interval, tick, name)


SYSTEM = SystemRuntime()
