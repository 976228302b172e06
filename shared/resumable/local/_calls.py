"""Calling a step in the in-process runner: retries with backoff after a retryable
failure, again at once after ``Continue()``, and ``should_stop``/``time_left`` at the
step's ``timeout``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from resumable.definition import _step_api as current_step
from resumable.definition._spec import StepSpec
from resumable.definition._step_api import Continue
from resumable.errors import ConcurrentWriterError, NonRetryableError, is_retryable
from resumable.local._events import EventKind, RunOptions, RunReport
from resumable.local._map import MapRun
from resumable.local._run_context import RunContext, StepInput

if TYPE_CHECKING:
    from resumable.checkpoint._manifest import StepRecord


class StepStopped(Exception):
    """A step yielded (``Continue()``) because the run is stopping: it ends unfinished,
    its progress saved, and a resume continues it."""


class StepCalls(RunReport):
    """The part of :class:`~resumable.local._runner.InProcessRun` that calls steps."""

    context: RunContext
    options: RunOptions
    stop_event: threading.Event
    _lock: threading.RLock
    _saves: dict[str, int]

    if TYPE_CHECKING:  # provided by the runner

        def _attempt_input(self, step: str, isolated: bool) -> StepInput: ...

        def save_progress(self, attempt: StepInput, given: Mapping[str, Any] | None) -> bool: ...

    def _call_with_retries(
        self, spec: StepSpec, record: StepRecord, isolated: bool
    ) -> tuple[StepInput, Any]:
        """Call the step until it returns, retrying retryable failures; a step that asks
        to continue (``Continue()``) is called again from its progress, as no retry."""
        tries = 0
        while True:
            tries += 1
            record.attempts += 1
            attempt = self._attempt_input(spec.name, isolated)
            self._log(logging.INFO, f"step {spec.name} started", spec.name, record.attempts)
            self._emit(EventKind.STEP_STARTED, step=spec.name, attempt=record.attempts)
            saves = self._saves.get(spec.name, 0)
            try:
                result = self._call(spec, attempt)
            except Exception as exc:
                with self._lock:
                    self.context.failed(attempt)
                if isinstance(exc, ConcurrentWriterError):
                    raise
                if not is_retryable(exc) or tries > spec.retries:
                    raise
                self._wait_to_retry(spec, record, tries, exc)
                continue
            if not isinstance(result, Continue):
                return attempt, result
            if self.stop_event.is_set():
                if result.progress is not None:
                    self.save_progress(attempt, result.progress)
                raise StepStopped(spec.name)
            if result.progress is not None:
                self.save_progress(attempt, result.progress)
            if self._saves.get(spec.name, 0) == saves:
                raise NonRetryableError(
                    f"step {spec.name} returned Continue() without saving progress: it would "
                    "start from the same point again (call save_progress() first, or pass "
                    "Continue(progress=...))"
                )
            tries -= 1  # a continuation is not a retry
            record.continuations += 1

    def _call(self, spec: StepSpec, attempt: StepInput) -> Any:
        """One call of the step function: ``should_stop()`` turns true at a stop request
        and at the step's ``timeout`` (counted from this call), ``time_left()`` says when."""
        deadline = time.monotonic() + spec.timeout if spec.timeout else float("inf")

        def should_stop() -> bool:
            return self.stop_event.is_set() or time.monotonic() >= deadline

        def time_left() -> float:
            return max(0.0, deadline - time.monotonic())

        def progress(given: Mapping[str, Any] | None) -> bool:
            return self.save_progress(attempt, given)

        if spec.map is not None:
            return MapRun(
                spec,
                attempt.context,
                save_progress=progress,
                should_stop=should_stop,
                time_left=time_left,
                workers=spec.concurrency or self.options.max_workers,
                retry_delay=self._retry_delay,
                wait_stop=self.stop_event.wait,
            )()
        kwargs = current_step.step_kwargs(spec.function, should_stop, time_left)
        with current_step.bound(progress):
            return spec.function(attempt.context, **kwargs)

    def _retry_delay(self, tries: int) -> float:
        """The wait before retry ``tries`` (1, 2, ...): exponential, capped."""
        return float(
            min(self.options.retry_backoff * 2.0 ** (tries - 1), self.options.retry_backoff_max)
        )

    def _wait_to_retry(
        self, spec: StepSpec, record: StepRecord, tries: int, exc: Exception
    ) -> None:
        delay = self._retry_delay(tries)
        self._log(
            logging.WARNING,
            f"step {spec.name} failed ({type(exc).__name__}: {exc}); retry "
            f"{tries}/{spec.retries} in {delay:.1f}s",
            spec.name,
            record.attempts,
        )
        self._emit(
            EventKind.STEP_RETRYING, step=spec.name, attempt=record.attempts, detail=str(exc)
        )
        if self.stop_event.wait(delay):
            raise exc
