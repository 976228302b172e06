"""The Cloud Run function entry points (functions-framework, CloudEvent signature).

This file is also a functions-framework source of its own (``--source`` this file), as the
local stack runs it; a deployment bundle's ``main.py`` (:data:`MAIN_PY`) re-exports it.

Deployed from ``functions/main.py``: ``start_run`` consumes start messages, ``run_step``
is deployed once per step (``RESUMABLE_STEP`` names it), ``dead_letter`` consumes the
dead-letter topic, ``watchdog`` is triggered on a schedule.

Answers follow Pub/Sub push semantics: returning normally acks (2xx); "retry later"
raises an HTTP 503, so Pub/Sub redelivers with the subscription's backoff. A bad message
is logged with its reason and acked: no retry can fix it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from datetime import UTC, datetime

import functions_framework
from cloudevents.http import CloudEvent
from werkzeug.exceptions import ServiceUnavailable

from resumable import tracing
from resumable._defaults import DEFAULT_TENANT
from resumable._log import configure_cloud_logging, logger
from resumable.checkpoint._dtypes import numpy_or_none
from resumable.errors import (
    BadMessageError,
    ContentionError,
    PreconditionFailedError,
    RunDocumentError,
)
from resumable.serverless._control import collect_garbage, record_dead_letter, watchdog_sweep
from resumable.serverless._control import start_run as start_run_now
from resumable.serverless._engine import Engine
from resumable.serverless._messages import StepMessage, parse_start, parse_step, pubsub_payload
from resumable.serverless._run_state import RunState
from resumable.serverless._settings import Settings
from resumable.serverless._worker import handle_step

MAIN_PY = '''"""Deployable entry points: ``functions-framework --target <name> --source main.py``.

Targets: ``start_run``, ``run_step`` (one deployment per step, ``RESUMABLE_STEP`` set),
``dead_letter``, ``watchdog``. Configuration comes from the environment (see
``resumable.serverless.Settings``).
"""

from resumable.serverless.entrypoints import dead_letter, run_step, start_run, watchdog

__all__ = ["dead_letter", "run_step", "start_run", "watchdog"]
'''
"""The ``main.py`` of a deployment (and of the repository's ``functions/``)."""

_engine: Engine | None = None
_engine_lock = threading.Lock()


def engine() -> Engine:
    """The process's engine, built on first use from the environment (then reused)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            configure_cloud_logging()
            _engine = Engine.from_settings(Settings.from_env())
            tracing.configure(_engine.settings.project)
        return _engine


def warm_up() -> None:
    """Build the engine and get the instance ready to serve: the pipelines imported, a
    connection open to each service (calls that change nothing). Run in the
    background once the server has forked its worker, so that a new instance's first
    delivery finds it done instead of paying for it."""
    try:
        ready = engine()
        ready.registry.all()
        numpy_or_none()  # the codec's (its import starts threads: after the fork)
        # A write no object can satisfy (generation 1 of an object that does not exist)
        # takes the whole upload path, a checkpoint write's first-use cost, and stores
        # nothing.
        with contextlib.suppress(PreconditionFailedError):
            ready.store.write("warm-up/none", b"", if_generation_match=1)
        _warm_run_documents(ready)
        client = getattr(ready.publisher, "client", None)
        if client is not None:  # any answer opens the channel: not found, not allowed...
            with contextlib.suppress(Exception):
                client.get_topic(topic=client.topic_path(ready.settings.project, "warm-up"))
    except Exception as exc:  # the first request builds (or reports) what is missing
        logger.warning(f"warm-up of this instance failed: {type(exc).__name__}: {exc}")


def _warm_run_documents(ready: Engine) -> None:
    """A read and a conditional write of a run document that does not exist: the claim's
    and the commit's paths, refused, nothing written."""
    doc_id = ready.doc_id("warm-up", "warm-up", "warm-up")
    ready.runs.get(doc_id)
    backend = getattr(ready.runs, "backend", None)
    if backend is not None:
        now = datetime.now(UTC)
        probe = RunState(
            run_id="warm-up",
            pipeline="warm-up",
            fingerprint="",
            params_manifest="",
            params_hash="",
            created_at=now.timestamp(),
            updated_at=now.timestamp(),
            steps={},
        )
        backend.write_if(doc_id, probe, now)


def _warm_up_after_fork() -> None:
    # Clients (gRPC channels, HTTP pools, threads) are built in the server's worker, never
    # in its parent before the fork; nor in a process a step forks (its parent is not the
    # server's).
    if os.getppid() == _SERVER_PID:
        threading.Thread(target=warm_up, name="resumable-warm-up", daemon=True).start()


def _served() -> bool:
    """Whether this process is a functions-framework server (not a test or a tool that
    imported the module): it forks its worker, which then warms up."""
    program = sys.argv[0] if sys.argv else ""
    return os.environ.get("RESUMABLE_WARM_UP") == "1" or (
        os.path.basename(program) == "functions-framework"
        or program.endswith(os.path.join("functions_framework", "__main__.py"))
    )


_SERVER_PID = os.getpid()
if _served() and hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_warm_up_after_fork)
    with contextlib.suppress(ImportError):  # imports are fork-safe: done once, in the parent
        import google.cloud.firestore
        import google.cloud.pubsub_v1
        import google.cloud.storage  # noqa: F401


def set_engine(value: Engine | None) -> None:
    """Use another engine (tests wire in-memory services this way)."""
    global _engine
    with _engine_lock:
        _engine = value


def _step_message(event: CloudEvent, complaint: str) -> tuple[StepMessage, dict[str, str]] | None:
    """The step message and attributes of a push event; ``None`` (logged) if it is bad."""
    try:
        payload = pubsub_payload(event.get_data())
        return parse_step(payload.data), payload.attributes
    except BadMessageError as exc:
        logger.error(f"{complaint}: {exc.reason}")
        return None


@functions_framework.cloud_event
def start_run(event: CloudEvent) -> None:
    """Start a run from ``{"pipeline", "params", "run_id"?, "tenant_id"?}``."""
    try:
        payload = pubsub_payload(event.get_data())
        message = parse_start(payload.data)
        run_engine = engine()  # before the span: the first call sets tracing up
        with tracing.run_span("start run", tracing.started_run(message, payload.message_id)):
            started = start_run_now(run_engine, message, message_id=payload.message_id)
    except BadMessageError as exc:
        logger.error(f"bad start message, acked: {exc.reason}", extra={"run_id": exc.run_id})
        if exc.run_id and exc.pipeline:
            engine().record_rejection(
                exc.tenant_id or DEFAULT_TENANT, exc.pipeline, exc.run_id, exc.reason
            )
        return
    logger.info(
        "start message handled",
        extra={"run_id": started.state.run_id, "pipeline": started.state.pipeline},
    )


@functions_framework.cloud_event
def run_step(event: CloudEvent) -> None:
    """Run one step of a run (the step protocol in ``resumable.serverless._worker``)."""
    decoded = _step_message(event, "bad step message, acked")
    if decoded is None:
        return
    message, attributes = decoded
    step_engine = engine()  # before the span: the first call sets tracing up
    with tracing.run_span(f"step {message.step}", message, attributes, step=message.step) as span:
        outcome = handle_step(step_engine, message)
        span.set(generation=message.generation, outcome=outcome.reason, acked=outcome.ack)
    if not outcome.ack:
        raise ServiceUnavailable(description=f"retry later: {outcome.reason}")


@functions_framework.cloud_event
def dead_letter(event: CloudEvent) -> None:
    """A message that exhausted its delivery attempts. A step message fails its run with
    the reason; a start message is noted on its run if it names one that exists (the
    watchdog carries on a run whose start was interrupted), and logged otherwise."""
    try:
        payload = pubsub_payload(event.get_data())
    except BadMessageError as exc:
        logger.error(f"dead-lettered event that is not a Pub/Sub message: {exc.reason}")
        return
    data = payload.data
    count = payload.attributes.get("CloudPubSubDeadLetterSourceDeliveryCount")
    try:
        message = parse_step(data)
    except BadMessageError as not_a_step:
        _dead_start(data, count, not_a_step.reason)
        return
    try:
        record_dead_letter(engine(), message, count)
    except ContentionError as exc:  # transient: the dead-letter subscription redelivers
        raise ServiceUnavailable(description=f"retry later: {exc}") from exc
    except RunDocumentError as exc:  # no retry can help: logged, acked
        logger.error(f"dead letter not recorded: {exc}", extra={"run_id": message.run_id})


def _dead_start(data: bytes, count: str | None, not_a_step: str) -> None:
    try:
        message = parse_start(data)
    except BadMessageError:
        logger.error(
            f"dead-lettered message that is neither a step nor a start message: {not_a_step}"
        )
        return
    reason = f"the start message exhausted its delivery attempts ({count or '?'} deliveries)"
    tenant = message.tenant_id or DEFAULT_TENANT
    noted = message.run_id is not None and engine().record_rejection(
        tenant, message.pipeline, message.run_id, reason
    )
    where = "noted on the run" if noted else "no run document to note it on"
    logger.error(
        f"dead letter: {reason}; {where}",
        extra={"run_id": message.run_id, "pipeline": message.pipeline, "tenant_id": tenant},
    )


@functions_framework.cloud_event
def watchdog(event: CloudEvent) -> None:
    """Keep running runs moving (re-publish lost steps, finish stuck runs) and delete the
    checkpoints of runs finished longer ago than the retention (scheduled)."""
    republished = watchdog_sweep(engine())
    expired = collect_garbage(engine())
    logger.info(
        f"watchdog swept: {sum(len(v) for v in republished.values())} step(s) re-published, "
        f"{len(expired)} expired run(s) cleaned"
    )
