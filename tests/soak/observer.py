"""The soak's view of its runs: every run document, re-read by one query per poll."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from resumable.serverless._engine import Engine
from resumable.serverless._run_state import RunState
from resumable.status import StepStatus


class Observer:
    """The latest run documents of the soak's runs (a run not started yet is absent)."""

    def __init__(self, engine: Engine, run_ids: Iterable[str], *, interval: float = 1.0) -> None:
        self.engine = engine
        self.run_ids = set(run_ids)
        self.interval = interval
        self.states: dict[str, RunState] = {}
        self.polls = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-observer", daemon=True)
        self._changed = threading.Condition(self._lock)

    def start(self) -> Observer:
        self.poll()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def poll(self) -> None:
        # The soak's collection holds only soak runs; a query reads all of them at once.
        found = self.engine.runs.query(limit=len(self.run_ids) + 1000)
        with self._changed:
            for state in found:
                if state.run_id in self.run_ids:
                    self.states[state.run_id] = state
            self.polls += 1
            self._changed.notify_all()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # an emulator hiccup: the next poll will do
                continue

    def get(self, run_id: str) -> RunState | None:
        with self._lock:
            return self.states.get(run_id)

    def unfinished(self) -> list[str]:
        with self._lock:
            return sorted(
                r for r in self.run_ids if r not in self.states or not self.states[r].finished
            )

    def busy_steps(self) -> set[str]:
        """Steps running or queued in some run."""
        with self._lock:
            return {
                name
                for state in self.states.values()
                if not state.finished
                for name, step in state.steps.items()
                if step.status in (StepStatus.RUNNING, StepStatus.QUEUED)
            }

    def wait(self, timeout: float) -> None:
        """Until the next poll (or ``timeout``)."""
        with self._changed:
            self._changed.wait(timeout)
