"""Steps longer than a delivery: ``should_stop()`` at the deadline, ``Continue()``, and the
clear failure of a step killed at its time limit without saving progress."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from resumable import Continue, Pipeline, save_progress
from tests.serverless_fakes import drain, make_engine, start, state_of
from tests.support.clock import ManualClock

TIMEOUT = 60.0  # the step's function timeout; deliveries stop 10 s before it
ITEMS = 30  # 10 s each: 300 s of work, 6 deliveries' worth


def long_pipeline(clock: ManualClock, processed: list[int], **step: Any) -> Pipeline:
    def long_step(context: dict[str, Any], save_progress: Any, should_stop: Any) -> Any:
        done = context.get("done", 0)
        while done < ITEMS:
            processed.append(done)
            clock.advance(10)  # the work of one item
            done += 1
            if should_stop():  # the deadline is near
                save_progress({"done": done})
                return Continue()
        return {"done": done}

    return Pipeline(
        "long",
        {"prepare": lambda c: {"x": 1}, "work": {"function": long_step, **step}},
        storage="memory://unused",
        cleanup_on_success=False,
    )


def test_a_step_five_times_longer_than_a_delivery_completes_across_continuations() -> None:
    clock = ManualClock()
    processed: list[int] = []
    engine = make_engine(long_pipeline(clock, processed, timeout=TIMEOUT), runtime=clock)
    engine.settings = dataclasses.replace(engine.settings, deadline_margin_seconds=10.0)
    start(engine, "long", {})
    drain(engine)
    state = state_of(engine, "long")
    assert state.status == "completed"
    record = state.steps["work"]
    assert record.continuations >= 5
    assert processed == list(range(ITEMS))  # every item exactly once
    assert record.failures == 0 and record.attempt - record.attempt_base == 1
    final = engine.files(state).final_context(state, engine.registry.get("long").spec)
    assert final["done"] == ITEMS


def test_a_step_killed_at_its_time_limit_without_progress_fails_clearly_after_one_attempt() -> None:
    class Killed(BaseException):
        pass

    clock = ManualClock()

    def stubborn(context: dict[str, Any]) -> dict[str, Any]:
        clock.advance(TIMEOUT + 5)  # runs past its function's timeout ...
        raise Killed  # ... and Cloud Run kills the instance

    pipeline = Pipeline(
        "stubborn",
        {"work": {"function": stubborn, "timeout": TIMEOUT, "retries": 3}},
        storage="memory://unused",
    )
    engine = make_engine(pipeline, runtime=clock)
    start(engine, "stubborn", {})
    with pytest.raises(Killed):
        drain(engine)
    clock.advance(engine.settings.lease_seconds)  # the lease runs out; Pub/Sub redelivers
    engine.publish_steps(state_of(engine, "stubborn"), ["work"])
    drain(engine)
    state = state_of(engine, "stubborn")
    assert state.status == "error" and state.steps["work"].attempt == 1
    assert "stopped at its time limit (60 s per delivery) without saving progress" in (
        state.error or ""
    )
    assert "return resumable.Continue() when should_stop() turns true" in (state.error or "")


def test_continue_without_saving_progress_is_an_error_not_a_loop() -> None:
    def lazy(context: dict[str, Any]) -> Any:
        return Continue()

    pipeline = Pipeline("lazy", {"work": lazy}, storage="memory://unused")
    engine = make_engine(pipeline)
    start(engine, "lazy", {})
    drain(engine)
    state = state_of(engine, "lazy")
    assert state.status == "error" and "without saving progress" in (state.error or "")
    in_process = Pipeline("lazy", {"work": lazy}, storage="memory://unused").run({})
    assert in_process["status"] == "error"
    assert "without saving progress" in in_process["errors"][0]


def test_in_process_the_same_step_continues_at_once_and_stops_at_its_timeout() -> None:
    calls: list[int] = []

    def step(context: dict[str, Any], should_stop: Any, time_left: Any) -> Any:
        done = context.get("done", 0)
        calls.append(done)
        assert time_left() <= 3600
        while done < 4:
            done += 1
            if should_stop() or done % 2 == 0:  # in two halves
                save_progress({"done": done})
                return Continue() if done < 4 else {"done": done}
        return {"done": done}

    result = Pipeline(
        "inproc", {"work": {"function": step, "timeout": 3600}}, storage="memory://unused"
    ).run({})
    assert result["status"] == "completed" and result["context"]["done"] == 4
    assert calls == [0, 2]
    assert result["steps"]["work"]["continuations"] == 1
    assert result["steps"]["work"]["attempts"] == 2
