"""The step protocol: what one delivery of "run step S of run R" does.

    claim → load → run (with heartbeats) → write → commit → publish

Pub/Sub delivers at least once, possibly concurrently, possibly long after. Each stage
below is written so that a crash, a duplicate or a stale worker at any point leads to the
same end state: every step's output committed exactly once, and the run ending
``completed``, ``error`` or ``cancelled``.

- **claim** — on the run document: ack if the run is finished; if S already completed,
  re-publish its queued successors (heals a crash between commit and publish) and ack;
  if another worker holds a live lease on S, answer "retry later"; past S's attempt limit,
  fail S and the run. Otherwise take the lease; the new attempt number fences out every
  earlier worker.
- **load** — the params plus the outputs of S's completed ancestors (and S's own saved
  progress, if an earlier attempt saved some).
- **run** — a heartbeat renews the lease while S runs, only while we still own it.
- **write** — S's output manifest under a new name; nothing is overwritten.
- **commit** — only if the lease is still ours at the same attempt: S completed, its
  ready successors queued, the run finished when nothing is left. A stale worker's commit
  is refused and its output discarded.
- **publish** — the queued successors' messages; then ack.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import current_step
from .definition import PipelineSpec, StepSpec
from .engine import Engine, log_fields
from .errors import CheckpointError, EncodingError, StepError
from .log import logger
from .messages import BadMessageError, StepMessage
from .runstate import (
    ContentionError,
    RunNotFoundError,
    RunState,
    Unchanged,
    apply_cancel,
)
from .status import RunStatus, StepStatus
from .step_outputs import RunFiles, apply_outputs

# Claims beyond the step's retries that may end in a lost lease (a crash, a timeout)
# before the step is given up: crashes are not the step's fault, but must not loop forever.
CRASH_ALLOWANCE = 3


@dataclass(frozen=True)
class Outcome:
    """How to answer the delivery: ``ack`` (2xx) or "retry later" (non-2xx)."""

    ack: bool
    reason: str

    @classmethod
    def done(cls, reason: str) -> Outcome:
        return cls(True, reason)

    @classmethod
    def retry_later(cls, reason: str) -> Outcome:
        return cls(False, reason)


@dataclass
class Claim:
    kind: str  # claimed, finished, completed, busy, not_ready, exhausted
    attempt: int = 0
    republish: list[str] = field(default_factory=list)


@dataclass
class Commit:
    committed: bool
    publish: list[str] = field(default_factory=list)
    run_status: str = RunStatus.RUNNING


def max_attempts(step: StepSpec) -> int:
    return step.retries + 1 + CRASH_ALLOWANCE


# -- the protocol -------------------------------------------------------------------------


def handle_step(engine: Engine, message: StepMessage) -> Outcome:
    """Process one delivery of a step message. Never raises for a bad message."""
    try:
        pipeline = engine.registry.get(message.pipeline)
    except BadMessageError as exc:
        return _bad_message(engine, message, exc.reason)
    spec = pipeline.spec
    if message.step not in spec.steps:
        return _bad_message(engine, message, f"pipeline {spec.name!r} has no step {message.step!r}")
    if engine.settings.step and engine.settings.step != message.step:
        return _bad_message(
            engine,
            message,
            f"step {message.step!r} was sent to the function of step {engine.settings.step!r}",
        )
    doc_id = engine.doc_id(message.tenant_id, message.pipeline, message.run_id)
    step = spec.steps[message.step]

    try:
        state, claim = claim_step(engine, doc_id, spec, step)
    except RunNotFoundError:
        logger.error("step message for an unknown run: acked", extra=log_fields(message))
        return Outcome.done("unknown run")
    except ContentionError as exc:
        return Outcome.retry_later(str(exc))
    if claim.kind == "completed":
        engine.publish_steps(state, claim.republish)
        return Outcome.done(f"step already completed; re-published {claim.republish}")
    if claim.kind == "busy":
        return Outcome.retry_later("another worker holds a live lease on this step")
    if claim.kind != "claimed":
        return Outcome.done(claim.kind)

    attempt = claim.attempt
    fields = log_fields(state, step=step.name, attempt=attempt)
    logger.info(f"step {step.name} claimed", extra=fields)
    # One RunFiles for the whole delivery: its blob store remembers what was read and
    # written, so unchanged input values and earlier progress are not uploaded again.
    files = engine.files(state)
    try:
        before, context = load_input(engine, state, spec, step.name, files=files)
    except (CheckpointError, StepError) as exc:  # damaged or conflicting input: final
        return fail_step(engine, doc_id, step, attempt, f"cannot load the step's input: {exc}")
    except Exception as exc:  # a storage hiccup: another attempt may well succeed
        return handle_step_error(engine, doc_id, step, attempt, exc)

    with Heartbeat(engine, doc_id, step.name, attempt) as heartbeat:
        try:
            with current_step.bound(
                lambda ctx: save_step_progress(engine, doc_id, state, spec, step.name, attempt,
                                               before, context if ctx is None else ctx,
                                               files=files)
            ):  # fmt: skip
                result = step.function(
                    context, **current_step.step_kwargs(step.function, heartbeat.should_stop)
                )
        except Exception as exc:
            return handle_step_error(engine, doc_id, step, attempt, exc)
    if heartbeat.lost:
        logger.warning("lease lost while running: output discarded", extra=fields)
        return Outcome.done("lease lost; output discarded")

    if isinstance(result, dict):
        context.update(result)
    elif result is not None:
        context[f"{step.name}_result"] = result
    try:
        manifest, size, keys = files.write_step_output(
            step=step.name, attempt=attempt, step_fingerprint=spec.step_fingerprints[step.name],
            before=before, context=context,
        )  # fmt: skip
    except EncodingError as exc:
        return fail_step(engine, doc_id, step, attempt, str(exc))
    except Exception as exc:
        return handle_step_error(engine, doc_id, step, attempt, exc)

    try:
        state, commit = commit_step(engine, doc_id, spec, step.name, attempt, manifest, size, keys)
    except ContentionError as exc:
        # The lease is still ours: the redelivery finds the step running and, once the
        # lease expires, runs it again under a new attempt; this manifest stays unused.
        return Outcome.retry_later(str(exc))
    if not commit.committed:
        logger.warning("stale attempt: commit refused, output discarded", extra=fields)
        return Outcome.done("stale attempt")
    logger.info(f"step {step.name} committed ({size} bytes)", extra=fields)
    if commit.run_status == RunStatus.COMPLETED:
        _finish_run(engine, state)
    engine.publish_steps(state, commit.publish)
    return Outcome.done(f"committed; published {commit.publish}")


# -- stages --------------------------------------------------------------------------------


def claim_step(
    engine: Engine, doc_id: str, spec: PipelineSpec, step: StepSpec
) -> tuple[RunState, Claim]:
    now = time.time()
    lease = engine.settings.lease_seconds

    def change(state: RunState) -> Claim:
        if state.finished:
            raise Unchanged(Claim("finished"))
        if state.cancel_requested:
            apply_cancel(state, now)
            return Claim("finished")
        record = state.steps[step.name]
        if record.status == StepStatus.COMPLETED:
            raise Unchanged(
                Claim("completed", republish=_queued_successors(state, spec, step.name))
            )
        if record.status in (StepStatus.ERROR, StepStatus.CANCELLED):
            raise Unchanged(Claim("finished"))
        if record.status == StepStatus.RUNNING and (record.lease_expires or 0) > now:
            raise Unchanged(Claim("busy"))
        if not all(state.steps[d].status == StepStatus.COMPLETED for d in step.dependencies):
            raise Unchanged(Claim("not_ready"))
        base = record.attempt_base
        if record.attempt - base >= max_attempts(step):
            reason = (
                f"step {step.name} gave up after {record.attempt - base} attempts "
                f"({record.failures} failed with an error; the others lost their lease: "
                "the worker crashed or timed out)"
            )
            _fail(state, step.name, reason, now)
            return Claim("exhausted")
        record.attempt += 1
        record.status = StepStatus.RUNNING
        record.lease_owner = engine.worker_id
        record.lease_expires = now + lease
        record.started_at = now
        record.error = None
        return Claim("claimed", attempt=record.attempt)

    return engine.runs.mutate(doc_id, change)


def load_input(
    engine: Engine, state: RunState, spec: PipelineSpec, step: str, *, files: RunFiles | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The step's input as encoded entries (to diff against) and as a decoded context.

    Pass the ``files`` the step's output will be written with, so that its blob store
    knows the input's blobs are stored.
    """
    files = files or engine.files(state)
    before = files.input_entries(state, spec, step)
    progress = state.steps[step].progress_manifest
    entries = dict(before)
    if progress:
        apply_outputs(entries, files.read_manifest(progress))
    return before, files.decode(entries)


def save_step_progress(
    engine: Engine,
    doc_id: str,
    state: RunState,
    spec: PipelineSpec,
    step: str,
    attempt: int,
    before: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    files: RunFiles | None = None,
) -> bool:
    """Store the running step's context so that its next attempt starts from it."""
    files = files or engine.files(state)
    name, _size, _keys = files.write_step_output(
        step=step, attempt=attempt, step_fingerprint=spec.step_fingerprints[step],
        before=before, context=context, label=f"progress-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip

    def change(current: RunState) -> bool:
        record = current.steps[step]
        if record.lease_owner != engine.worker_id or record.attempt != attempt:
            raise Unchanged(False)
        record.progress_manifest = name
        return True

    try:
        return engine.runs.mutate(doc_id, change)[1]
    except ContentionError:
        return False


def commit_step(
    engine: Engine,
    doc_id: str,
    spec: PipelineSpec,
    step: str,
    attempt: int,
    manifest: str,
    size: int,
    keys: list[str],
) -> tuple[RunState, Commit]:
    now = time.time()

    def change(state: RunState) -> Commit:
        record = state.steps[step]
        if (
            record.lease_owner != engine.worker_id
            or record.attempt != attempt
            or record.status != StepStatus.RUNNING
        ):
            raise Unchanged(Commit(committed=False))
        record.status = StepStatus.COMPLETED
        record.manifest = manifest
        record.checkpoint_bytes = size
        record.output_keys = keys
        record.finished_at = now
        record.commits += 1
        record.lease_owner = None
        record.lease_expires = None
        record.progress_manifest = None
        if state.cancel_requested or state.status == RunStatus.CANCELLED:
            apply_cancel(state, now)
            return Commit(committed=True, run_status=state.status)
        ready = [
            s
            for s in spec.successors(step)
            if state.steps[s].status == StepStatus.NOT_STARTED
            and all(
                state.steps[d].status == StepStatus.COMPLETED for d in spec.steps[s].dependencies
            )
        ]
        for s in ready:
            state.steps[s].status = StepStatus.QUEUED
            state.steps[s].queued_at = now
        if all(r.status == StepStatus.COMPLETED for r in state.steps.values()):
            state.status = RunStatus.COMPLETED
            state.finished_at = now
        return Commit(committed=True, publish=ready, run_status=state.status)

    return engine.runs.mutate(doc_id, change)


def handle_step_error(
    engine: Engine, doc_id: str, step: StepSpec, attempt: int, exc: BaseException
) -> Outcome:
    message = f"{type(exc).__name__}: {exc}"
    retryable = not (isinstance(exc, StepError) and not exc.retryable)
    now = time.time()

    def change(state: RunState) -> str:
        record = state.steps[step.name]
        if record.lease_owner != engine.worker_id or record.attempt != attempt:
            raise Unchanged("stale")
        record.failures += 1
        record.error = message
        if not retryable or record.failures > step.retries:
            _fail(state, step.name, f"step {step.name} failed: {message}", now)
            return "failed"
        record.status = StepStatus.QUEUED
        record.lease_owner = None
        record.lease_expires = None
        record.queued_at = now
        return "retry"

    logger.warning(
        f"step {step.name} raised {message}",
        exc_info=exc,
        extra=log_fields(None, step=step.name, attempt=attempt),
    )
    try:
        _state, verdict = engine.runs.mutate(doc_id, change)
    except ContentionError as err:
        return Outcome.retry_later(str(err))
    if verdict == "retry":
        return Outcome.retry_later(f"retryable error: {message}")
    return Outcome.done(f"step {verdict}: {message}")


def fail_step(engine: Engine, doc_id: str, step: StepSpec, attempt: int, reason: str) -> Outcome:
    """Fail the step and its run at once (a non-retryable problem)."""
    now = time.time()

    def change(state: RunState) -> None:
        record = state.steps[step.name]
        if record.lease_owner != engine.worker_id or record.attempt != attempt:
            raise Unchanged(None)
        _fail(state, step.name, f"step {step.name} failed: {reason}", now)

    logger.error(
        f"step {step.name} failed: {reason}",
        extra=log_fields(None, step=step.name, attempt=attempt),
    )
    try:
        engine.runs.mutate(doc_id, change)
    except ContentionError as err:
        return Outcome.retry_later(str(err))
    return Outcome.done(f"failed: {reason}")


# -- helpers -------------------------------------------------------------------------------


def _fail(state: RunState, step: str, reason: str, now: float) -> None:
    record = state.steps[step]
    record.status = StepStatus.ERROR
    record.error = reason
    record.finished_at = now
    record.lease_owner = None
    record.lease_expires = None
    state.status = RunStatus.ERROR
    state.error = reason
    state.finished_at = now


def _queued_successors(state: RunState, spec: PipelineSpec, step: str) -> list[str]:
    return [s for s in spec.successors(step) if state.steps[s].status == StepStatus.QUEUED]


def _bad_message(engine: Engine, message: StepMessage, reason: str) -> Outcome:
    """Log a message no retry can fix, record the reason on its run if it has one, ack."""
    logger.error(f"bad step message, acked: {reason}", extra=log_fields(message))
    engine.record_rejection(message.tenant_id, message.pipeline, message.run_id, reason)
    return Outcome.done(f"bad message: {reason}")


def _finish_run(engine: Engine, state: RunState) -> None:
    pipeline = engine.registry.get(state.pipeline)
    if pipeline.options.cleanup_on_success:
        try:
            engine.files(state).delete()
        except Exception:
            logger.warning(
                "cleanup of a completed run failed", exc_info=True, extra=log_fields(state)
            )


class Heartbeat:
    """Renews the lease while the step runs, only while this worker still owns it.

    ``lost`` turns true when another worker took the step over (our lease had expired);
    ``should_stop()`` turns true then, and when the run's cancellation was requested.
    """

    def __init__(self, engine: Engine, doc_id: str, step: str, attempt: int) -> None:
        self.engine = engine
        self.doc_id = doc_id
        self.step = step
        self.attempt = attempt
        self.lost = False
        self.cancelled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{step}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def should_stop(self) -> bool:
        return self.lost or self.cancelled

    def _loop(self) -> None:
        interval = self.engine.settings.heartbeat_seconds
        while not self._stop.wait(interval):
            try:
                self.beat()
            except Exception:
                logger.warning("heartbeat failed; will retry", exc_info=True)

    def beat(self) -> None:
        now = time.time()

        def change(state: RunState) -> bool:
            record = state.steps[self.step]
            if record.lease_owner != self.engine.worker_id or record.attempt != self.attempt:
                raise Unchanged(False)
            record.lease_expires = now + self.engine.settings.lease_seconds
            self.cancelled = state.cancel_requested
            return True

        _state, owned = self.engine.runs.mutate(self.doc_id, change)
        if not owned:
            self.lost = True
            self._stop.set()
