"""The serverless state machine: every change of a run document, as a pure function.

Each transition takes the run document as read, the event's data and ``now``, and
returns a ``Decision``: the new document (``None`` to leave it as it is) and a typed
result saying what the caller must do (ack, retry later, publish steps). Nothing here
does I/O; ``worker`` and ``control`` read and write around these functions, and the run-
state store may apply a transition several times on fresh reads.

Where each invariant of the step protocol is enforced:

- *one owner per attempt* — :func:`claim` hands out attempt numbers, and every later
  change by a worker is checked by :func:`owns` (lease owner **and** attempt);
- *output committed once* — :func:`commit` only for the owner of a running step;
- *stale messages and dead letters change nothing* — :func:`claim` and
  :func:`dead_letter` compare the message's run generation with the document's;
- *every run ends* — :func:`commit` finishes the run once every step completed (a
  requested cancel does not hide that), :func:`claim` gives up a step past its attempt
  limit, and :func:`repair` (the watchdog) finishes or re-queues a run left with no
  work in flight;
- *bounded documents* — stored errors are cut to :data:`MAX_ERROR_CHARS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from resumable.definition._spec import PipelineSpec, StepSpec
from resumable.serverless._run_state import MAX_REJECTED, Decision, RunState, StepState
from resumable.status import RunStatus, StepStatus

# Claims beyond the step's retries that may end in a lost lease (a crash, a timeout, a
# storage hiccup) before the step is given up: not the step's fault, but must not loop.
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


def _clear_lease(record: StepState) -> None:
    record.lease_owner = None
    record.lease_expires = None


def _copy(state: RunState) -> RunState:
    return state.model_copy(deep=True)


def _finish(state: RunState, status: RunStatus, now: float, error: str | None = None) -> None:
    state.status = status
    state.finished_at = now
    if error is not None:
        state.error = bounded(error)


def _fail_step(state: RunState, step: str, reason: str, now: float) -> None:
    """The step and the run fail (a non-retryable error, or attempts exhausted)."""
    record = state.steps[step]
    record.status = StepStatus.ERROR
    record.error = bounded(reason)
    record.finished_at = now
    _clear_lease(record)
    _finish(state, RunStatus.ERROR, now, reason)


def _queue(state: RunState, steps: Iterable[str], now: float) -> list[str]:
    queued = []
    for name in steps:
        state.steps[name].status = StepStatus.QUEUED
        state.steps[name].queued_at = now
        queued.append(name)
    return queued


def _ready(state: RunState, spec: PipelineSpec) -> list[str]:
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
            record.status = StepStatus.CANCELLED
            _clear_lease(record)
    if not any(r.status == StepStatus.RUNNING for r in state.steps.values()):
        _finish(state, RunStatus.COMPLETED if all_completed(state) else RunStatus.CANCELLED, now)


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
        new = _copy(state)
        apply_cancel(new, now)
        return Decision(Claim(ClaimKind.FINISHED, reason="run is being cancelled"), new)
    if record.status in (StepStatus.ERROR, StepStatus.CANCELLED):
        return Decision(Claim(ClaimKind.FINISHED, reason=f"step is {record.status}"))
    if lease_live(record, now):
        return Decision(Claim(ClaimKind.BUSY, reason="another worker holds a live lease"))
    definition = spec.steps[step]
    if not dependencies_done(state, definition):
        return Decision(Claim(ClaimKind.NOT_READY, reason="its dependencies have not completed"))
    new = _copy(state)
    record = new.steps[step]
    if _timed_out_saving_nothing(record):
        reason = (
            f"step {step} was stopped at its time limit ({definition.timeout or 540:.0f} s "
            "per delivery) without saving progress, so another delivery would only start "
            "over: save progress with save_progress() and return resumable.Continue() when "
            "should_stop() turns true, or raise the step's timeout"
        )
        _fail_step(new, step, reason, now)
        return Decision(Claim(ClaimKind.TIMED_OUT, reason=reason), new)
    used = record.attempt - record.attempt_base
    if used >= max_attempts(definition):
        reason = (
            f"step {step} gave up after {used} attempts ({record.failures} failed with an "
            "error; the others lost their lease: the worker crashed, timed out or could not "
            "reach storage)"
        )
        _fail_step(new, step, reason, now)
        return Decision(Claim(ClaimKind.EXHAUSTED, reason=reason), new)
    record.attempt += 1
    record.status = StepStatus.RUNNING
    record.lease_owner = owner
    record.lease_expires = now + lease_seconds
    record.started_at = now
    record.error = None
    record.hard_limit = now + delivery_seconds if delivery_seconds else None
    record.progress_at_claim = record.progress_manifest
    return Decision(Claim(ClaimKind.CLAIMED, attempt=record.attempt), new)


def _timed_out_saving_nothing(record: StepState) -> bool:
    """The running attempt's worker lived until its function's time limit (its lease was
    renewed past it) and saved no progress: it was killed there, and would be again."""
    return (
        record.status == StepStatus.RUNNING
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
    new = _copy(state)
    new.steps[step].lease_expires = now + lease_seconds
    return Decision(Renewal(owned=True, cancel_requested=state.cancel_requested), new)


def record_progress(
    state: RunState, step: str, *, owner: str, attempt: int, manifest: str
) -> Decision[bool]:
    """Point the step at the progress its running attempt saved; ``False`` if not ours."""
    if not owns(state.steps[step], owner, attempt):
        return Decision(False)
    new = _copy(state)
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
    new = _copy(state)
    record = new.steps[step]
    record.status = StepStatus.COMPLETED
    record.manifest = manifest
    record.checkpoint_bytes = size
    record.output_keys = list(keys)
    record.finished_at = now
    record.commits += 1
    record.progress_manifest = None
    _clear_lease(record)
    if all_completed(new):
        _finish(new, RunStatus.COMPLETED, now)
        return Decision(Commit(True, run_status=new.status), new)
    if new.cancel_requested:
        apply_cancel(new, now)
        return Decision(Commit(True, run_status=new.status), new)
    ready = [s for s in spec.successors(step) if s in _ready(new, spec)]
    return Decision(Commit(True, publish=tuple(_queue(new, ready, now))), new)


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
    new = _copy(state)
    record = new.steps[step.name]
    record.error = bounded(error)
    if counts:
        record.failures += 1
    if new.cancel_requested:
        record.status = StepStatus.CANCELLED
        record.finished_at = now
        _clear_lease(record)
        apply_cancel(new, now)
        return Decision(Verdict.CANCELLED, new)
    if not retryable or record.failures > step.retries:
        _fail_step(new, step.name, f"step {step.name} failed: {error}", now)
        return Decision(Verdict.FAILED, new)
    record.status = StepStatus.QUEUED
    record.queued_at = now
    _clear_lease(record)
    return Decision(Verdict.RETRY, new)


def continue_step(
    state: RunState, step: str, *, owner: str, attempt: int, now: float
) -> Decision[Verdict]:
    """The attempt saved progress and asked to be continued by a new delivery: the step
    is queued again, and the next claim counts no attempt (it is not a retry)."""
    record = state.steps[step]
    if not owns(record, owner, attempt):
        return Decision(Verdict.STALE)
    new = _copy(state)
    record = new.steps[step]
    _clear_lease(record)
    if new.cancel_requested:
        record.status = StepStatus.CANCELLED
        record.finished_at = now
        apply_cancel(new, now)
        return Decision(Verdict.CANCELLED, new)
    record.status = StepStatus.QUEUED
    record.queued_at = now
    record.continuations += 1
    record.attempt_base += 1
    return Decision(Verdict.CONTINUED, new)


# -- requests from users and operators ------------------------------------------------------


def cancel(state: RunState, *, now: float) -> Decision[bool]:
    """Stop the run before its next step; ``False`` if it had already finished."""
    if state.finished:
        return Decision(False)
    new = _copy(state)
    apply_cancel(new, now)
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
    if any(lease_live(r, now) for r in state.steps.values()):
        return Decision(
            Resumption(refused=f"run {state.run_id!r} has a step running; cancel it first or wait")
        )
    in_flight = any(r.status == StepStatus.QUEUED for r in state.steps.values())
    if not state.finished and not state.cancel_requested and in_flight:
        return Decision(Resumption(refused=f"run {state.run_id!r} is running"))
    if from_step is None and all_completed(state):
        if state.status == RunStatus.COMPLETED:
            return Decision(
                Resumption(
                    refused=f"run {state.run_id!r} is completed; use --from-step to re-run "
                    "part of it"
                )
            )
        new = _copy(state)
        new.cancel_requested = False
        new.error = None
        _finish(new, RunStatus.COMPLETED, now)
        return Decision(Resumption(completed=True), new)
    if state.files_deleted:
        return Decision(
            Resumption(
                refused=f"the checkpoints of run {state.run_id!r} were deleted (when it "
                "completed, as its pipeline sets cleanup_on_success, or when its retention "
                "ended)"
            )
        )
    new = _copy(state)
    new.generation += 1
    reset = {from_step, *spec.descendants(from_step)} if from_step is not None else set()
    for name in spec.order:
        record = new.steps[name]
        if name in reset or record.status != StepStatus.COMPLETED:
            if name in reset:
                record.manifest = None
                record.progress_manifest = None
                record.output_keys = []
                record.checkpoint_bytes = None
                record.finished_at = None
            record.status = StepStatus.NOT_STARTED
            record.failures = 0
            record.error = None
            record.attempt_base = record.attempt
            _clear_lease(record)
    queued = _queue(new, _ready(new, spec), now)
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
    if record is not None and lease_live(record, now):
        return Decision("step still running under a live lease")
    new = _copy(state)
    if new.cancel_requested:
        apply_cancel(new, now)
        return Decision("run is being cancelled", new)
    if record is None:
        reason = f"a dead-lettered message names unknown step {step!r}"
        _finish(new, RunStatus.ERROR, now, reason)
        return Decision(reason, new)
    reason = (
        f"the message for step {step} exhausted its delivery attempts ({delivery_count or '?'} "
        f"deliveries); last error: {record.error or 'none'}"
    )
    _fail_step(new, step, reason, now)
    return Decision(reason, new)


def reject_message(state: RunState, reason: str) -> Decision[bool]:
    """Note on the run why a message about it was acked unused (bounded, newest kept)."""
    new = _copy(state)
    new.rejected_messages = [*state.rejected_messages, bounded(reason, 1000)][-MAX_REJECTED:]
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
        new = _copy(state)
        apply_cancel(new, now)
        return Decision(Repair(action="cancel completed" if new.finished else ""), new)
    expired = [
        n
        for n, r in state.steps.items()
        if r.status == StepStatus.RUNNING and not lease_live(r, now)
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
        new = _copy(state)
        for name in lost:  # counted from now: a step is re-published once per grace period
            new.steps[name].queued_at = now
        return Decision(Repair(republish=tuple(expired + lost)), new)
    new = _copy(state)
    if all_completed(new):
        _finish(new, RunStatus.COMPLETED, now)
        return Decision(Repair(action="completed: every step had completed"), new)
    failed = [n for n, r in new.steps.items() if r.status == StepStatus.ERROR]
    if failed:
        _finish(new, RunStatus.ERROR, now, new.steps[failed[0]].error or f"step {failed[0]} failed")
        return Decision(Repair(action=f"failed: step {failed[0]} had failed"), new)
    queued = _queue(new, _ready(new, spec), now)
    if queued:
        return Decision(Repair(republish=tuple(queued), action=f"queued {queued}"), new)
    _finish(new, RunStatus.CANCELLED, now)
    return Decision(Repair(action="cancelled: no step could run"), new)


def expire(state: RunState, *, cutoff: float) -> Decision[bool]:
    """Before the checkpoints of a run finished before ``cutoff`` are deleted (its
    retention is over): ``False`` if it was resumed meanwhile, so nothing may be deleted."""
    if not state.finished or state.finished_at is None or state.finished_at >= cutoff:
        return Decision(False)
    if state.files_deleted:
        return Decision(False)
    new = _copy(state)
    new.files_deleted = True
    return Decision(True, new)


def begin_cleanup(state: RunState) -> Decision[bool]:
    """Before a completed run's checkpoints are deleted: ``False`` if the run is no longer
    completed (a ``resume --from-step`` came first), so nothing may be deleted."""
    if state.status != RunStatus.COMPLETED:
        return Decision(False)
    if state.files_deleted:
        return Decision(True)
    new = _copy(state)
    new.files_deleted = True
    return Decision(True, new)
