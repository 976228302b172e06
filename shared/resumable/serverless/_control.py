"""Starting, cancelling, resuming and inspecting serverless runs, and the watchdog.

These are what the ``start_run``, ``dead_letter`` and ``watchdog`` functions and the CLI
do to a run document, each through a transition of ``resumable.serverless.transitions``. Each is
safe to repeat: the same start message twice makes one run; a cancel or resume applied
twice changes nothing more.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from resumable._defaults import DEFAULT_TENANT
from resumable._ids import new_run_id
from resumable._log import logger
from resumable.errors import BadMessageError, RunControlError, RunNotFoundError
from resumable.serverless import transitions
from resumable.serverless._engine import Engine, log_fields
from resumable.serverless._map_items import record_item_dead_letter
from resumable.serverless._messages import StartMessage, StepMessage
from resumable.serverless._run_files import RunFiles
from resumable.serverless._run_state import RunState, StepState
from resumable.status import RunStatus, StepStatus


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
    create) and starts nothing new; with other params it is refused. Nothing is written
    to the run's storage unless the run is new.
    """
    pipeline = engine.registry.get(message.pipeline)
    spec = pipeline.spec
    run_id = message.run_id or (f"run-{message_id}" if message_id else new_run_id())
    tenant = message.tenant_id or DEFAULT_TENANT
    doc_id = engine.doc_id(tenant, spec.name, run_id)
    files = RunFiles(engine.store, tenant, spec.name, run_id)
    existing = engine.runs.get(doc_id)
    if existing is None:
        params_manifest, params_hash = files.write_params(message.params)
        state = _new_run(engine, spec, tenant, run_id, params_manifest, params_hash)
        if engine.runs.create(doc_id, state):
            logger.info("run started", extra=log_fields(state))
            return Started(state, True, engine.publish_steps(state, spec.roots()))
        existing = engine.runs.get(doc_id)
        if existing is None:  # deleted in between: extremely unlikely, let Pub/Sub retry
            raise RunControlError(f"run {run_id!r} vanished while being started")
    _params_manifest, params_hash = files.params_manifest(message.params)
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
        for s in spec.roots()
        if existing.steps[s].status == StepStatus.QUEUED and existing.steps[s].attempt == 0
    ]
    return Started(existing, False, engine.publish_steps(existing, never_claimed))


def _new_run(
    engine: Engine, spec: Any, tenant: str, run_id: str, params_manifest: str, params_hash: str
) -> RunState:
    now = engine.runtime.now()
    roots = spec.roots()
    return RunState(
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


def get_run(
    engine: Engine, run_id: str, *, pipeline: str | None = None, tenant_id: str = DEFAULT_TENANT
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


def _doc_id(engine: Engine, state: RunState) -> str:
    return engine.doc_id(state.tenant_id, state.pipeline, state.run_id)


def cancel_run(engine: Engine, state: RunState) -> RunState:
    """Stop the run before its next step. A running step finishes (its output is kept)."""
    now = engine.runtime.now()
    return engine.runs.mutate(_doc_id(engine, state), lambda s: transitions.cancel(s, now=now))[0]


def resume_run(
    engine: Engine, state: RunState, *, from_step: str | None = None
) -> tuple[RunState, list[str]]:
    """Continue a failed, cancelled or stuck run from its unfinished steps (which keep
    the progress they saved); returns the run and the steps published.

    With ``from_step``, roll back first: that step and every step after it are
    un-completed, so the run continues from that step's input checkpoint (the outputs of
    its ancestors). Raises :class:`RunControlError` when the run cannot be resumed.
    """
    spec = engine.registry.get(state.pipeline).spec
    if from_step is not None and from_step not in spec.steps:
        raise RunControlError(f"pipeline {spec.name!r} has no step {from_step!r}")
    now = engine.runtime.now()
    new_state, resumption = engine.runs.mutate(
        _doc_id(engine, state),
        lambda s: transitions.resume(s, spec, from_step=from_step, now=now),
    )
    if resumption.refused is not None:
        raise RunControlError(resumption.refused)
    return new_state, engine.publish_steps(new_state, resumption.queued)


def record_dead_letter(engine: Engine, message: StepMessage, delivery_count: str | None) -> str:
    """A step message exhausted its delivery attempts: fail its run, unless the message
    is stale or its step is still making progress under a live lease (the watchdog
    covers that). Returns what was decided, for the log."""
    if message.item is not None and message.map_id is not None:
        try:
            spec = engine.registry.get(message.pipeline).spec
        except BadMessageError as exc:
            verdict = exc.reason
        else:
            verdict = record_item_dead_letter(engine, spec, message, delivery_count)
        logger.log(logging.ERROR, f"dead letter: {verdict}", extra=log_fields(message))
        return verdict
    doc_id = engine.doc_id(message.tenant_id, message.pipeline, message.run_id)
    now = engine.runtime.now()
    try:
        _state, verdict = engine.runs.mutate(
            doc_id,
            lambda s: transitions.dead_letter(
                s,
                message.step,
                generation=message.generation,
                delivery_count=delivery_count,
                now=now,
            ),
        )
    except RunNotFoundError:
        verdict = "no such run"
    logger.log(logging.ERROR, f"dead letter: {verdict}", extra=log_fields(message))
    return verdict


def watchdog_sweep(engine: Engine, *, now: float | None = None) -> dict[str, list[str]]:
    """Keep every running run moving: re-publish steps whose lease expired or whose
    message seems lost, and finish or re-queue runs left with no step in flight.

    Every running run is visited, oldest first, page by page; a failure on one run is
    logged and does not stop the sweep. Returns run id → steps re-published. Duplicates
    this may cause are harmless: the claim lets only one worker run a step.
    """
    grace = engine.settings.watchdog_grace_seconds
    republished: dict[str, list[str]] = {}
    for found in engine.runs.scan(status=RunStatus.RUNNING):
        at = engine.runtime.now() if now is None else now
        try:
            spec = engine.registry.get(found.pipeline).spec
            state, repair = engine.runs.mutate(
                _doc_id(engine, found), partial(transitions.repair, spec=spec, now=at, grace=grace)
            )
            if repair.action:
                logger.warning(f"watchdog: {repair.action}", extra=log_fields(state))
            if repair.republish:
                republished[state.run_id] = engine.publish_steps(state, repair.republish)
                logger.warning(
                    f"watchdog re-published {list(repair.republish)}", extra=log_fields(state)
                )
        except Exception:
            logger.exception("watchdog could not repair a run", extra=log_fields(found))
    return republished


def collect_garbage(engine: Engine, *, now: float | None = None, limit: int = 200) -> list[str]:
    """Delete the checkpoints of runs that finished longer ago than the retention
    (``RESUMABLE_RUN_RETENTION_DAYS``): by finish time, so a long or resumed run never
    loses objects it still uses. Returns the run ids cleaned; the watchdog calls it on
    every sweep, ``limit`` runs at a time. The run documents stay (Firestore's TTL policy
    deletes them a day later)."""
    retention = engine.settings.retention_seconds
    if retention is None:
        return []
    cutoff = (engine.runtime.now() if now is None else now) - retention
    cleaned = []
    for found in engine.runs.finished_before(cutoff, limit=limit):
        try:
            _state, allowed = engine.runs.mutate(
                _doc_id(engine, found), partial(transitions.expire, cutoff=cutoff)
            )
            if allowed:
                engine.files(found).delete()
                engine.maps.delete_maps(_doc_id(engine, found))  # item results point there
                engine.runs.mutate(_doc_id(engine, found), transitions.files_gone)
                cleaned.append(found.run_id)
        except Exception:
            logger.exception(
                "could not delete an expired run's checkpoints", extra=log_fields(found)
            )
    return cleaned


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
        "generation": state.generation,
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
