"""The in-process runner: runs a pipeline's steps in one process, checkpointing after each.

Guarantees, with a checkpoint store that works:

- after every step, the run is checkpointed before the next step starts;
- a resumed run never calls a step its checkpoint records as completed, and ends with the
  context an uninterrupted run gives;
- every attempt of a step starts from its committed input (the run's initial context
  plus its ancestors' outputs) plus the progress it saved (``save_progress``): never from
  what a failed attempt changed in place, never from what a step running beside it did;
- a step's saved progress belongs to that step alone and is carried by every checkpoint
  until the step completes;
- independent steps run concurrently when ``max_workers > 1``; two of them writing the
  same context key is reported as a conflict, never resolved silently.

The context composition itself (entries, deltas, objects) is ``run_context``'s; writing
the run's checkpoints is ``_checkpoints``'s, calling a step ``_calls``'s.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from resumable._log import fields, logger
from resumable.checkpoint._manifest import StepRecord, now_iso
from resumable.checkpoint._store import CheckpointStore, LoadedCheckpoint
from resumable.definition._spec import PipelineSpec, StepSpec, step_updates
from resumable.errors import (
    CheckpointError,
    ConcurrentWriterError,
    OutputConflictError,
)
from resumable.local._calls import StepCalls, StepStopped
from resumable.local._checkpoints import RunCheckpoints
from resumable.local._events import (
    EventHandler,
    EventKind,
    RunEvent,
    RunOptions,
)
from resumable.local._result import RunResult
from resumable.local._resume import NothingToResume, adopt
from resumable.local._run_context import RunContext, StepInput
from resumable.status import RunStatus, StepStatus

__all__ = ["InProcessRun", "OutputConflictError", "RunEvent", "RunOptions"]


@dataclass
class _State:
    completed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    records: dict[str, StepRecord] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class InProcessRun(StepCalls, RunCheckpoints):
    """One execution of a pipeline (a fresh start or a resume) in this process."""

    def __init__(
        self,
        spec: PipelineSpec,
        checkpoints: CheckpointStore,
        options: RunOptions,
        *,
        stop_event: threading.Event,
        on_event: EventHandler | None = None,
    ) -> None:
        self.spec = spec
        self.checkpoints = checkpoints
        self.options = options
        self.stop_event = stop_event
        self.on_event = on_event
        self.run_id = checkpoints.run_id
        self._lock = threading.RLock()
        self._state = _State()
        self.context = RunContext(
            spec, checkpoints.blobs, trust_steps=not options.detect_in_place_changes
        )
        self.resumed = False
        self._saves: dict[str, int] = {}  # progress checkpoints written, per step

    # -- events and logs ----------------------------------------------------------------

    def _warn(self, message: str) -> None:
        self._state.warnings.append(message)
        self._log(logging.WARNING, message)

    # -- the run ------------------------------------------------------------------------

    def execute(self, context: Mapping[str, Any] | None, resume: bool) -> RunResult:
        started = time.monotonic()
        state = self._state
        for name in self.spec.order:
            state.records[name] = StepRecord()
        if not (resume and self._resume()):
            try:
                self.context.start(context or {})
            except ConcurrentWriterError:
                raise
            except Exception as exc:
                self._checkpoint_failed(exc)
        self._emit(EventKind.RUN_STARTED, detail="resumed" if self.resumed else "fresh")
        self._log(
            logging.INFO,
            f"run {self.run_id} of {self.spec.name} "
            + (
                f"resumed after {len(state.skipped)} completed step(s)"
                if self.resumed
                else "started"
            ),
        )
        status = self._schedule()
        return self._finish(status, time.monotonic() - started)

    def _schedule(self) -> RunStatus:
        """Run ready steps (several at once with ``max_workers > 1``) until the run ends."""
        running: dict[Future[Any], str] = {}
        isolated = self.options.max_workers > 1
        executor = (
            ThreadPoolExecutor(self.options.max_workers, thread_name_prefix="resumable-step")
            if isolated
            else None
        )
        try:
            while True:
                if self.stop_event.is_set() and not running:
                    return RunStatus.CANCELLED
                if not self._state.failed and not self.stop_event.is_set():
                    self._dispatch(running, executor)
                if not running:
                    status = self._status_when_idle()
                    if status is not None:
                        return status
                    continue
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    future.result()  # errors are recorded in _run_step; re-raise fatal ones
        finally:
            if executor is not None:
                executor.shutdown(wait=True)

    def _dispatch(
        self, running: dict[Future[Any], str], executor: ThreadPoolExecutor | None
    ) -> None:
        """Start the ready steps: the first one here and now without an executor, as many
        as there are free workers with one."""
        busy = set(running.values())
        for step in self.spec.ready_steps(self._state.completed):
            if step in busy:
                continue
            if executor is None:
                self._run_step(step, isolated=False)
                return
            if len(running) >= self.options.max_workers:
                return
            future = executor.submit(
                contextvars.copy_context().run, self._run_step, step, isolated=True
            )
            running[future] = step

    def _status_when_idle(self) -> RunStatus | None:
        """How the run ends when no step runs, or ``None`` if a step is ready to run."""
        if self._state.failed:
            return RunStatus.ERROR
        if self.stop_event.is_set():
            return RunStatus.CANCELLED
        if not self.spec.ready_steps(self._state.completed):
            return RunStatus.COMPLETED
        return None

    def _run_step(self, step: str, *, isolated: bool) -> None:
        spec = self.spec.steps[step]
        record = self._state.records[step]
        record.status = StepStatus.RUNNING
        record.started_at = now_iso()
        record.error = None
        began = time.monotonic()
        try:
            attempt, result = self._call_with_retries(spec, record, isolated)
            with self._lock:
                self._commit(spec, record, attempt, result, began)
        except ConcurrentWriterError:
            raise
        except StepStopped:  # yielded to the stop request: unfinished, its progress saved
            with self._lock:
                record.status = StepStatus.CANCELLED
                record.duration_seconds = round(time.monotonic() - began, 6)
            self._log(logging.INFO, f"step {step} stopped; a resume continues it", step)
        except Exception as exc:
            self._record_failure(spec, record, exc, time.monotonic() - began)

    def _attempt_input(self, step: str, isolated: bool) -> StepInput:
        with self._lock:
            return self.context.input_for(step, isolated=isolated)

    def _commit(
        self, spec: StepSpec, record: StepRecord, attempt: StepInput, result: Any, began: float
    ) -> None:
        updates = step_updates(spec.name, result)
        try:
            delta = self.context.commit(attempt, updates)
        except (OutputConflictError, ConcurrentWriterError):
            raise
        except Exception as exc:  # cannot encode, or storage down: committed in memory only
            delta = self.context.commit_degraded(attempt)
            self._checkpoint_failed(exc)
        record.status = StepStatus.COMPLETED
        record.finished_at = now_iso()
        record.duration_seconds = round(time.monotonic() - began, 6)
        record.output_keys = delta.keys if delta.keys else sorted(updates)
        self._state.completed.append(spec.name)
        self._log(
            logging.INFO, f"step {spec.name} completed in {record.duration_seconds:.3f}s", spec.name
        )
        self._emit(EventKind.STEP_COMPLETED, step=spec.name, attempt=record.attempts)
        self._checkpoint("commit", step=spec.name)

    def _record_failure(
        self, spec: StepSpec, record: StepRecord, exc: BaseException, took: float
    ) -> None:
        message = f"step {spec.name} failed: {type(exc).__name__}: {exc}"
        with self._lock:
            record.status = StepStatus.ERROR
            record.finished_at = now_iso()
            record.duration_seconds = round(took, 6)
            record.error = f"{type(exc).__name__}: {exc}"
            self._state.failed.append(spec.name)
            self._state.errors.append(message)
            logger.error(
                message,
                exc_info=exc,
                extra=fields(
                    pipeline=self.spec.name,
                    run_id=self.run_id,
                    step=spec.name,
                    attempt=record.attempts,
                ),
            )
            self._emit(
                EventKind.STEP_FAILED, step=spec.name, attempt=record.attempts, detail=record.error
            )

    # -- resume -------------------------------------------------------------------------

    def _resume(self) -> bool:
        """Continue the run's checkpoint; ``False`` when there is none to continue."""
        store = self.checkpoints
        try:
            loaded = store.load_latest(decode=False)
            if loaded is None:
                self._log(logging.INFO, f"no checkpoint for run {self.run_id}: starting fresh")
                return False
            self._adopt(loaded)
        except NothingToResume:
            self._warn("no earlier checkpoint to roll back to: starting fresh")
            self._reset()
            return False
        except CheckpointError as exc:
            if self.options.strict:
                raise
            self._reset()
            self._warn(f"checkpoint of run {self.run_id} is unusable, starting fresh: {exc}")
            return False
        return True

    def _reset(self) -> None:
        """Forget what a resume that did not work out adopted (its warnings stay)."""
        warnings = self._state.warnings
        self._state = _State(records={n: StepRecord() for n in self.spec.order}, warnings=warnings)
        self.context = RunContext(
            self.spec, self.checkpoints.blobs, trust_steps=not self.options.detect_in_place_changes
        )

    def _adopt(self, loaded: LoadedCheckpoint) -> None:
        adoption = adopt(self.checkpoints, self.spec, self.context, loaded)
        for reason in adoption.warnings:
            self._warn(reason)
        for note in adoption.notes:
            self._log(logging.INFO, note)
        valid, manifest = adoption.completed, adoption.manifest
        state = self._state
        for step in valid:
            stored = manifest.steps_summary.get(step)
            record = state.records[step]
            if stored is not None:
                record.attempts = stored.attempts
                record.output_keys = list(stored.output_keys)
                record.duration_seconds = stored.duration_seconds
                record.started_at, record.finished_at = stored.started_at, stored.finished_at
            record.status = StepStatus.SKIPPED
        for step, stored in manifest.steps_summary.items():
            if step in state.records and step not in valid:
                state.records[step].attempts = stored.attempts
        state.completed = list(valid)
        state.skipped = list(valid)
        self.resumed = True
        for step in valid:
            self._emit(EventKind.STEP_SKIPPED, step=step)

    # -- end ----------------------------------------------------------------------------

    def _finish(self, status: RunStatus, duration: float) -> RunResult:
        state = self._state
        if status is RunStatus.CANCELLED:
            for record in state.records.values():
                if record.status == StepStatus.NOT_STARTED:
                    record.status = StepStatus.CANCELLED
        if status is RunStatus.COMPLETED and self.options.cleanup_on_success:
            try:
                self.checkpoints.delete_run()
            except Exception as exc:
                self._log(logging.WARNING, f"cleanup of run {self.run_id} failed: {exc}")
        else:
            self._checkpoint("final", status=status)
        self._log(
            logging.INFO if status is RunStatus.COMPLETED else logging.WARNING,
            f"run {self.run_id} {status.value} in {duration:.3f}s",
        )
        self._emit(EventKind.RUN_FINISHED, detail=status.value)
        return RunResult(
            **{
                "pipeline_name": self.spec.name,
                "status": status.value,
                "run_guid": self.run_id,
                "run_id": self.run_id,
                "tenant_id": self.checkpoints.tenant_id,
                "run_folder": self.checkpoints.run_folder,
                "steps_completed": [s for s in state.completed if s not in state.skipped],
                "steps_failed": list(state.failed),
                "steps_skipped": list(state.skipped),
                "errors": list(state.errors),
                "warnings": list(state.warnings),
                "context": self.context.final_context(),
                "resumed_from_checkpoint": self.resumed,
                "steps": {k: v.model_dump() for k, v in state.records.items()},
                "duration_seconds": round(duration, 6),
                "checkpoint_sequence": self.checkpoints.sequence,
            }
        )
