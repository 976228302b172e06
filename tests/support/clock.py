"""A clock tests move by hand, as ``resumable.serverless._runtime.Runtime``: no test waits on time.

Background tasks (the heartbeat) run when the clock passes their next tick, on the
thread that moves it, so that a test decides exactly when a lease is renewed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Task:
    interval: float
    tick: Callable[[], bool]
    due: float
    stopped: bool = False

    def stop(self) -> None:
        self.stopped = True


@dataclass
class ManualClock:
    time: float = 1_800_000_000.0
    tasks: list[_Task] = field(default_factory=list)

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def every(self, interval: float, tick: Callable[[], bool], name: str) -> _Task:
        task = _Task(interval, tick, self.time + interval)
        self.tasks.append(task)
        return task

    def advance(self, seconds: float) -> None:
        """Move the clock, running every background tick that falls due on the way."""
        end = self.time + seconds
        while True:
            due = [t for t in self.tasks if not t.stopped and t.due <= end]
            if not due:
                break
            task = min(due, key=lambda t: t.due)
            self.time = max(self.time, task.due)
            task.due += task.interval
            if not task.tick():
                task.stopped = True
        self.time = end

    @property
    def running_tasks(self) -> int:
        return sum(1 for t in self.tasks if not t.stopped)
