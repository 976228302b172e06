"""SIGKILL to step functions at random moments, as an instance crash does; the stack
(``DevStack``'s supervisor) starts a new instance, as Cloud Run would.

A kill goes to the whole process group of the functions-framework server (gunicorn's
master and its worker), found through the stack's API. It is aimed at the function of a
step chosen at random among those running or queued in some run, so that kills land on
work in flight and every step's function gets its share; and only at a server that has
answered for a while (``min_uptime``), so that every kill hits a live instance and each
new instance gets some work done first — crashes of one function back to back would
only stall its steps (and, while it starts, race the stack's own restart).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time

from resumable.dev._functions import FunctionProcess
from resumable.dev._stack import DevStack

from .ledger import Ledger
from .observer import Observer
from .pipeline import PIPELINE_NAME


class Killer:
    def __init__(
        self,
        stack: DevStack,
        observer: Observer,
        ledger: Ledger,
        *,
        kills: int,
        mean_gap: float,
        min_uptime: float,
        seed: int,
    ) -> None:
        self.stack = stack
        self.observer = observer
        self.ledger = ledger
        self.target = kills
        self.mean_gap = mean_gap
        self.min_uptime = min_uptime
        self._answering_since: dict[int, float] = {}  # server pid -> first seen answering
        self.random = random.Random(seed)
        self.pids: set[int] = set()  # every server pid seen: none may be left at the end
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-killer", daemon=True)

    @property
    def kills(self) -> int:
        return len(self.ledger.kills)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> Killer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _process(self, step: str) -> FunctionProcess:
        return self.stack.step_process(PIPELINE_NAME, step)

    def _loop(self) -> None:
        while self.kills < self.target and not self._stop.is_set():
            if self._stop.wait(self.random.uniform(0.5, 1.5) * self.mean_gap):
                return
            busy = [s for s in sorted(self.observer.busy_steps()) if self._up(s)]
            if busy:
                self.kill(self.random.choice(busy))

    def _up(self, step: str) -> bool:
        """Whether the step's server has been answering for ``min_uptime``."""
        process = self._process(step)
        if process.process is None or process.process.poll() is not None:
            return False
        if not process.answers():
            return False
        since = self._answering_since.setdefault(process.process.pid, time.monotonic())
        return time.monotonic() - since >= self.min_uptime

    def kill(self, step: str) -> None:
        """SIGKILL the process group serving ``step``."""
        pid = self._process(step).pid
        assert pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
            self.pids.add(pid)
            self.ledger.killed(step, pid)

    def all_pids(self) -> set[int]:
        """The pids (and process groups) of every server the stack ran for the soak."""
        current = {p.pid for p in self.stack.functions.values() if p.pid is not None}
        return self.pids | current
