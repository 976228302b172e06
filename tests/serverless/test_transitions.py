"""Every transition of the serverless state machine, table by table: (state, event, now) →
(new state, result). Pure functions, so each case builds a run document, applies one
transition and checks both what it decided and that its input was left untouched."""

from __future__ import annotations

from typing import Any

import pytest

from resumable import Pipeline
from resumable.serverless._run_state import Decision, RunState, StepState
from resumable.serverless.transitions import (
    CRASH_ALLOWANCE,
    MAX_ERROR_CHARS,
    ClaimKind,
    Verdict,
    begin_cleanup,
    bounded,
    cancel,
    claim,
    commit,
    dead_letter,
    expire,
    files_gone,
    record_failure,
    record_progress,
    reject_message,
    renew,
    repair,
    resume,
)
from resumable.status import RunStatus, StepStatus

NOW = 1000.0
LEASE = 60.0


def _noop(context: dict[str, Any]) -> None:
    return None


# a → (b, c) → d; b may retry once.
PIPELINE = Pipeline(
    "diamond",
    {
        "a": {"function": _noop},
        "b": {"function": _noop, "retries": 1, "dependencies": ["a"]},
        "c": {"function": _noop, "dependencies": ["a"]},
        "d": {"function": _noop, "dependencies": ["b", "c"]},
    },
    storage="memory://transitions",
)
SPEC = PIPELINE.spec

COMPLETED = {"status": "completed", "manifest": "m", "commits": 1}
RUNNING_OURS = {"status": "running", "attempt": 1, "lease_owner": "me", "lease_expires": NOW + 30}
RUNNING_OTHER = {
    "status": "running",
    "attempt": 1,
    "lease_owner": "other",
    "lease_expires": NOW + 30,
}
RUNNING_EXPIRED = {
    "status": "running",
    "attempt": 1,
    "lease_owner": "dead",
    "lease_expires": NOW - 1,
}
QUEUED = {"status": "queued", "queued_at": NOW - 1}


def run(steps: dict[str, dict[str, Any]] | None = None, **fields: Any) -> RunState:
    """A running run document; ``steps`` overrides the rows (others not started)."""
    rows = {name: StepState(**(steps or {}).get(name, {})) for name in SPEC.order}
    document: dict[str, Any] = {
        "run_id": "r1",
        "pipeline": "diamond",
        "fingerprint": SPEC.fingerprint,
        "step_fingerprints": dict(SPEC.step_fingerprints),
        "params_manifest": "p",
        "params_hash": "h",
        "created_at": 0.0,
        "updated_at": 0.0,
        "steps": rows,
    }
    return RunState(**{**document, **fields})


def apply(transition: Any, state: RunState, *args: Any, **kwargs: Any) -> Decision[Any]:
    before = state.model_dump()
    decision = transition(state, *args, **kwargs)
    assert state.model_dump() == before, "a transition must not change its input"
    return decision


def claim_b(state: RunState, owner: str = "me", generation: int | None = 0) -> Decision[Any]:
    return apply(
        claim, state, SPEC, "b", owner=owner, now=NOW, lease_seconds=LEASE, generation=generation
    )


# -- claim ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "fields", "generation", "kind", "writes"),
    [
        ({"a": COMPLETED, "b": QUEUED}, {}, 0, ClaimKind.CLAIMED, True),
        ({"a": COMPLETED, "b": QUEUED}, {}, None, ClaimKind.CLAIMED, True),  # 0.1.0 message
        ({"a": COMPLETED, "b": QUEUED}, {"generation": 2}, 1, ClaimKind.STALE, False),
        ({"a": COMPLETED, "b": QUEUED}, {"status": "error"}, 0, ClaimKind.FINISHED, False),
        ({"a": COMPLETED, "b": COMPLETED}, {}, 0, ClaimKind.COMPLETED, False),
        ({"a": COMPLETED, "b": RUNNING_OTHER}, {}, 0, ClaimKind.BUSY, False),
        ({"a": COMPLETED, "b": RUNNING_OURS}, {}, 0, ClaimKind.CLAIMED, False),  # answer lost
        ({"a": COMPLETED, "b": RUNNING_EXPIRED}, {}, 0, ClaimKind.CLAIMED, True),
        ({"a": QUEUED}, {}, 0, ClaimKind.NOT_READY, False),
        ({"a": COMPLETED, "b": {"status": "cancelled"}}, {}, 0, ClaimKind.FINISHED, False),
        ({"a": COMPLETED, "b": QUEUED}, {"cancel_requested": True}, 0, ClaimKind.FINISHED, True),
    ],
)
def test_claim(
    steps: dict[str, Any], fields: dict[str, Any], generation: int | None, kind: str, writes: bool
) -> None:
    decision = claim_b(run(steps, **fields), generation=generation)
    assert decision.result.kind == kind, decision.result
    assert (decision.state is not None) == writes


def test_a_claim_takes_the_lease_under_the_next_attempt() -> None:
    decision = claim_b(run({"a": COMPLETED, "b": {**RUNNING_EXPIRED, "attempt": 3}}))
    assert decision.result.attempt == 4 and decision.state is not None
    record = decision.state.steps["b"]
    assert (record.status, record.lease_owner, record.lease_expires) == (
        "running",
        "me",
        NOW + LEASE,
    )


def test_a_completed_step_republishes_its_queued_successors_only() -> None:
    state = run({"a": COMPLETED, "b": QUEUED, "c": {"status": "running"}})
    decision = apply(
        claim, state, SPEC, "a", owner="me", now=NOW, lease_seconds=LEASE, generation=0
    )
    assert decision.result.republish == ("b",)


def test_a_claim_past_the_attempt_limit_fails_the_step_and_the_run() -> None:
    limit = 1 + 1 + CRASH_ALLOWANCE  # b: retries=1
    state = run({"a": COMPLETED, "b": {**RUNNING_EXPIRED, "attempt": limit + 2, "attempt_base": 2}})
    decision = claim_b(state)
    assert decision.result.kind == ClaimKind.EXHAUSTED and decision.state is not None
    assert decision.state.status == "error" and decision.state.steps["b"].status == "error"
    assert f"gave up after {limit} attempts" in (decision.state.error or "")
    below = run({"a": COMPLETED, "b": {**RUNNING_EXPIRED, "attempt": limit + 1, "attempt_base": 2}})
    assert claim_b(below).result.kind == ClaimKind.CLAIMED


def test_a_claim_on_a_cancelled_run_finishes_the_cancel() -> None:
    decision = claim_b(run({"a": COMPLETED, "b": QUEUED, "c": QUEUED}, cancel_requested=True))
    assert decision.state is not None and decision.state.status == "cancelled"


# -- renew and progress ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "attempt", "owned"),
    [
        (RUNNING_OURS, 1, True),
        (RUNNING_OURS, 2, False),
        (RUNNING_OTHER, 1, False),
        (QUEUED, 1, False),
    ],
)
def test_renew_extends_only_our_own_lease(row: dict[str, Any], attempt: int, owned: bool) -> None:
    decision = apply(
        renew, run({"b": row}), "b", owner="me", attempt=attempt, now=NOW, lease_seconds=LEASE
    )
    assert decision.result.owned is owned
    if owned:
        assert decision.state is not None
        assert decision.state.steps["b"].lease_expires == NOW + LEASE
    else:
        assert decision.state is None


def test_renew_reports_a_requested_cancel() -> None:
    decision = apply(
        renew, run({"b": RUNNING_OURS}, cancel_requested=True), "b", owner="me", attempt=1,
        now=NOW, lease_seconds=LEASE,
    )  # fmt: skip
    assert decision.result.cancel_requested


@pytest.mark.parametrize(("owner", "recorded"), [("me", True), ("other", False)])
def test_progress_is_recorded_only_for_the_lease_owner(owner: str, recorded: bool) -> None:
    decision = apply(
        record_progress, run({"b": RUNNING_OURS}), "b", owner=owner, attempt=1, manifest="p1"
    )
    assert decision.result is recorded
    if recorded:
        assert decision.state is not None and decision.state.steps["b"].progress_manifest == "p1"


# -- commit ---------------------------------------------------------------------------------


def commit_step(
    state: RunState, step: str, owner: str = "me", manifest: str = "out"
) -> Decision[Any]:
    return apply(
        commit, state, SPEC, step, owner=owner, attempt=1, manifest=manifest, size=10,
        keys=["k"], now=NOW,
    )  # fmt: skip


def test_a_commit_by_the_owner_completes_the_step_and_queues_ready_successors() -> None:
    decision = commit_step(run({"a": RUNNING_OURS}), "a")
    assert decision.result.committed and decision.result.publish == ("b", "c")
    assert decision.state is not None
    record = decision.state.steps["a"]
    assert (record.status, record.manifest, record.commits, record.lease_owner) == (
        "completed", "out", 1, None,
    )  # fmt: skip
    assert decision.state.steps["b"].status == decision.state.steps["c"].status == "queued"


def test_a_join_is_queued_by_the_last_branch_only() -> None:
    first = commit_step(run({"a": COMPLETED, "b": RUNNING_OURS, "c": RUNNING_OTHER}), "b")
    assert first.result.publish == ()
    second = commit_step(run({"a": COMPLETED, "b": COMPLETED, "c": RUNNING_OURS}), "c")
    assert second.result.publish == ("d",)


@pytest.mark.parametrize(
    "row", [RUNNING_OTHER, RUNNING_EXPIRED, QUEUED, {**RUNNING_OURS, "attempt": 2}]
)
def test_a_commit_without_the_lease_is_refused(row: dict[str, Any]) -> None:
    decision = commit_step(run({"a": row}), "a")
    assert not decision.result.committed and decision.state is None


def test_a_commit_applied_whose_answer_was_lost_is_recognised() -> None:
    decision = commit_step(run({"a": {**COMPLETED, "manifest": "out"}, "b": QUEUED}), "a")
    assert decision.result.committed and decision.result.publish == ("b",)
    assert decision.state is None


def test_the_last_commit_completes_the_run_even_when_a_cancel_was_requested() -> None:
    steps = {"a": COMPLETED, "b": COMPLETED, "c": COMPLETED, "d": RUNNING_OURS}
    decision = commit_step(run(steps, cancel_requested=True), "d")
    assert decision.state is not None and decision.state.status == "completed"


def test_a_commit_while_a_cancel_is_requested_queues_nothing() -> None:
    decision = commit_step(run({"a": RUNNING_OURS}, cancel_requested=True), "a")
    assert decision.result.publish == () and decision.state is not None
    assert decision.state.status == "cancelled"
    assert decision.state.steps["b"].status == "cancelled"


# -- failures -------------------------------------------------------------------------------


def fail_b(
    state: RunState, *, retryable: bool = True, counts: bool = True, owner: str = "me"
) -> Decision[Any]:
    return apply(
        record_failure, state, SPEC.steps["b"], owner=owner, attempt=1, error="boom",
        retryable=retryable, counts=counts, now=NOW,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("row", "fields", "retryable", "counts", "verdict", "status"),
    [
        (RUNNING_OURS, {}, True, True, Verdict.RETRY, "queued"),
        ({**RUNNING_OURS, "failures": 1}, {}, True, True, Verdict.FAILED, "error"),  # retries=1
        ({**RUNNING_OURS, "failures": 1}, {}, True, False, Verdict.RETRY, "queued"),  # platform
        (RUNNING_OURS, {}, False, True, Verdict.FAILED, "error"),
        (RUNNING_OURS, {"cancel_requested": True}, True, True, Verdict.CANCELLED, "cancelled"),
        (RUNNING_OTHER, {}, True, True, Verdict.STALE, "running"),
    ],
)
def test_record_failure(
    row: dict[str, Any],
    fields: dict[str, Any],
    retryable: bool,
    counts: bool,
    verdict: str,
    status: str,
) -> None:
    decision = fail_b(run({"a": COMPLETED, "b": row}, **fields), retryable=retryable, counts=counts)
    assert decision.result == verdict
    after = decision.state or run({"a": COMPLETED, "b": row})
    assert after.steps["b"].status == status
    if verdict == Verdict.FAILED:
        assert after.status == "error" and "boom" in (after.error or "")


def test_a_huge_error_is_stored_bounded() -> None:
    decision = apply(
        record_failure, run({"a": COMPLETED, "b": RUNNING_OURS}), SPEC.steps["b"], owner="me",
        attempt=1, error="x" * 2_000_000, retryable=False, now=NOW,
    )  # fmt: skip
    assert decision.state is not None
    assert len(decision.state.error or "") < MAX_ERROR_CHARS + 100
    assert len(decision.state.steps["b"].error or "") < MAX_ERROR_CHARS + 100
    assert bounded("short") == "short"


# -- cancel ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "status"),
    [
        ({"a": COMPLETED, "b": QUEUED, "c": QUEUED}, "cancelled"),
        ({"a": COMPLETED, "b": RUNNING_OTHER, "c": QUEUED}, "running"),  # b finishes first
        ({"a": COMPLETED, "b": RUNNING_EXPIRED, "c": QUEUED}, "cancelled"),  # b's worker is gone
    ],
)
def test_cancel(steps: dict[str, Any], status: str) -> None:
    decision = apply(cancel, run(steps), now=NOW)
    assert decision.result and decision.state is not None
    assert decision.state.status == status and decision.state.cancel_requested
    assert decision.state.steps["c"].status == "cancelled"


def test_cancelling_a_finished_run_changes_nothing() -> None:
    decision = apply(cancel, run(status="completed"), now=NOW)
    assert decision.result is False and decision.state is None


# -- resume ---------------------------------------------------------------------------------


def resume_run(state: RunState, from_step: str | None = None) -> Decision[Any]:
    return apply(resume, state, SPEC, from_step=from_step, now=NOW)


@pytest.mark.parametrize(
    ("steps", "fields", "refusal"),
    [
        ({"a": COMPLETED, "b": RUNNING_OTHER}, {}, "has a step running"),
        ({"a": COMPLETED, "b": QUEUED}, {}, "is running"),
        (dict.fromkeys("abcd", COMPLETED), {"status": "completed"}, "is completed"),
        ({"a": COMPLETED}, {"fingerprint": "other"}, "another version"),
    ],
)
def test_resume_is_refused(steps: dict[str, Any], fields: dict[str, Any], refusal: str) -> None:
    decision = resume_run(run(steps, **fields))
    assert decision.state is None and refusal in (decision.result.refused or "")


def test_resume_after_an_error_requeues_the_failed_step_keeping_its_progress() -> None:
    failed = {
        "status": "error",
        "attempt": 2,
        "failures": 2,
        "progress_manifest": "p",
        "error": "x",
    }
    state = run({"a": COMPLETED, "b": failed, "c": COMPLETED}, status="error", error="x")
    decision = resume_run(state)
    assert decision.result.queued == ("b",) and decision.state is not None
    new = decision.state
    assert (new.status, new.generation, new.error) == ("running", 1, None)
    record = new.steps["b"]
    assert (record.status, record.progress_manifest, record.failures, record.attempt_base) == (
        "queued", "p", 0, 2,
    )  # fmt: skip
    assert new.steps["c"].status == "completed" and new.steps["d"].status == "not_started"


def test_resume_from_a_step_rolls_it_and_its_descendants_back() -> None:
    done = {**COMPLETED, "progress_manifest": None}
    state = run(dict.fromkeys("abcd", done), status="completed")
    decision = resume_run(state, from_step="b")
    assert decision.result.queued == ("b",) and decision.state is not None
    steps = decision.state.steps
    assert [steps[n].status for n in "abcd"] == ["completed", "queued", "completed", "not_started"]
    assert steps["b"].manifest is None and steps["d"].manifest is None


def test_resume_of_a_run_whose_steps_all_completed_completes_it() -> None:
    state = run(dict.fromkeys("abcd", COMPLETED), status="cancelled", cancel_requested=True)
    decision = resume_run(state)
    assert decision.result.completed and decision.state is not None
    assert decision.state.status == "completed"


def test_resume_of_a_stuck_running_run_queues_its_ready_steps() -> None:
    decision = resume_run(run({"a": COMPLETED, "b": COMPLETED, "c": COMPLETED}))
    assert decision.result.queued == ("d",)


def test_resume_from_a_step_after_the_checkpoints_were_deleted_is_refused() -> None:
    state = run(dict.fromkeys("abcd", COMPLETED), status="completed", files_deleted=True)
    assert "were deleted" in (resume_run(state, from_step="b").result.refused or "")


# -- dead letters ---------------------------------------------------------------------------


def dead(state: RunState, step: str = "b", generation: int | None = 0) -> Decision[str]:
    return apply(dead_letter, state, step, generation=generation, delivery_count="10", now=NOW)


@pytest.mark.parametrize(
    ("steps", "fields", "generation", "verdict"),
    [
        ({"a": COMPLETED, "b": QUEUED}, {"generation": 1}, 0, "stale dead letter"),
        ({"a": COMPLETED, "b": QUEUED}, {"generation": 1}, None, "before the run was resumed"),
        ({"a": COMPLETED, "b": QUEUED}, {"status": "cancelled"}, 0, "already cancelled"),
        ({"a": COMPLETED, "b": COMPLETED}, {}, 0, "already completed"),
        ({"a": COMPLETED, "b": RUNNING_OTHER}, {}, 0, "live lease"),
    ],
)
def test_a_dead_letter_that_changes_nothing(
    steps: dict[str, Any], fields: dict[str, Any], generation: int | None, verdict: str
) -> None:
    decision = dead(run(steps, **fields), generation=generation)
    assert verdict in decision.result and decision.state is None


@pytest.mark.parametrize("generation", [0, None])
def test_a_current_dead_letter_fails_the_step_and_the_run(generation: int | None) -> None:
    decision = dead(run({"a": COMPLETED, "b": QUEUED}), generation=generation)
    assert decision.state is not None and decision.state.status == "error"
    assert "exhausted its delivery attempts (10 deliveries)" in (decision.state.error or "")


def test_a_dead_letter_during_a_cancel_cancels() -> None:
    decision = dead(run({"a": COMPLETED, "b": QUEUED}, cancel_requested=True))
    assert decision.state is not None and decision.state.status == "cancelled"


def test_a_dead_letter_for_an_unknown_step_fails_the_run() -> None:
    decision = dead(run({"a": QUEUED}), step="zzz")
    assert decision.state is not None and decision.state.status == "error"


# -- the watchdog ---------------------------------------------------------------------------


def sweep(state: RunState) -> Decision[Any]:
    return apply(repair, state, spec=SPEC, now=NOW, grace=120.0)


@pytest.mark.parametrize(
    ("steps", "fields", "republish", "status"),
    [
        ({"a": COMPLETED, "b": RUNNING_EXPIRED, "c": RUNNING_OTHER}, {}, ("b",), "running"),
        ({"a": {**QUEUED, "queued_at": NOW - 121}}, {}, ("a",), "running"),
        ({"a": {**QUEUED, "queued_at": NOW - 10}}, {}, (), "running"),
        (dict.fromkeys("abcd", COMPLETED), {}, (), "completed"),
        ({"a": COMPLETED, "b": COMPLETED, "c": COMPLETED}, {}, ("d",), "running"),
        (
            {"a": COMPLETED, "b": RUNNING_EXPIRED, "c": QUEUED},
            {"cancel_requested": True},
            (),
            "cancelled",
        ),
        # A cancelled step in a run no one cancelled (never written by this code): the
        # run goes on as far as it can, then ends cancelled.
        ({"a": COMPLETED, "b": {"status": "cancelled"}}, {}, ("c",), "running"),
        ({"a": COMPLETED, "b": {"status": "cancelled"}, "c": COMPLETED}, {}, (), "cancelled"),
    ],
)
def test_repair(
    steps: dict[str, Any], fields: dict[str, Any], republish: tuple[str, ...], status: str
) -> None:
    decision = sweep(run(steps, **fields))
    after = decision.state or run(steps, **fields)
    assert decision.result.republish == republish and after.status == status


def test_a_lost_message_is_republished_once_per_grace_period() -> None:
    decision = sweep(run({"a": {**QUEUED, "queued_at": NOW - 500}}))
    assert decision.state is not None and decision.state.steps["a"].queued_at == NOW


# -- cleanup and rejected messages ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "allowed"), [("completed", True), ("running", False), ("error", False)]
)
def test_cleanup_begins_only_for_a_completed_run(status: str, allowed: bool) -> None:
    decision = apply(begin_cleanup, run(status=status))
    assert decision.result is allowed
    assert (decision.state is not None and decision.state.deleting_files) is allowed


def test_a_failed_deletion_may_be_retried_until_the_files_are_gone() -> None:
    deleting = run(status="completed", finished_at=NOW - 10, deleting_files=True)
    assert apply(begin_cleanup, deleting).result is True
    assert apply(expire, deleting, cutoff=NOW).result is True
    gone = apply(files_gone, deleting).state
    assert gone is not None and gone.files_deleted and gone.checkpoints_gone
    assert apply(begin_cleanup, gone).result is False
    assert apply(expire, gone, cutoff=NOW).result is False
    assert apply(files_gone, gone).state is None  # nothing to write twice
    assert apply(files_gone, run(status="completed")).state is None  # never began


def test_resume_is_refused_while_the_checkpoints_are_being_deleted() -> None:
    state = run(dict.fromkeys("abcd", COMPLETED), status="completed", deleting_files=True)
    assert "were deleted" in (resume_run(state, from_step="b").result.refused or "")


@pytest.mark.parametrize(
    ("fields", "allowed"),
    [
        ({"status": "error", "finished_at": NOW - 10}, True),
        ({"status": "error", "finished_at": NOW + 10}, False),
        ({"status": "running"}, False),
        ({"status": "completed", "finished_at": NOW - 10, "files_deleted": True}, False),
    ],
)
def test_expiry_deletes_only_runs_finished_before_the_cutoff(
    fields: dict[str, Any], allowed: bool
) -> None:
    decision = apply(expire, run(**fields), cutoff=NOW)
    assert decision.result is allowed and (decision.state is not None) is allowed


def test_rejected_messages_are_kept_bounded() -> None:
    state = run()
    for n in range(30):
        state = reject_message(state, f"bad {n} " + "y" * 5000).state or state
    assert len(state.rejected_messages) == 20 and state.rejected_messages[-1].startswith("bad 29")
    assert all(len(r) < 1100 for r in state.rejected_messages)


def test_statuses_are_the_status_words() -> None:
    assert {s.value for s in StepStatus} >= {"queued", "running", "completed", "error"}
    assert RunStatus.COMPLETED.finished


def test_a_step_whose_worker_died_is_queued_again_and_republished_once_per_grace() -> None:
    first = sweep(run({"a": COMPLETED, "b": RUNNING_EXPIRED}))
    assert first.result.republish == ("b",) and first.state is not None
    record = first.state.steps["b"]
    assert (record.status, record.lease_owner, record.queued_at) == ("queued", None, NOW)
    assert record.lease_expires == NOW - 1  # kept: the next claim reads the time limit off it
    again = apply(repair, first.state, spec=SPEC, now=NOW + 10, grace=120.0)
    assert again.result.republish == ()


def test_each_attempt_leaves_a_span_on_the_step_for_the_timeline() -> None:
    """claim → raised (retried) → claimed by a worker that dies → taken over → committed."""
    from resumable.serverless.transitions import commit, record_failure

    state = run({"a": COMPLETED, "b": QUEUED})
    first = claim_b(state).state
    assert first is not None
    step_b = SPEC.steps["b"]
    failed = apply(
        record_failure, first, step_b, owner="me", attempt=1, error="E", retryable=True,
        now=NOW + 5,
    ).state  # fmt: skip
    assert failed is not None
    second = apply(
        claim, failed, SPEC, "b", owner="w2", now=NOW + 10, lease_seconds=LEASE, generation=0
    ).state
    assert second is not None
    # w2 dies: its lease runs out, w3 takes the step over.
    later = NOW + 10 + LEASE + 5
    third = apply(
        claim, second, SPEC, "b", owner="w3", now=later, lease_seconds=LEASE, generation=0
    ).state
    assert third is not None
    done = apply(
        commit, third, SPEC, "b", owner="w3", attempt=3, manifest="m3", size=1, keys=[],
        now=later + 2,
    ).state  # fmt: skip
    assert done is not None
    spans = [(s.attempt, s.started_at, s.ended_at, s.outcome) for s in done.steps["b"].history]
    assert spans == [
        (1, NOW, NOW + 5, "raised: retried"),
        (2, NOW + 10, NOW + 10 + LEASE, "lost its lease"),
        (3, later, later + 2, "committed"),
    ]
