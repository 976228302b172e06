"""An engine on in-memory services, and a Pub/Sub stand-in that delivers what was published.

The protocol's unit tests run on these: the real services add nothing to the logic under
test there; the emulator-backed tests exercise the same code on the real ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resumable import Pipeline
from resumable.serverless._control import start_run
from resumable.serverless._engine import Engine, PipelineRegistry
from resumable.serverless._messages import StartMessage, StepMessage, encode, parse_step
from resumable.serverless._publisher import MemoryPublisher
from resumable.serverless._run_state import Decision, MemoryRunStateStore, RunState
from resumable.serverless._runtime import SYSTEM, Runtime
from resumable.serverless._settings import Settings
from resumable.serverless._worker import Outcome, StepAttempt, handle_step
from resumable.storage import MemoryStore


def make_engine(
    *pipelines: Pipeline, lease_seconds: float = 30.0, runtime: Runtime = SYSTEM
) -> Engine:
    settings = Settings(
        project="test-project",
        storage="memory://",
        lease_seconds=lease_seconds,
        heartbeat_seconds=lease_seconds / 4,
        watchdog_grace_seconds=2 * lease_seconds,
    )
    return Engine(
        settings=settings,
        registry=PipelineRegistry(pipelines=pipelines),
        runs=MemoryRunStateStore(runtime=runtime),
        store=MemoryStore(),
        publisher=MemoryPublisher(),
        runtime=runtime,
    )


def worker_like(engine: Engine) -> Engine:
    """Another worker instance sharing the same services (a different lease owner)."""
    return Engine(
        settings=engine.settings,
        registry=engine.registry,
        runs=engine.runs,
        store=engine.store,
        publisher=engine.publisher,
        maps=engine.maps,
        runtime=engine.runtime,
    )


def published(engine: Engine) -> list[StepMessage]:
    assert isinstance(engine.publisher, MemoryPublisher)
    return [parse_step(m.data) for m in engine.publisher.messages]


def take_messages(engine: Engine) -> list[StepMessage]:
    assert isinstance(engine.publisher, MemoryPublisher)
    messages = [parse_step(m.data) for m in engine.publisher.messages]
    engine.publisher.messages.clear()
    return messages


def drain(
    engine: Engine,
    *,
    limit: int = 200,
    on_outcome: Callable[[StepMessage, Outcome], None] | None = None,
) -> list[tuple[StepMessage, Outcome]]:
    """Deliver published messages until none are left; non-acked ones are redelivered."""
    log: list[tuple[StepMessage, Outcome]] = []
    pending = take_messages(engine)
    while pending and len(log) < limit:
        message = pending.pop(0)
        outcome = handle_step(engine, message)
        log.append((message, outcome))
        if on_outcome:
            on_outcome(message, outcome)
        if not outcome.ack:
            pending.append(message)
        pending.extend(take_messages(engine))
    for message in pending:  # stopped by the limit: leave them "in flight" for the caller
        engine.publisher.publish("requeued", encode(message))
    return log


def start(engine: Engine, pipeline: str, params: dict[str, Any], run_id: str = "run-1") -> RunState:
    return start_run(engine, StartMessage(pipeline=pipeline, params=params, run_id=run_id)).state


def state_of(engine: Engine, pipeline: str, run_id: str = "run-1") -> RunState:
    state = engine.runs.get(engine.doc_id("default", pipeline, run_id))
    assert state is not None
    return state


def claim(engine: Engine, pipeline: str, step: str, run_id: str = "run-1") -> StepAttempt:
    """Claim ``step`` as a worker would, and stop there (as if the worker then died)."""
    message = StepMessage(pipeline=pipeline, run_id=run_id, step=step)
    attempt = StepAttempt(engine, engine.registry.get(pipeline), message)
    claimed = attempt.claim()
    assert claimed.kind == "claimed", claimed
    attempt.attempt = claimed.attempt
    return attempt


def expire_lease(engine: Engine, pipeline: str, step: str, run_id: str = "run-1") -> None:
    """Move the step's lease into the past: what its worker's silence for the lease time
    does, without a test waiting for the clock."""

    def change(state: RunState) -> Decision[None]:
        new = state.model_copy(deep=True)
        new.steps[step].lease_expires = engine.runtime.now() - 1
        return Decision(None, new)

    engine.runs.mutate(engine.doc_id("default", pipeline, run_id), change)
