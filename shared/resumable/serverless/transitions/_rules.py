"""The rules every transition shares: who owns a lease, when a lease is live, when a step
may run, how a step or a run fails or is cancelled, and the bounds of what is stored."""

from __future__ import annotations

from collections.abc import Iterable

from resumable.definition._spec import PipelineSpec, StepSpec
from resumable.serverless._run_state import MAX_HISTORY, AttemptSpan, RunState, StepState
from resumable.status import RunStatus, StepStatus

CRASH_ALLOWANCE = 3

MAX_ERROR_CHARS = 4000  # of an error stored on the run document; the logs keep all of it


def max_attempts(step: StepSpec) -> int:
    """How many claims a step may have in one generation of its run."""
    return step.retries + 1 + CRASH_ALLOWANCE


def bounded(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return text[:limit] + f" … [{cut} more characters in the logs]"


# -- predicates -----------------------------------------------------------------------------


def owns(record: StepState, owner: str, attempt: int) -> bool:
    """Whether ``owner`` holds the lease of ``attempt`` of a running step."""
    return (
        record.status == StepStatus.RUNNING
        and record.lease_owner == owner
        and record.attempt == attempt
    )


def lease_live(record: StepState, now: float) -> bool:
    """A running step whose worker renewed its lease recently enough."""
    return record.status == StepStatus.RUNNING and (record.lease_expires or 0) > now


def dependencies_done(state: RunState, step: StepSpec) -> bool:
    return all(state.steps[d].status == StepStatus.COMPLETED for d in step.dependencies)


def all_completed(state: RunState) -> bool:
    return all(r.status == StepStatus.COMPLETED for r in state.steps.values())


def clear_lease(record: StepState) -> None:
    record.lease_owner = None
    record.lease_expires = None


def open_span(record: StepState, now: float) -> None:
    """The attempt just claimed starts its span (a span left open lost its worker)."""
    close_span(record, min(record.lease_expires or now, now), "lost its lease")
    record.history.append(AttemptSpan(attempt=record.attempt, started_at=now))
    del record.history[:-MAX_HISTORY]


def close_span(record: StepState, now: float, outcome: str) -> None:
    """The latest attempt ended (if its span is still open)."""
    if record.history and record.history[-1].ended_at is None:
        span = record.history[-1]
        span.ended_at = max(now, span.started_at)
        span.outcome = outcome


def copy_state(state: RunState) -> RunState:
    return state.model_copy(deep=True)


def finish(state: RunState, status: RunStatus, now: float, error: str | None = None) -> None:
    state.status = status
    state.finished_at = now
    if error is not None:
        state.error = bounded(error)


def fail_step(state: RunState, step: str, reason: str, now: float) -> None:
    """The step and the run fail (a non-retryable error, or attempts exhausted)."""
    record = state.steps[step]
    close_span(record, min(record.lease_expires or now, now), "lost its lease")
    record.status = StepStatus.ERROR
    record.error = bounded(reason)
    record.finished_at = now
    clear_lease(record)
    finish(state, RunStatus.ERROR, now, reason)


def queue(state: RunState, steps: Iterable[str], now: float) -> list[str]:
    queued = []
    for name in steps:
        state.steps[name].status = StepStatus.QUEUED
        state.steps[name].queued_at = now
        queued.append(name)
    return queued


def ready_steps(state: RunState, spec: PipelineSpec) -> list[str]:
    """Steps not started whose dependencies all completed, in graph order."""
    return [
        name
        for name in spec.order
        if state.steps[name].status == StepStatus.NOT_STARTED
        and dependencies_done(state, spec.steps[name])
    ]


def apply_cancel(state: RunState, now: float) -> None:
    """Cancel what has not started (in place, on a copy the caller owns).

    A step still ``running`` under an expired lease has lost its worker: it will never
    commit, so it is cancelled too rather than waited for. The run ends once no step
    runs: ``completed`` if every step had completed, ``cancelled`` otherwise.
    """
    state.cancel_requested = True
    for record in state.steps.values():
        abandoned = record.status == StepStatus.RUNNING and not lease_live(record, now)
        if record.status in (StepStatus.QUEUED, StepStatus.NOT_STARTED) or abandoned:
            if abandoned:
                close_span(record, min(record.lease_expires or now, now), "lost its lease")
            record.status = StepStatus.CANCELLED
            clear_lease(record)
    if not any(r.status == StepStatus.RUNNING for r in state.steps.values()):
        finish(state, RunStatus.COMPLETED if all_completed(state) else RunStatus.CANCELLED, now)
