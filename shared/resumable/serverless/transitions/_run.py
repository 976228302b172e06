"""Transitions of a whole run: cancel, resume, dead letters, rejected messages, the
watchdog's repair, and the deletion of its checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

from resumable.definition._spec import PipelineSpec
from resumable.serverless._run_state import MAX_REJECTED, Decision, RunState
from resumable.serverless.transitions import _rules
from resumable.status import RunStatus, StepStatus

# -- requests from users and operators ------------------------------------------------------


def cancel(state: RunState, *, now: float) -> Decision[bool]:
    """Stop the run before its next step; ``False`` if it had already finished."""
    if state.finished:
        return Decision(False)
    new = _rules.copy_state(state)
    _rules.apply_cancel(new, now)
    return Decision(True, new)


@dataclass(frozen=True)
class Resumption:
    """``refused`` (with the reason) or the steps queued; ``completed``: nothing was left."""

    queued: tuple[str, ...] = ()
    refused: str | None = None
    completed: bool = False


def resume(
    state: RunState, spec: PipelineSpec, *, from_step: str | None, now: float
) -> Decision[Resumption]:
    """Continue a failed, cancelled or stuck run from its unfinished steps.

    Unfinished steps keep the progress they saved. With ``from_step``, that step and every
    step after it are rolled back first (their outputs and progress dropped), so the run
    continues from that step's input. The run's generation grows, so that messages and
    dead letters sent before are recognised as stale; attempt numbers keep growing, so
    that a worker still running an old attempt can never commit.
    """
    if state.fingerprint != spec.fingerprint:
        return Decision(
            Resumption(
                refused=f"run {state.run_id!r} was started by another version of pipeline "
                f"{spec.name!r}; it cannot be resumed by this one"
            )
        )
    if any(_rules.lease_live(r, now) for r in state.steps.values()):
        return Decision(
            Resumption(refused=f"run {state.run_id!r} has a step running; cancel it first or wait")
        )
    in_flight = any(r.status == StepStatus.QUEUED for r in state.steps.values())
    if not state.finished and not state.cancel_requested and in_flight:
        return Decision(Resumption(refused=f"run {state.run_id!r} is running"))
    if from_step is None and _rules.all_completed(state):
        if state.status == RunStatus.COMPLETED:
            return Decision(
                Resumption(
                    refused=f"run {state.run_id!r} is completed; use --from-step to re-run "
                    "part of it"
                )
            )
        new = _rules.copy_state(state)
        new.cancel_requested = False
        new.error = None
        _rules.finish(new, RunStatus.COMPLETED, now)
        return Decision(Resumption(completed=True), new)
    if state.checkpoints_gone:
        return Decision(
            Resumption(
                refused=f"the checkpoints of run {state.run_id!r} were deleted (when it "
                "completed, as its pipeline sets cleanup_on_success, or when its retention "
                "ended)"
            )
        )
    new = _rules.copy_state(state)
    new.generation += 1
    reset = {from_step, *spec.descendants(from_step)} if from_step is not None else set()
    for name in spec.order:
        record = new.steps[name]
        if name in reset or record.status != StepStatus.COMPLETED:
            if name in reset:
                record.rollbacks += 1  # a map step starts a new map: every item runs again
                record.map_id = None
                record.items = None
                record.manifest = None
                record.progress_manifest = None
                record.output_keys = []
                record.checkpoint_bytes = None
                record.finished_at = None
            record.status = StepStatus.NOT_STARTED
            record.failures = 0
            record.error = None
            record.attempt_base = record.attempt
            _rules.clear_lease(record)
    queued = _rules.queue(new, _rules.ready_steps(new, spec), now)
    new.status = RunStatus.RUNNING
    new.cancel_requested = False
    new.error = None
    new.finished_at = None
    return Decision(Resumption(queued=tuple(queued)), new)


def dead_letter(
    state: RunState, step: str, *, generation: int | None, delivery_count: str | None, now: float
) -> Decision[str]:
    """A step message exhausted its delivery attempts. The run fails with the reason,
    unless the message is stale (another generation, a completed step) or its step is
    still making progress under a live lease (then the watchdog covers it)."""
    if generation is None and state.generation != 0:
        return Decision("dead letter without a generation, from before the run was resumed")
    if generation is not None and generation != state.generation:
        return Decision(f"stale dead letter (generation {generation}; run at {state.generation})")
    if state.finished:
        return Decision(f"run already {state.status}")
    record = state.steps.get(step)
    if record is not None and record.status == StepStatus.COMPLETED:
        return Decision("step already completed")
    if record is not None and _rules.lease_live(record, now):
        return Decision("step still running under a live lease")
    new = _rules.copy_state(state)
    if new.cancel_requested:
        _rules.apply_cancel(new, now)
        return Decision("run is being cancelled", new)
    if record is None:
        reason = f"a dead-lettered message names unknown step {step!r}"
        _rules.finish(new, RunStatus.ERROR, now, reason)
        return Decision(reason, new)
    reason = (
        f"the message for step {step} exhausted its delivery attempts ({delivery_count or '?'} "
        f"deliveries); last error: {record.error or 'none'}"
    )
    _rules.fail_step(new, step, reason, now)
    return Decision(reason, new)


def reject_message(state: RunState, reason: str) -> Decision[bool]:
    """Note on the run why a message about it was acked unused (bounded, newest kept)."""
    new = _rules.copy_state(state)
    new.rejected_messages = [*state.rejected_messages, _rules.bounded(reason, 1000)][-MAX_REJECTED:]
    return Decision(True, new)


# -- the watchdog ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Repair:
    republish: tuple[str, ...] = ()
    action: str = ""  # what changed on the document, for the log


def repair(state: RunState, *, spec: PipelineSpec, now: float, grace: float) -> Decision[Repair]:
    """Keep a running run moving: re-publish steps whose worker or message was lost, and
    finish or re-queue a run that was left with no step running or queued."""
    if state.finished:
        return Decision(Repair())
    if state.cancel_requested:
        new = _rules.copy_state(state)
        _rules.apply_cancel(new, now)
        return Decision(Repair(action="cancel completed" if new.finished else ""), new)
    expired = [
        n
        for n, r in state.steps.items()
        if r.status == StepStatus.RUNNING and not _rules.lease_live(r, now)
    ]
    lost = [
        n
        for n, r in state.steps.items()
        if r.status == StepStatus.QUEUED and (r.queued_at or now) < now - grace
    ]
    working = [
        n for n, r in state.steps.items() if r.status in (StepStatus.RUNNING, StepStatus.QUEUED)
    ]
    if working:
        if not expired and not lost:
            return Decision(Repair())
        new = _rules.copy_state(state)
        for name in lost:  # counted from now: a step is re-published once per grace period
            new.steps[name].queued_at = now
        for name in expired:
            # Its worker is gone: queued again (re-published once per grace period, like
            # a lost message). The expired lease stays on record, so that the next claim
            # can tell an attempt killed at its time limit from one that crashed.
            record = new.steps[name]
            _rules.close_span(record, min(record.lease_expires or now, now), "lost its lease")
            record.status = StepStatus.QUEUED
            record.lease_owner = None
            record.queued_at = now
        return Decision(Repair(republish=tuple(expired + lost)), new)
    new = _rules.copy_state(state)
    if _rules.all_completed(new):
        _rules.finish(new, RunStatus.COMPLETED, now)
        return Decision(Repair(action="completed: every step had completed"), new)
    failed = [n for n, r in new.steps.items() if r.status == StepStatus.ERROR]
    if failed:
        _rules.finish(
            new, RunStatus.ERROR, now, new.steps[failed[0]].error or f"step {failed[0]} failed"
        )
        return Decision(Repair(action=f"failed: step {failed[0]} had failed"), new)
    queued = _rules.queue(new, _rules.ready_steps(new, spec), now)
    if queued:
        return Decision(Repair(republish=tuple(queued), action=f"queued {queued}"), new)
    _rules.finish(new, RunStatus.CANCELLED, now)
    return Decision(Repair(action="cancelled: no step could run"), new)


def expire(state: RunState, *, cutoff: float) -> Decision[bool]:
    """Before the checkpoints of a run finished before ``cutoff`` are deleted (its
    retention is over): ``False`` if it was resumed meanwhile or its checkpoints are
    already gone, so nothing may be deleted. A deletion that failed half way (the run is
    still ``deleting_files``) is allowed again."""
    if not state.finished or state.finished_at is None or state.finished_at >= cutoff:
        return Decision(False)
    return _begin_deleting(state)


def begin_cleanup(state: RunState) -> Decision[bool]:
    """Before a completed run's checkpoints are deleted: ``False`` if the run is no longer
    completed (a ``resume --from-step`` came first) or its checkpoints are already gone."""
    if state.status != RunStatus.COMPLETED:
        return Decision(False)
    return _begin_deleting(state)


def _begin_deleting(state: RunState) -> Decision[bool]:
    if state.files_deleted:
        return Decision(False)
    if state.deleting_files:
        return Decision(True)  # a redelivery, or a retry after a failed deletion
    new = _rules.copy_state(state)
    new.deleting_files = True
    return Decision(True, new)


def files_gone(state: RunState) -> Decision[None]:
    """Every checkpoint object of the run was deleted: the retention sweep skips it now."""
    if state.files_deleted or not state.deleting_files:
        return Decision(None)
    new = _rules.copy_state(state)
    new.files_deleted = True
    return Decision(None, new)
