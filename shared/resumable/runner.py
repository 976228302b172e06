"""The in-process runner: runs a pipeline's steps in one process, checkpointing after each.

Guarantees, with a checkpoint store that works:

- after every step, the whole context is checkpointed before the next step starts;
- a resumed run never calls a step its checkpoint records as completed, and starts from
  a context equal to the one that step left;
- a step that saved progress mid-step (``save_checkpoint`` / ``save_progress``) restarts
  with the context it saved, so it can continue from there;
- independent steps run concurrently when ``max_workers > 1``; two of them writing the
  same context key is reported as a conflict, never resolved silently.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from . import current_step
from .checkpoint import CheckpointStore, ConcurrentWriterError, LoadedCheckpoint
from .definition import PipelineSpec, StepSpec
from .errors import CheckpointError, ResumableError, StepError
from .log import fields, logger
from .manifest import StepRecord, now_iso
from .status import RunStatus, StepStatus

EventHandler = Callable[["RunEvent"], None]


@dataclass(frozen=True)
class RunEvent:
    """Something that happened in a run, for progress displays."""

    kind: str  # run_started, step_started, step_completed, step_failed, step_retrying,
    #            step_skipped, checkpoint_saved, checkpoint_failed, run_finished
    run_id: str
    step: str | None = None
    attempt: int | None = None
    detail: str = ""
    bytes_written: int | None = None


class OutputConflictError(ResumableError):
    """Two independent steps wrote the same context key."""


@dataclass
class RunOptions:
    max_workers: int = 1
    strict: bool = False
    cleanup_on_success: bool = True
    fail_on_checkpoint_error: bool = False
    retry_backoff: float = 1.0
    retry_backoff_max: float = 60.0
    detect_in_place_changes: bool = True


@dataclass
class _State:
    context: dict[str, Any]
    completed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    records: dict[str, StepRecord] = field(default_factory=dict)
    written_by: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class InProcessRun:
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
        self._state = _State(context={})
        self._progress: dict[str, dict[str, Any]] = {}
        self._saved_as_is = False  # the last checkpoint holds state.context, untouched since
        self.resumed = False

    # -- events and logs ----------------------------------------------------------------

    def _emit(self, kind: str, **kw: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(RunEvent(kind=kind, run_id=self.run_id, **kw))
            except Exception:  # a broken display must not break the run
                logger.debug("progress handler failed", exc_info=True)

    def _log(
        self, level: int, message: str, step: str | None = None, attempt: int | None = None
    ) -> None:
        logger.log(
            level,
            message,
            extra=fields(pipeline=self.spec.name, run_id=self.run_id, step=step, attempt=attempt),
        )

    # -- the run ------------------------------------------------------------------------

    def execute(self, context: Mapping[str, Any] | None, resume: bool) -> dict[str, Any]:
        started = time.monotonic()
        state = self._state
        state.context = dict(context or {})
        for name in self.spec.order:
            state.records[name] = StepRecord()
        if resume:
            loaded = self._load_for_resume()
            if loaded is not None:
                self._adopt(loaded)
        self._emit("run_started", detail="resumed" if self.resumed else "fresh")
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
        state = self._state
        running: dict[Future[Any], str] = {}
        executor = (
            ThreadPoolExecutor(self.options.max_workers, thread_name_prefix="resumable-step")
            if self.options.max_workers > 1
            else None
        )
        try:
            while True:
                if self.stop_event.is_set() and not running:
                    return RunStatus.CANCELLED
                if not state.failed and not self.stop_event.is_set():
                    busy = set(running.values())
                    for step in self.spec.ready_steps(state.completed):
                        if step in busy:
                            continue
                        if executor is None:
                            self._run_and_commit(step, state.context, None)
                            break
                        if len(running) >= self.options.max_workers:
                            break
                        snapshot = dict(state.context)
                        future = executor.submit(
                            contextvars.copy_context().run,
                            self._run_and_commit,
                            step,
                            dict(snapshot),
                            snapshot,
                        )
                        running[future] = step
                if not running:
                    if state.failed:
                        return RunStatus.ERROR
                    if self.stop_event.is_set():
                        return RunStatus.CANCELLED
                    if not self.spec.ready_steps(state.completed):
                        return RunStatus.COMPLETED
                    continue
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    future.result()  # errors are recorded in _run_and_commit; re-raise fatal ones
        finally:
            if executor is not None:
                executor.shutdown(wait=True)

    def _run_and_commit(
        self, step: str, step_context: dict[str, Any], snapshot: dict[str, Any] | None
    ) -> None:
        spec = self.spec.steps[step]
        record = self._state.records[step]
        with self._lock:
            self._saved_as_is = False  # the step may change the context in place
        record.status = StepStatus.RUNNING
        record.started_at = now_iso()
        record.error = None
        began = time.monotonic()

        def progress(context: Mapping[str, Any] | None) -> bool:
            return self.save_progress(step, step_context, snapshot, context)

        try:
            with current_step.bound(progress):
                result = self._call_with_retries(spec, step_context, record)
        except ConcurrentWriterError:
            raise
        except Exception as exc:
            self._record_failure(spec, record, exc, time.monotonic() - began)
            return
        updates = _as_updates(step, result)
        with self._lock:
            try:
                self._merge(step, step_context, snapshot, updates)
            except OutputConflictError as exc:
                self._record_failure(spec, record, exc, time.monotonic() - began)
                return
            record.status = StepStatus.COMPLETED
            record.finished_at = now_iso()
            record.duration_seconds = round(time.monotonic() - began, 6)
            record.output_keys = sorted(updates)
            self._state.completed.append(step)
            self._log(
                logging.INFO, f"step {step} completed in {record.duration_seconds:.3f}s", step
            )
            self._emit("step_completed", step=step, attempt=record.attempts)
            self._progress.pop(step, None)
            self._checkpoint(step=step)

    def _call_with_retries(
        self, spec: StepSpec, context: dict[str, Any], record: StepRecord
    ) -> Any:
        kwargs = current_step.step_kwargs(spec.function, self.stop_event.is_set)
        attempt = 0
        while True:
            attempt += 1
            record.attempts += 1
            self._log(logging.INFO, f"step {spec.name} started", spec.name, record.attempts)
            self._emit("step_started", step=spec.name, attempt=record.attempts)
            try:
                return spec.function(context, **kwargs)
            except Exception as exc:
                retryable = not (isinstance(exc, StepError) and not exc.retryable)
                if (
                    not retryable
                    or attempt > spec.retries
                    or isinstance(exc, ConcurrentWriterError)
                ):
                    raise
                delay = min(
                    self.options.retry_backoff * 2 ** (attempt - 1), self.options.retry_backoff_max
                )
                self._log(
                    logging.WARNING,
                    f"step {spec.name} failed ({type(exc).__name__}: {exc}); retry "
                    f"{attempt}/{spec.retries} in {delay:.1f}s",
                    spec.name,
                    record.attempts,
                )
                self._emit(
                    "step_retrying", step=spec.name, attempt=record.attempts, detail=str(exc)
                )
                if self.stop_event.wait(delay):
                    raise
                with self._lock:
                    # The retry starts from the progress the failed attempt saved.
                    context.update(_changed(self._progress.get(spec.name, {}), context))

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
            self._emit("step_failed", step=spec.name, attempt=record.attempts, detail=record.error)

    def _merge(
        self,
        step: str,
        step_context: dict[str, Any],
        snapshot: dict[str, Any] | None,
        updates: dict[str, Any],
    ) -> None:
        state = self._state
        if snapshot is not None:
            # Parallel mode: the step worked on a copy. Keep what it changed in place or
            # added, on top of what other steps committed meanwhile.
            updates = {**_changed(step_context, snapshot), **updates}
        ancestors = self.spec.ancestors(step)
        for key in updates:
            writer = state.written_by.get(key)
            if (
                writer
                and writer != step
                and writer not in ancestors
                and step not in self.spec.ancestors(writer)
            ):
                raise OutputConflictError(
                    f"steps {writer!r} and {step!r} both write context key {key!r} but neither "
                    "depends on the other: make one depend on the other or use distinct keys"
                )
        state.context.update(updates)
        for key in updates:
            state.written_by[key] = step

    # -- checkpoints --------------------------------------------------------------------

    def _checkpoint(
        self,
        status: RunStatus = RunStatus.RUNNING,
        context: Mapping[str, Any] | None = None,
        step: str | None = None,
    ) -> bool:
        state = self._state
        changed_keys: Collection[str] | None = None
        if context is None and self._saved_as_is:
            changed_keys = ()  # no step ran since the context was saved: only the status
        elif context is None and step is not None and not self.options.detect_in_place_changes:
            changed_keys = state.records[step].output_keys  # trusted: what the step returned
        try:
            before = self.checkpoints.blobs.bytes_uploaded
            manifest = self.checkpoints.save(
                state.context if context is None else context,
                spec=self.spec,
                completed_steps=state.completed,
                steps_summary=state.records,
                status=status,
                errors=state.errors,
                changed_keys=changed_keys,
            )
        except ConcurrentWriterError:
            raise
        except Exception as exc:
            message = f"checkpoint of run {self.run_id} failed: {type(exc).__name__}: {exc}"
            if self.options.fail_on_checkpoint_error:
                raise
            state.warnings.append(message)
            self._log(logging.WARNING, message + " (the run goes on)")
            self._emit("checkpoint_failed", detail=message)
            return False
        self._saved_as_is = context is None
        written = self.checkpoints.blobs.bytes_uploaded - before
        self._log(logging.DEBUG, f"checkpoint #{manifest.sequence} saved ({written} new bytes)")
        self._emit(
            "checkpoint_saved", step=step, detail=f"#{manifest.sequence}", bytes_written=written
        )
        return True

    def save_progress(
        self,
        step: str,
        step_context: Mapping[str, Any],
        snapshot: Mapping[str, Any] | None,
        given: Mapping[str, Any] | None,
    ) -> bool:
        """Checkpoint a running step's progress without marking the step completed.

        What is saved: the committed context, plus what the step changed in its own
        context, plus ``given`` (the whole context or just the progress keys). It is what
        the step starts from when it runs again: after a resume, and after a retry.
        """
        with self._lock:
            merged = dict(self._state.context)
            if snapshot is not None:
                merged.update(_changed(step_context, snapshot))
            if given is not None:
                merged.update(given)
            self._progress[step] = merged
            self._state.records[step].progress_saved_at = now_iso()
            return self._checkpoint(context=merged, step=step)

    def _context_with_progress(self) -> dict[str, Any]:
        """The committed context plus the progress saved by steps that did not finish."""
        context = dict(self._state.context)
        for progress in self._progress.values():
            context.update(_changed(progress, self._state.context))
        return context

    # -- resume -------------------------------------------------------------------------

    def _load_for_resume(self) -> LoadedCheckpoint | None:
        store = self.checkpoints
        try:
            loaded = store.load_latest()
            if loaded is None:
                self._log(logging.INFO, f"no checkpoint for run {self.run_id}: starting fresh")
                return None
            plan = store.plan_resume(loaded.manifest, self.spec)
        except CheckpointError as exc:
            if self.options.strict:
                raise
            message = f"checkpoint of run {self.run_id} is unusable, starting fresh: {exc}"
            self._state.warnings.append(message)
            self._log(logging.WARNING, message)
            return None
        if not plan.invalidated:
            return loaded
        for reason in plan.reasons:
            self._state.warnings.append(reason)
            self._log(logging.WARNING, reason)
        keep = set(plan.completed)
        for sequence in reversed(store.history()):
            manifest = store.load_manifest(sequence)
            if set(manifest.completed_steps) <= keep:
                self._log(logging.INFO, f"rolling back to checkpoint #{sequence}")
                return store.load(sequence)
        self._log(logging.WARNING, "no earlier checkpoint to roll back to: starting fresh")
        return None

    def _adopt(self, loaded: LoadedCheckpoint) -> None:
        state = self._state
        manifest = loaded.manifest
        state.context.update(loaded.context)
        valid = [s for s in manifest.completed_steps if s in self.spec.steps]
        for step in valid:
            stored = manifest.steps_summary.get(step)
            record = state.records[step]
            if stored is not None:
                record.attempts = stored.attempts
                record.output_keys = list(stored.output_keys)
                record.duration_seconds = stored.duration_seconds
                record.started_at, record.finished_at = stored.started_at, stored.finished_at
            record.status = StepStatus.SKIPPED
            for key in record.output_keys:
                state.written_by[key] = step
        for step, stored in manifest.steps_summary.items():
            if step in state.records and step not in valid:
                state.records[step].attempts = stored.attempts
        state.completed = list(valid)
        state.skipped = list(valid)
        self.resumed = True
        for step in valid:
            self._emit("step_skipped", step=step)

    # -- end ----------------------------------------------------------------------------

    def _finish(self, status: RunStatus, duration: float) -> dict[str, Any]:
        state = self._state
        if status is RunStatus.CANCELLED:
            for _name, record in state.records.items():
                if record.status == StepStatus.NOT_STARTED:
                    record.status = StepStatus.CANCELLED
        if status is RunStatus.COMPLETED and self.options.cleanup_on_success:
            try:
                self.checkpoints.delete_run()
            except Exception as exc:
                self._log(logging.WARNING, f"cleanup of run {self.run_id} failed: {exc}")
        else:
            self._checkpoint(
                status=status, context=self._context_with_progress() if self._progress else None
            )
        self._log(
            logging.INFO if status is RunStatus.COMPLETED else logging.WARNING,
            f"run {self.run_id} {status.value} in {duration:.3f}s",
        )
        self._emit("run_finished", detail=status.value)
        return {
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
            "context": state.context,
            "resumed_from_checkpoint": self.resumed,
            "steps": {k: v.model_dump() for k, v in state.records.items()},
            "duration_seconds": round(duration, 6),
            "checkpoint_sequence": self.checkpoints.sequence,
        }


def _as_updates(step: str, result: Any) -> dict[str, Any]:
    if result is None:
        return {}
    if isinstance(result, dict):
        bad = [k for k in result if not isinstance(k, str)]
        if bad:
            raise ResumableError(f"step {step!r} returned non-string context keys {bad!r}")
        return result
    return {f"{step}_result": result}


def _changed(context: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """Entries of ``context`` that are new or another object than in ``base``."""
    return {k: v for k, v in context.items() if k not in base or base[k] is not v}
