"""Transitions of one attempt of a step: claim, renew, record progress, commit, continue,
record a failure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from resumable.definition._spec import PipelineSpec, StepSpec
from resumable.serverless._run_state import Decision, RunState, StepState
from resumable.serverless.transitions._rules import (
    all_completed,
    apply_cancel,
    bounded,
    clear_lease,
    close_span,
    copy_state,
    dependencies_done,
    fail_step,
    finish,
    lease_live,
    max_attempts,
    open_span,
    owns,
    queue,
    ready_steps,
)
from resumable.status import RunStatus, StepStatus

# -- claim ----------------------------------------------------------------------------------


class ClaimKind(StrEnum):
    CLAIMED = "claimed"  # run the step under this attempt
    COMPLETED = "completed"  # done before: re-publish its queued successors, ack
    BUSY = "busy"  # another worker holds a live lease: retry later
    NOT_READY = "not_ready"  # its dependencies have not completed: ack (a stale message)
    FINISHED = "finished"  # the run or the step is over (or was just cancelled): ack
    EXHAUSTED = "exhausted"  # past the attempt limit: step and run failed, ack
    TIMED_OUT = "timed_out"  # the last attempt ran into its time limit saving nothing: failed
    STALE = "stale"  # a message from another generation of the run: ack


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    attempt: int = 0
    republish: tuple[str, ...] = ()
    reason: str = ""


def claim(
    state: RunState,
    spec: PipelineSpec,
    step: str,
    *,
    owner: str,
    now: float,
    lease_seconds: float,
    generation: int | None,
    delivery_seconds: float | None = None,
) -> Decision[Claim]:
    """A delivery of "run ``step``" asks for the step's lease (for at most
    ``delivery_seconds``, its function's time limit)."""
    if generation is not None and generation != state.generation:
        return Decision(
            Claim(
                ClaimKind.STALE,
                reason=f"message of generation {generation}; the run is at {state.generation}",
            )
        )
    if state.finished:
        return Decision(Claim(ClaimKind.FINISHED, reason=f"run is {state.status}"))
    record = state.steps[step]
    if record.status == StepStatus.COMPLETED:
        successors = tuple(
            s for s in spec.successors(step) if state.steps[s].status == StepStatus.QUEUED
        )
        return Decision(Claim(ClaimKind.COMPLETED, republish=successors))
    if record.status == StepStatus.RUNNING and record.lease_owner == owner:
        # Our own claim, applied although its answer was lost: it stands.
        return Decision(Claim(ClaimKind.CLAIMED, attempt=record.attempt))
    if state.cancel_requested:
        new = copy_state(state)
        apply_cancel(new, now)
        return Decision(Claim(ClaimKind.FINISHED, reason="run is being cancelled"), new)
    if record.status in (StepStatus.ERROR, StepStatus.CANCELLED):
        return Decision(Claim(ClaimKind.FINISHED, reason=f"step is {record.status}"))
    if lease_live(record, now):
        return Decision(
            Claim(ClaimKind.BUSY, reason="another worker holds a live lease on this step")
        )
    definition = spec.steps[step]
    if not dependencies_done(state, definition):
        return Decision(Claim(ClaimKind.NOT_READY, reason="its dependencies have not completed"))
    new = copy_state(state)
    record = new.steps[step]
    if _timed_out_saving_nothing(record):
        reason = (
            f"step {step} was stopped at its time limit ({definition.timeout or 540:.0f} s "
            "per delivery) without saving progress, so another delivery would only start "
            "over: save progress with save_progress() and return resumable.Continue() when "
            "should_stop() turns true, or raise the step's timeout"
        )
        close_span(record, min(record.lease_expires or now, now), "killed at its time limit")
        fail_step(new, step, reason, now)
        return Decision(Claim(ClaimKind.TIMED_OUT, reason=reason), new)
    used = record.attempt - record.attempt_base
    if used >= max_attempts(definition):
        reason = (
            f"step {step} gave up after {used} attempts ({record.failures} failed with an "
            "error; the others lost their lease: the worker crashed, timed out or could not "
            "reach storage)"
        )
        fail_step(new, step, reason, now)
        return Decision(Claim(ClaimKind.EXHAUSTED, reason=reason), new)
    record.attempt += 1
    open_span(record, now)
    record.status = StepStatus.RUNNING
    record.lease_owner = owner
    record.lease_expires = now + lease_seconds
    record.started_at = now
    record.error = None
    record.hard_limit = now + delivery_seconds if delivery_seconds else None
    record.progress_at_claim = record.progress_manifest
    return Decision(Claim(ClaimKind.CLAIMED, attempt=record.attempt), new)


def _timed_out_saving_nothing(record: StepState) -> bool:
    """The last attempt's worker lived until its function's time limit (its lease was
    renewed past it; the lease stays on record after the watchdog queues the step again)
    and saved no progress: it was killed there, and would be again."""
    return (
        record.status in (StepStatus.RUNNING, StepStatus.QUEUED)
        and record.hard_limit is not None
        and (record.lease_expires or 0) >= record.hard_limit
        and record.progress_manifest == record.progress_at_claim
    )


# -- while the step runs --------------------------------------------------------------------


@dataclass(frozen=True)
class Renewal:
    owned: bool
    cancel_requested: bool = False


def renew(
    state: RunState, step: str, *, owner: str, attempt: int, now: float, lease_seconds: float
) -> Decision[Renewal]:
    """The heartbeat: extend the lease, only while we still own it."""
    record = state.steps[step]
    if not owns(record, owner, attempt):
        return Decision(Renewal(owned=False, cancel_requested=state.cancel_requested))
    new = copy_state(state)
    new.steps[step].lease_expires = now + lease_seconds
    return Decision(Renewal(owned=True, cancel_requested=state.cancel_requested), new)


def record_progress(
    state: RunState, step: str, *, owner: str, attempt: int, manifest: str
) -> Decision[bool]:
    """Point the step at the progress its running attempt saved; ``False`` if not ours."""
    if not owns(state.steps[step], owner, attempt):
        return Decision(False)
    new = copy_state(state)
    new.steps[step].progress_manifest = manifest
    return Decision(True, new)


# -- the end of an attempt ------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    committed: bool
    publish: tuple[str, ...] = ()
    run_status: str = RunStatus.RUNNING


def commit(
    state: RunState,
    spec: PipelineSpec,
    step: str,
    *,
    owner: str,
    attempt: int,
    manifest: str,
    size: int,
    keys: list[str],
    now: float,
    items: dict[str, int] | None = None,
) -> Decision[Commit]:
    """Mark the step completed with its output manifest, queue its ready successors, and
    finish the run when every step completed. Refused unless we own the attempt."""
    record = state.steps[step]
    if record.status == StepStatus.COMPLETED and record.manifest == manifest:
        # Our commit, applied although its answer was lost.
        queued = tuple(
            s for s in spec.successors(step) if state.steps[s].status == StepStatus.QUEUED
        )
        return Decision(Commit(True, publish=queued, run_status=state.status))
    if not owns(record, owner, attempt):
        return Decision(Commit(False, run_status=state.status))
    new = copy_state(state)
    record = new.steps[step]
    record.status = StepStatus.COMPLETED
    record.manifest = manifest
    record.checkpoint_bytes = size
    record.output_keys = list(keys)
    record.finished_at = now
    record.commits += 1
    close_span(record, now, "committed")
    record.progress_manifest = None
    if items is not None:
        record.items = dict(items)  # a map step's final counts
    clear_lease(record)
    if all_completed(new):
        finish(new, RunStatus.COMPLETED, now)
        return Decision(Commit(True, run_status=new.status), new)
    if new.cancel_requested:
        apply_cancel(new, now)
        return Decision(Commit(True, run_status=new.status), new)
    ready = [s for s in spec.successors(step) if s in ready_steps(new, spec)]
    return Decision(Commit(True, publish=tuple(queue(new, ready, now))), new)


class Verdict(StrEnum):
    CONTINUED = "continued"  # queued again to go on from its progress: publish it, ack
    RETRY = "retry"  # queued again: answer "retry later" so Pub/Sub redelivers
    FAILED = "failed"  # the step and the run failed
    CANCELLED = "cancelled"  # a cancel was requested: the step stops here
    STALE = "stale"  # no longer ours: nothing changed


def record_failure(
    state: RunState,
    step: StepSpec,
    *,
    owner: str,
    attempt: int,
    error: str,
    retryable: bool,
    counts: bool = True,
    now: float,
) -> Decision[Verdict]:
    """The attempt ended without output.

    ``counts``: the step's own exception (counted against its ``retries``), as opposed to
    the platform failing around it (storage unreachable), which only consumes an attempt.
    A failure while a cancel is requested cancels the step instead.
    """
    record = state.steps[step.name]
    if not owns(record, owner, attempt):
        return Decision(Verdict.STALE)
    new = copy_state(state)
    record = new.steps[step.name]
    record.error = bounded(error)
    if counts:
        record.failures += 1
    if new.cancel_requested:
        close_span(record, now, "cancelled")
        record.status = StepStatus.CANCELLED
        record.finished_at = now
        clear_lease(record)
        apply_cancel(new, now)
        return Decision(Verdict.CANCELLED, new)
    if not retryable or record.failures > step.retries:
        close_span(record, now, "failed")
        fail_step(new, step.name, f"step {step.name} failed: {error}", now)
        return Decision(Verdict.FAILED, new)
    close_span(record, now, "raised: retried" if counts else "storage error: released")
    record.status = StepStatus.QUEUED
    record.queued_at = now
    clear_lease(record)
    return Decision(Verdict.RETRY, new)


def continue_step(
    state: RunState, step: str, *, owner: str, attempt: int, now: float
) -> Decision[Verdict]:
    """The attempt saved progress and asked to be continued by a new delivery: the step
    is queued again, and the next claim counts no attempt (it is not a retry)."""

    def continued(record: StepState) -> None:
        record.continuations += 1

    return _queue_without_attempt(state, step, owner, attempt, now, continued, "continued")


def wait_for_items(
    state: RunState,
    step: str,
    *,
    owner: str,
    attempt: int,
    now: float,
    map_id: str,
    items: dict[str, int],
) -> Decision[Verdict]:
    """A map step's driver dispatched its items and some are unfinished: the step waits
    ``queued`` (no attempt counted; the worker finishing the last item publishes its
    message, the watchdog re-publishes it after its grace as a safety net)."""

    def waiting(record: StepState) -> None:
        record.map_id = map_id
        record.items = dict(items)

    # Recorded even when a cancel stops the step: status shows the map's items after.
    return _queue_without_attempt(
        state, step, owner, attempt, now, waiting, "waiting for items", always=True
    )


def _queue_without_attempt(
    state: RunState,
    step: str,
    owner: str,
    attempt: int,
    now: float,
    note: Callable[[StepState], None],
    outcome: str,
    *,
    always: bool = False,
) -> Decision[Verdict]:
    """The owner of ``attempt`` hands the step back, queued, without counting the attempt
    (``note`` records why on the step); cancelled instead if a cancel was requested
    (``always``: noted then too)."""
    if not owns(state.steps[step], owner, attempt):
        return Decision(Verdict.STALE)
    new = copy_state(state)
    record = new.steps[step]
    clear_lease(record)
    if always:
        note(record)
    if new.cancel_requested:
        close_span(record, now, "cancelled")
        record.status = StepStatus.CANCELLED
        record.finished_at = now
        apply_cancel(new, now)
        return Decision(Verdict.CANCELLED, new)
    if not always:
        note(record)
    close_span(record, now, outcome)
    record.status = StepStatus.QUEUED
    record.queued_at = now
    record.attempt_base += 1
    return Decision(Verdict.CONTINUED, new)
