"""The step protocol's invariants, on in-memory services: whatever is duplicated, crashes
or goes stale, every step's output is committed exactly once and the run ends in the
right final state."""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np
import pytest

from resumable import NonRetryableError, Pipeline, RetryableError
from resumable.errors import BadMessageError
from resumable.serverless._control import cancel_run, record_dead_letter, resume_run, watchdog_sweep
from resumable.serverless._messages import StartMessage, StepMessage, parse_start
from resumable.serverless._worker import Outcome, StepAttempt, handle_step
from tests.serverless_fakes import (
    claim,
    drain,
    expire_lease,
    make_engine,
    start,
    state_of,
    take_messages,
    worker_like,
)
from tests.support.exact import assert_exact


def linear(calls: list[str] | None = None, **overrides: Any) -> Pipeline:
    calls = calls if calls is not None else []

    def step(name: str) -> Any:
        if name in overrides:
            override = overrides[name]

            @functools.wraps(override)  # keeps its signature: save_progress, should_stop
            def wrapped(context: dict[str, Any], **kwargs: Any) -> Any:
                calls.append(name)
                return override(context, **kwargs)

            return wrapped

        def run(context: dict[str, Any]) -> dict[str, Any]:
            calls.append(name)
            return {name: np.full(4, len(calls), dtype=np.int16), "last": name}

        return run

    return Pipeline(
        "lin",
        {n: {"function": step(n), "retries": 2} for n in ("a", "b", "c")},
        storage="memory://unused",
        cleanup_on_success=False,
    )


def commits(engine: Any, pipeline: str = "lin") -> dict[str, int]:
    return {k: v.commits for k, v in state_of(engine, pipeline).steps.items()}


def test_a_run_completes_and_equals_the_in_process_run() -> None:
    pipeline = linear()
    engine = make_engine(pipeline)
    start(engine, "lin", {"seed": 3})
    drain(engine)
    state = state_of(engine, "lin")
    assert state.status == "completed"
    assert commits(engine) == {"a": 1, "b": 1, "c": 1}
    serverless = engine.files(state).final_context(state, pipeline.spec)
    in_process = linear().run({"seed": 3})["context"]
    assert_exact(in_process, serverless)


def test_publishing_the_same_run_id_twice_makes_one_run() -> None:
    engine = make_engine(linear())
    start(engine, "lin", {"seed": 1})
    first = take_messages(engine)
    start(engine, "lin", {"seed": 1})  # redelivered start: re-publishes the unclaimed root
    assert [m.step for m in take_messages(engine)] == ["a"] == [m.step for m in first]
    handle_step(engine, first[0])
    start(engine, "lin", {"seed": 1})  # root now claimed: nothing published again
    assert [m.step for m in take_messages(engine)] == ["b"]
    with pytest.raises(BadMessageError, match="already exists with other params"):
        start(engine, "lin", {"seed": 2})


def test_the_same_step_message_delivered_5_times_concurrently_commits_once() -> None:
    calls: list[str] = []
    outcomes: list[Any] = []
    others_answered = threading.Event()

    def b(context: dict[str, Any]) -> dict[str, Any]:
        # The worker that claimed b holds it until every other delivery has been answered.
        assert others_answered.wait(60), "the other deliveries never answered"
        return {"b": 1}

    engine = make_engine(linear(calls, b=b))
    start(engine, "lin", {})
    drain(engine, limit=1)  # a
    (message,) = take_messages(engine)
    together = threading.Barrier(5, timeout=60)
    lock = threading.Lock()

    def deliver() -> None:
        worker = worker_like(engine)
        together.wait()
        outcome = handle_step(worker, message)
        with lock:
            outcomes.append(outcome)
            if len(outcomes) == 4:
                others_answered.set()

    threads = [threading.Thread(target=deliver) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert calls.count("b") == 1
    assert len(outcomes) == 5
    busy = Outcome.retry_later("another worker holds a live lease on this step")
    assert outcomes[:4] == [busy] * 4  # each duplicate: retry later, nothing run
    assert outcomes[4] == Outcome.done("committed; published ['c']")  # the one that ran b
    drain(engine)
    assert commits(engine) == {"a": 1, "b": 1, "c": 1}
    assert state_of(engine, "lin").status == "completed"


def test_a_crash_after_the_checkpoint_write_and_before_the_commit_reruns_under_a_new_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = make_engine(linear())
    start(engine, "lin", {})
    real_commit = StepAttempt.commit
    crashed: list[bool] = []

    def crash_once(*args: Any, **kwargs: Any) -> Any:
        if not crashed:
            crashed.append(True)
            raise SystemExit("killed between write and commit")
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(StepAttempt, "commit", crash_once)
    (message,) = take_messages(engine)
    with pytest.raises(SystemExit):
        handle_step(engine, message)
    assert handle_step(worker_like(engine), message).ack is False  # lease still live
    expire_lease(engine, "lin", "a")  # ... until the killed worker's lease runs out
    assert handle_step(worker_like(engine), message).ack is True
    drain(engine)
    state = state_of(engine, "lin")
    assert state.status == "completed" and commits(engine) == {"a": 1, "b": 1, "c": 1}
    assert state.steps["a"].attempt == 2 and state.steps["a"].manifest.endswith("attempt-0002.json")
    written = [n for n in engine.store.list("") if "/steps/a/" in n]
    assert len(written) == 2  # the orphan of attempt 1 is never referenced


def test_a_crash_after_the_commit_and_before_the_publish_republishes_successors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = make_engine(linear())
    start(engine, "lin", {})
    (message,) = take_messages(engine)
    real_publish = engine.publish_steps
    monkeypatch.setattr(engine, "publish_steps", lambda *a: (_ for _ in ()).throw(SystemExit()))
    with pytest.raises(SystemExit):
        handle_step(engine, message)
    monkeypatch.setattr(engine, "publish_steps", real_publish)
    assert state_of(engine, "lin").steps["b"].status == "queued"
    outcome = handle_step(engine, message)  # Pub/Sub redelivers: a is completed
    assert outcome.ack and "re-published ['b']" in outcome.reason
    drain(engine)
    assert commits(engine) == {"a": 1, "b": 1, "c": 1}


def test_a_stale_worker_finishing_after_its_lease_expired_is_refused() -> None:
    running, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow_a(context: dict[str, Any]) -> dict[str, Any]:
        if len(calls) == 1:
            running.set()
            assert release.wait(60)  # the first worker stalls past its lease
        return {"a": len(calls)}

    engine = make_engine(linear(calls, a=slow_a))
    engine.settings = type(engine.settings)(**{**vars(engine.settings), "heartbeat_seconds": 60})
    start(engine, "lin", {})
    (message,) = take_messages(engine)
    stale: list[Any] = []
    thread = threading.Thread(target=lambda: stale.append(handle_step(engine, message)))
    thread.start()
    assert running.wait(60)
    expire_lease(engine, "lin", "a")  # no heartbeat renewed it
    fresh = worker_like(engine)
    assert handle_step(fresh, message).ack is True  # took over and committed
    release.set()
    thread.join(timeout=60)
    assert stale[0].reason == "stale attempt"
    state = state_of(engine, "lin")
    assert state.steps["a"].commits == 1 and state.steps["a"].attempt == 2


def test_a_retryable_error_twice_then_success() -> None:
    failures = {"left": 2}

    def flaky(context: dict[str, Any]) -> dict[str, Any]:
        if failures["left"]:
            failures["left"] -= 1
            raise RetryableError("busy backend")
        return {"b": "ok"}

    engine = make_engine(linear(b=flaky))
    start(engine, "lin", {})
    log = drain(engine)
    b = [o for m, o in log if m.step == "b"]
    assert [o.ack for o in b] == [False, False, True]
    state = state_of(engine, "lin")
    assert (
        state.status == "completed" and state.steps["b"].failures == 2 and commits(engine)["b"] == 1
    )


def test_a_non_retryable_error_fails_the_step_and_the_run_at_once() -> None:
    def bad(context: dict[str, Any]) -> None:
        raise NonRetryableError("the video is corrupt")

    engine = make_engine(linear(b=bad))
    start(engine, "lin", {})
    drain(engine)
    state = state_of(engine, "lin")
    assert state.status == "error" and state.steps["b"].status == "error"
    assert "the video is corrupt" in (state.error or "")
    assert state.steps["b"].attempt == 1 and state.steps["c"].status == "not_started"


def test_retries_exhausted_fail_the_run() -> None:
    def always(context: dict[str, Any]) -> None:
        raise RuntimeError("still broken")

    engine = make_engine(linear(b=always))
    start(engine, "lin", {})
    drain(engine)
    state = state_of(engine, "lin")
    assert state.status == "error" and state.steps["b"].failures == 3  # retries=2, 3 attempts


def test_a_message_that_exhausts_its_deliveries_fails_the_run_with_the_reason() -> None:
    engine = make_engine(linear())
    start(engine, "lin", {})
    (message,) = take_messages(engine)
    verdict = record_dead_letter(engine, message, "5")
    assert "exhausted its delivery attempts (5 deliveries)" in verdict
    assert state_of(engine, "lin").status == "error"


def test_a_dead_letter_for_a_step_still_running_under_its_lease_changes_nothing() -> None:
    engine = make_engine(linear())
    start(engine, "lin", {})
    (message,) = take_messages(engine)
    claim(engine, "lin", "a")
    assert record_dead_letter(engine, message, "5") == "step still running under a live lease"
    assert state_of(engine, "lin").status == "running"


def test_the_watchdog_republishes_a_step_whose_worker_died() -> None:
    engine = make_engine(linear())
    start(engine, "lin", {})
    take_messages(engine)  # the worker that took it dies after its claim
    claim(engine, "lin", "a")
    assert watchdog_sweep(engine) == {}  # its lease is live
    expire_lease(engine, "lin", "a")
    assert watchdog_sweep(engine) == {"run-1": ["a"]}
    drain(engine)
    assert state_of(engine, "lin").status == "completed"


def test_cancel_stops_the_run_before_its_next_step() -> None:
    holder: dict[str, Any] = {}

    def b(context: dict[str, Any]) -> dict[str, Any]:
        cancel_run(holder["engine"], state_of(holder["engine"], "lin"))
        return {"b": 1}

    engine = make_engine(linear(b=b))
    holder["engine"] = engine
    start(engine, "lin", {})
    drain(engine)
    state = state_of(engine, "lin")
    assert state.status == "cancelled"
    assert state.steps["b"].status == "completed" and state.steps["c"].status == "cancelled"


def test_resume_after_a_failure_runs_only_from_the_failed_step() -> None:
    calls: list[str] = []
    broken = {"yes": True}

    def b(context: dict[str, Any]) -> dict[str, Any]:
        if broken["yes"]:
            raise NonRetryableError("bad input")
        return {"b": 2}

    engine = make_engine(linear(calls, b=b))
    start(engine, "lin", {})
    drain(engine)
    broken["yes"] = False
    calls.clear()
    _state, published = resume_run(engine, state_of(engine, "lin"))
    assert published == ["b"]
    drain(engine)
    assert calls == ["b", "c"] and state_of(engine, "lin").status == "completed"


def test_resume_from_step_rolls_back_to_that_steps_input_checkpoint() -> None:
    calls: list[str] = []
    engine = make_engine(linear(calls))
    start(engine, "lin", {})
    drain(engine)
    pipeline = engine.registry.get("lin")
    state = state_of(engine, "lin")
    expected_input = engine.files(state).context_at(state, pipeline.spec, "b")
    calls.clear()
    resumed, published = resume_run(engine, state, from_step="b")
    assert published == ["b"] and resumed.steps["c"].status == "not_started"
    context = engine.files(resumed).context_at(resumed, pipeline.spec, "b")
    assert_exact(expected_input, context)
    drain(engine)
    assert calls == ["b", "c"]
    assert state_of(engine, "lin").steps["b"].commits == 2  # once per (rolled-back) run


def test_a_diamond_fans_out_and_joins_once() -> None:
    joins: list[dict[str, Any]] = []
    pipeline = Pipeline(
        "diamond",
        {
            "root": lambda c: {"root": 1},
            "left": {"function": lambda c: {"left": c["root"] + 1}, "dependencies": ["root"]},
            "right": {"function": lambda c: {"right": c["root"] + 2}, "dependencies": ["root"]},
            "join": {
                "function": lambda c: joins.append(dict(c)) or {"sum": c["left"] + c["right"]},
                "dependencies": ["left", "right"],
            },
        },
        storage="memory://unused",
        cleanup_on_success=False,
    )
    engine = make_engine(pipeline)
    start(engine, "diamond", {})
    drain(engine, limit=1)
    fanned = take_messages(engine)
    assert sorted(m.step for m in fanned) == ["left", "right"]
    for message in fanned:
        handle_step(engine, message)
    assert [m.step for m in take_messages(engine)] == ["join"]  # queued exactly once
    engine.publish_steps(state_of(engine, "diamond"), ["join"])
    drain(engine)
    state = state_of(engine, "diamond")
    assert state.status == "completed" and len(joins) == 1
    assert joins[0]["left"] + joins[0]["right"] == 5
    assert {k: v.commits for k, v in state.steps.items()} == dict.fromkeys(pipeline.spec.order, 1)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not JSON"),
        (b'{"pipeline": "lin"}', "params: Field required"),
        (b'{"pipeline": "../etc", "params": {}}', "not a safe id"),
        (b'{"pipeline": "lin", "params": {}, "run_id": "a/b"}', "not a safe id"),
        (b"[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_start_messages_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadMessageError, match=reason):
        parse_start(data)


def test_a_start_message_for_an_unknown_pipeline_is_refused() -> None:
    engine = make_engine(linear())
    from resumable.serverless._control import start_run

    with pytest.raises(
        BadMessageError, match="unknown pipeline 'nope': this deployment serves lin"
    ):
        start_run(engine, StartMessage(pipeline="nope", params={}))


def test_a_step_message_for_an_unknown_step_is_acked_and_its_reason_recorded_on_the_run() -> None:
    engine = make_engine(linear())
    start(engine, "lin", {})
    outcome = handle_step(engine, StepMessage(pipeline="lin", run_id="run-1", step="zzz"))
    assert outcome.ack and "has no step 'zzz'" in outcome.reason
    state = state_of(engine, "lin")
    assert state.status == "running"  # a stray message cannot fail a healthy run
    assert "has no step 'zzz'" in state.rejected_messages[0]


def test_a_step_that_saves_progress_resumes_from_it_in_its_next_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    processed: list[int] = []

    def items(context: dict[str, Any], save_progress: Any) -> dict[str, Any]:
        for i in range(context.get("done", 0) + 1, 31):
            processed.append(i)
            if i % 10 == 0:
                context["done"] = i
                save_progress(context)
            if i == 25 and processed.count(25) == 1:
                raise SystemExit("killed")
        return {"items": 30}

    engine = make_engine(linear(b=items))
    start(engine, "lin", {})
    drain(engine, limit=1)
    (message,) = take_messages(engine)
    with pytest.raises(SystemExit):
        handle_step(engine, message)
    expire_lease(engine, "lin", "b")
    assert handle_step(worker_like(engine), message).ack
    assert processed == [*range(1, 26), *range(21, 31)]
    drain(engine)
    assert state_of(engine, "lin").status == "completed"


def test_cancelling_a_run_whose_worker_died_mid_step_ends_cancelled() -> None:
    engine = make_engine(linear())
    start(engine, "lin", {})
    take_messages(engine)
    claim(engine, "lin", "a")
    state = cancel_run(engine, state_of(engine, "lin"))
    assert state.status == "running" and state.cancel_requested  # a's lease is still live
    expire_lease(engine, "lin", "a")  # ... then its worker is gone for good
    watchdog_sweep(engine)
    state = state_of(engine, "lin")
    assert state.status == "cancelled" and state.steps["a"].status == "cancelled"


def test_a_storage_hiccup_while_loading_is_retried_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = make_engine(linear())
    start(engine, "lin", {})
    drain(engine, limit=1)
    real_load = StepAttempt.load
    calls: list[int] = []

    def flaky_load(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("storage unavailable")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(StepAttempt, "load", flaky_load)
    log = drain(engine)
    assert [o.ack for m, o in log if m.step == "b"] == [False, True]
    assert state_of(engine, "lin").status == "completed"
