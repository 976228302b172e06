"""Starting, cancelling, resuming and inspecting serverless runs.

These are what the ``start_run``, ``dead_letter`` and ``watchdog`` functions and the CLI
do to a run document. Each is safe to repeat: the same start message twice makes one
run; a cancel or resume applied twice changes nothing more.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from .engine import Engine, log_fields
from .errors import ResumableError
from .ids import new_run_id
from .log import logger
from .messages import BadMessageError, StartMessage, StepMessage
from .runstate import RunState, StepState, Unchanged, apply_cancel
from .status import RunStatus, StepStatus
from .step_outputs import RunFiles


class RunControlError(ResumableError):
    """A control request that does not apply to the run as it is (with the reason)."""


@dataclass(frozen=True)
class Started:
    state: RunState
    created: bool
    published: list[str]


def start_run(engine: Engine, message: StartMessage, *, message_id: str | None = None) -> Started:
    """Create the run document and publish the root steps.

    Without a ``run_id``, the run id derives from the Pub/Sub message id, so a redelivered
    start message finds the run it created. A run id already used with the same params
    re-publishes root steps that were never claimed (healing a crash right after the
    create) and starts nothing new; with other params it is refused.
    """
    pipeline = engine.registry.get(message.pipeline)
    spec = pipeline.spec
    run_id = message.run_id or (f"run-{message_id}" if message_id else new_run_id())
    tenant = message.tenant_id or "default"
    files = RunFiles(engine.store, tenant, spec.name, run_id)
    params_manifest, params_hash = files.write_params(message.params)
    now = time.time()
    roots = spec.roots()
    state = RunState(
        run_id=run_id,
        pipeline=spec.name,
        tenant_id=tenant,
        status=RunStatus.RUNNING,
        fingerprint=spec.fingerprint,
        step_fingerprints=dict(spec.step_fingerprints),
        params_manifest=params_manifest,
        params_hash=params_hash,
        created_at=now,
        updated_at=now,
        steps={
            name: StepState(
                status=StepStatus.QUEUED if name in roots else StepStatus.NOT_STARTED,
                queued_at=now if name in roots else None,
            )
            for name in spec.order
        },
    )
    doc_id = engine.doc_id(tenant, spec.name, run_id)
    if engine.runs.create(doc_id, state):
        logger.info("run started", extra=log_fields(state))
        return Started(state, True, engine.publish_steps(state, roots))
    existing = engine.runs.get(doc_id)
    if existing is None:  # deleted in between: extremely unlikely, let Pub/Sub retry
        raise RunControlError(f"run {run_id!r} vanished while being started")
    if existing.params_hash != params_hash or existing.fingerprint != spec.fingerprint:
        raise BadMessageError(
            f"run {run_id!r} already exists with other params or another pipeline version; "
            "start message ignored (use a new run id)",
            run_id=run_id,
            pipeline=spec.name,
            tenant_id=tenant,
        )
    never_claimed = [
        s
        for s in roots
        if existing.steps[s].status == StepStatus.QUEUED and existing.steps[s].attempt == 0
    ]
    return Started(existing, False, engine.publish_steps(existing, never_claimed))


def get_run(
    engine: Engine, run_id: str, *, pipeline: str | None = None, tenant_id: str = "default"
) -> RunState:
    """The run document; without ``pipeline``, the one run with this id (any pipeline)."""
    if pipeline:
        state = engine.runs.get(engine.doc_id(tenant_id, pipeline, run_id))
        if state is None:
            raise RunControlError(
                f"no run {run_id!r} of pipeline {pipeline!r} (tenant {tenant_id!r})"
            )
        return state
    for candidate in engine.registry.all():
        state = engine.runs.get(engine.doc_id(tenant_id, candidate.pipeline_name, run_id))
        if state is not None:
            return state
    raise RunControlError(f"no run {run_id!r} in tenant {tenant_id!r}")


def cancel_run(engine: Engine, state: RunState) -> RunState:
    """Stop the run before its next step. A running step finishes (its output is kept)."""
    doc_id = engine.doc_id(state.tenant_id, state.pipeline, state.run_id)
    now = time.time()

    def change(current: RunState) -> None:
        if current.finished:
            raise Unchanged(None)
        apply_cancel(current, now)

    return engine.runs.mutate(doc_id, change)[0]


def resume_run(
    engine: Engine, state: RunState, *, from_step: str | None = None
) -> tuple[RunState, list[str]]:
    """Continue a failed or cancelled run from its unfinished steps.

    With ``from_step``, roll back first: that step and every step after it are
    un-completed, so the run continues from that step's input checkpoint (the outputs of
    its ancestors). Attempt numbers keep growing, so a worker still running an old
    attempt can never commit.
    """
    spec = engine.registry.get(state.pipeline).spec
    if from_step is not None and from_step not in spec.steps:
        raise RunControlError(f"pipeline {spec.name!r} has no step {from_step!r}")
    doc_id = engine.doc_id(state.tenant_id, state.pipeline, state.run_id)
    now = time.time()

    def change(current: RunState) -> list[str]:
        if current.fingerprint != spec.fingerprint:
            raise RunControlError(
                f"run {current.run_id!r} was started by another version of pipeline "
                f"{spec.name!r}; it cannot be resumed by this one"
            )
        if any(r.status == StepStatus.RUNNING for r in current.steps.values()):
            raise RunControlError(
                f"run {current.run_id!r} has a step running; cancel it first or wait"
            )
        if current.status == RunStatus.COMPLETED and from_step is None:
            raise RunControlError(
                f"run {current.run_id!r} is completed; use --from-step to re-run part of it"
            )
        reset = set()
        if from_step is not None:
            reset = {from_step, *spec.descendants(from_step)}
        for name in spec.order:
            record = current.steps[name]
            if name in reset or record.status != StepStatus.COMPLETED:
                record.status = StepStatus.NOT_STARTED
                record.manifest = None
                record.progress_manifest = None
                record.failures = 0
                record.error = None
                record.attempt_base = record.attempt
                record.lease_owner = None
                record.lease_expires = None
        ready = spec.ready_steps(
            n for n in spec.order if current.steps[n].status == StepStatus.COMPLETED
        )
        for name in ready:
            current.steps[name].status = StepStatus.QUEUED
            current.steps[name].queued_at = now
        current.status = RunStatus.RUNNING
        current.cancel_requested = False
        current.error = None
        current.finished_at = None
        return ready

    new_state, ready = engine.runs.mutate(doc_id, change)
    return new_state, engine.publish_steps(new_state, ready)


def record_dead_letter(engine: Engine, message: StepMessage, delivery_count: str | None) -> str:
    """A step message exhausted its delivery attempts: fail its run, unless the step has
    completed or is still making progress under a live lease (then the watchdog covers)."""
    doc_id = engine.doc_id(message.tenant_id, message.pipeline, message.run_id)
    now = time.time()

    def change(state: RunState) -> str:
        if state.finished:
            raise Unchanged("run already finished")
        record = state.steps.get(message.step)
        if record is None:
            reason = f"dead-lettered message names unknown step {message.step!r}"
        elif record.status == StepStatus.COMPLETED:
            raise Unchanged("step already completed")
        elif record.status == StepStatus.RUNNING and (record.lease_expires or 0) > now:
            raise Unchanged("step still running under a live lease")
        else:
            reason = (
                f"the message for step {message.step} exhausted its delivery attempts "
                f"({delivery_count or '?'} deliveries); last error: {record.error or 'none'}"
            )
            record.status = StepStatus.ERROR
            record.error = reason
            record.finished_at = now
        state.status = RunStatus.ERROR
        state.error = reason
        state.finished_at = now
        return reason

    _state, verdict = engine.runs.mutate(doc_id, change)
    logger.log(logging.ERROR, f"dead letter: {verdict}", extra=log_fields(message))
    return verdict


def watchdog_sweep(engine: Engine, *, now: float | None = None) -> dict[str, list[str]]:
    """Re-publish steps whose lease expired or whose queued message seems lost.

    Returns run id → steps re-published. Duplicates this may cause are harmless: the
    claim lets only one worker run a step.
    """
    now = time.time() if now is None else now
    grace = engine.settings.watchdog_grace_seconds
    republished: dict[str, list[str]] = {}
    for state in engine.runs.query(status=RunStatus.RUNNING, limit=1000):
        stuck = []
        for name, record in state.steps.items():
            expired = record.status == StepStatus.RUNNING and (record.lease_expires or 0) < now
            lost = record.status == StepStatus.QUEUED and (record.queued_at or now) < now - grace
            if expired or lost:
                stuck.append(name)
        if state.cancel_requested:
            cancel_run(engine, state)  # finishes it once its running steps are done or lost
            continue
        if stuck:
            republished[state.run_id] = engine.publish_steps(state, stuck)
            logger.warning(f"watchdog re-published {stuck}", extra=log_fields(state))
    return republished


def describe(state: RunState) -> dict[str, Any]:
    """The status of a run as plain JSON (``resumable status --json``)."""

    def iso(t: float | None) -> str | None:
        if t is None:
            return None
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"

    return {
        "run_id": state.run_id,
        "pipeline": state.pipeline,
        "tenant_id": state.tenant_id,
        "status": state.status,
        "error": state.error,
        "created_at": iso(state.created_at),
        "finished_at": iso(state.finished_at),
        "cancel_requested": state.cancel_requested,
        "rejected_messages": list(state.rejected_messages),
        "steps": {
            name: {
                "status": r.status,
                "attempt": r.attempt,
                "started_at": iso(r.started_at),
                "finished_at": iso(r.finished_at),
                "checkpoint_bytes": r.checkpoint_bytes,
                "error": r.error,
            }
            for name, r in state.steps.items()
        },
    }
