"""One test per defect of the reliability review (issue 8), named after the guarantee it
broke. Each failed on release 0.1.0; the simulation (``tests/simulation``) hunts for the
schedules none of these thought of."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resumable import NonRetryableError, Pipeline, RetryableError, save_progress
from resumable.serverless._control import cancel_run, record_dead_letter, resume_run, watchdog_sweep
from resumable.serverless._engine import Engine
from resumable.serverless._messages import StepMessage
from resumable.serverless._run_state import Decision, RunState, document_size
from resumable.serverless._worker import handle_step
from resumable.storage import LocalStore, MemoryStore
from tests.serverless_fakes import claim, drain, make_engine, start, state_of, take_messages
from tests.support.clock import ManualClock
from tests.support.exact import assert_exact
from tests.support.faulty_stores import DeleteFailsOnce


class Killed(BaseException):
    """Stops a run where it stands, as a SIGKILL would (no handler runs)."""


# -- 1. in-process, parallel: a step's in-place change is not lost to a sibling's commit ----


def test_an_in_place_change_committed_beside_a_sibling_survives_a_resume(tmp_path: Path) -> None:
    c_saved = threading.Event()

    def events(event: Any) -> None:
        if event.kind == "checkpoint_saved" and event.step == "c":
            c_saved.set()

    def a(context: dict[str, Any]) -> dict[str, Any]:
        return {"arr": np.zeros(8, dtype=np.int64)}

    def b(context: dict[str, Any]) -> dict[str, Any]:
        assert c_saved.wait(30)  # c committed while b ran
        context["arr"] += 1  # in place
        return {"arr": context["arr"]}

    def c(context: dict[str, Any]) -> dict[str, Any]:
        return {"c": 1}

    def d(context: dict[str, Any]) -> dict[str, Any]:
        if crash["on"]:
            raise Killed
        return {"total": int(context["arr"].sum())}

    crash = {"on": True}
    steps = {
        "a": {"function": a},
        "b": {"function": b, "dependencies": ["a"]},
        "c": {"function": c, "dependencies": ["a"]},
        "d": {"function": d, "dependencies": ["b", "c"]},
    }
    store = LocalStore(tmp_path)

    def pipeline() -> Pipeline:
        return Pipeline("p1", steps, storage=store, run_id="r", max_workers=2)

    with pytest.raises(Killed):
        pipeline().run({}, on_event=events)
    crash["on"] = False
    result = pipeline().run(resume_from_checkpoint=True)
    assert result["status"] == "completed"
    assert result["context"]["total"] == 8  # b's change, not a's zeros


# -- 2. in-process, parallel: progress is per step --------------------------------------------


def _parallel_progress_pipeline(
    store: Any, calls: list[str], crash: dict[str, bool], gate: threading.Event
) -> Pipeline:
    def a(context: dict[str, Any]) -> dict[str, Any]:
        return {"x": "from a", "items": list(range(6))}

    def b(context: dict[str, Any]) -> dict[str, Any]:
        found = list(context.get("found", []))
        calls.append(f"b@{len(found)}")
        for item in context["items"][len(found) :]:
            found.append(item * 10)
            save_progress({**context, "found": found})  # the README's way, whole context
            if len(found) == 3:
                gate.set()  # let c commit now
                if crash["on"]:
                    c_done.wait(30)
                    raise Killed
        return {"found": found}

    c_done = threading.Event()

    def c(context: dict[str, Any]) -> dict[str, Any]:
        assert gate.wait(30)
        return {"x": "from c"}  # overwrites a's key while b runs

    def events(event: Any) -> None:
        if event.kind == "checkpoint_saved" and event.step == "c":
            c_done.set()

    def d(context: dict[str, Any]) -> dict[str, Any]:
        return {"summary": (context["x"], sum(context["found"]))}

    pipeline = Pipeline(
        "p2",
        {
            "a": {"function": a},
            "b": {"function": b, "dependencies": ["a"]},
            "c": {"function": c, "dependencies": ["a"]},
            "d": {"function": d, "dependencies": ["b", "c"]},
        },
        storage=store,
        run_id="r",
        max_workers=2,
    )
    pipeline._events = events  # type: ignore[attr-defined]
    return pipeline


def test_a_siblings_commit_keeps_a_running_steps_progress_and_its_stale_snapshot_loses(
    tmp_path: Path,
) -> None:
    calls: list[str] = []
    crash = {"on": True}
    store = LocalStore(tmp_path)
    first = _parallel_progress_pipeline(store, calls, crash, threading.Event())
    with pytest.raises(Killed):
        first.run({}, on_event=first._events)  # type: ignore[attr-defined]
    crash["on"] = False
    again = _parallel_progress_pipeline(store, calls, crash, threading.Event())
    result = again.run(resume_from_checkpoint=True)
    assert result["status"] == "completed"
    assert calls == ["b@0", "b@3"]  # resumed from its progress, not from the start
    assert result["context"]["summary"] == ("from c", sum(i * 10 for i in range(6)))


# -- 3. a version change never resumes from the old version's partial results ------------------


def test_a_new_step_version_starts_from_scratch_not_from_old_progress(tmp_path: Path) -> None:
    seen: list[list[int]] = []

    def b(context: dict[str, Any]) -> dict[str, Any]:
        found = list(context.get("found", []))
        seen.append(list(found))
        while len(found) < 4:
            found.append(len(found))
            save_progress({"found": found})
        return {"found": found}

    def c(context: dict[str, Any]) -> dict[str, Any]:
        if crash["on"]:
            raise Killed
        return {"n": len(context["found"])}

    crash = {"on": True}

    def pipeline(version: str) -> Pipeline:
        steps = {
            "a": {"function": lambda ctx: {"a": 1}},
            "b": {"function": b, "version": version},
            "c": {"function": c},
        }
        return Pipeline("p3", steps, storage=LocalStore(tmp_path), run_id="r")

    with pytest.raises(Killed):
        pipeline("1").run({})
    crash["on"] = False
    result = pipeline("2").run(resume_from_checkpoint=True)
    assert result["status"] == "completed" and result["steps_skipped"] == ["a"]
    assert seen == [[], []]  # version 2 did not start from version 1's items


# -- 8. in-process: a failed attempt's in-place changes do not leak -----------------------------


def test_a_retry_starts_from_the_committed_input_not_the_failed_attempts_changes() -> None:
    attempts: list[int] = []

    def a(context: dict[str, Any]) -> dict[str, Any]:
        return {"arr": np.zeros(4, dtype=np.int32)}

    def b(context: dict[str, Any]) -> dict[str, Any]:
        context["arr"] += 1  # in place, then fail the first time
        attempts.append(int(context["arr"][0]))
        if len(attempts) == 1:
            raise RetryableError("transient")
        return {"arr": context["arr"]}

    result = Pipeline(
        "p8", {"a": a, "b": {"function": b, "retries": 1}}, storage=MemoryStore(), retry_backoff=0
    ).run({})
    assert result["status"] == "completed"
    assert attempts == [1, 1]
    assert result["context"]["arr"].tolist() == [1, 1, 1, 1]


def test_the_error_checkpoint_holds_the_committed_input_not_a_failed_steps_changes(
    tmp_path: Path,
) -> None:
    broken = {"yes": True}

    def a(context: dict[str, Any]) -> dict[str, Any]:
        return {"arr": np.zeros(4, dtype=np.int32)}

    def b(context: dict[str, Any]) -> dict[str, Any]:
        context["arr"] += 5
        if broken["yes"]:
            raise NonRetryableError("bad input")
        return {"arr": context["arr"]}

    def pipeline() -> Pipeline:
        return Pipeline("p8b", {"a": a, "b": b}, storage=LocalStore(tmp_path), run_id="r")

    assert pipeline().run({})["status"] == "error"
    broken["yes"] = False
    result = pipeline().run(resume_from_checkpoint=True)
    assert result["context"]["arr"].tolist() == [5, 5, 5, 5]  # once, not 10


def test_in_process_and_serverless_give_a_step_the_same_input_in_a_graph() -> None:
    """A branch sees its ancestors' outputs only, in both runners (not a sibling's)."""

    def steps() -> dict[str, Any]:
        return {
            "load": {"function": lambda c: {"x": 1}},
            "left": {"function": lambda c: {"x": c["x"] + 10}, "dependencies": ["load"]},
            "right": {"function": lambda c: {"seen": c["x"]}, "dependencies": ["load"]},
        }

    in_process = Pipeline("graph", steps(), storage=MemoryStore()).run({})["context"]
    serverless = Pipeline("graph", steps(), storage="memory://unused", cleanup_on_success=False)
    engine = make_engine(serverless)
    start(engine, "graph", {})
    drain(engine)
    state = state_of(engine, "graph")
    assert_exact(in_process, engine.files(state).final_context(state, serverless.spec))
    assert in_process["seen"] == 1


# -- serverless ---------------------------------------------------------------------------------


def linear(calls: list[str], **overrides: Any) -> Pipeline:
    def make(name: str) -> Any:
        if name in overrides:
            return overrides[name]

        def step(context: dict[str, Any]) -> dict[str, Any]:
            calls.append(name)
            return {name: len(calls)}

        return step

    return Pipeline(
        "lin",
        {n: {"function": make(n), "retries": 1} for n in ("a", "b", "c")},
        storage="memory://unused",
        cleanup_on_success=False,
    )


class SlowStore(MemoryStore):
    """Storage on a slow link: every read of a step manifest moves the clock on."""

    def __init__(self, clock: ManualClock, seconds: float) -> None:
        super().__init__()
        self.clock = clock
        self.seconds = seconds
        self.slow = False

    def read_buffer(self, name: str) -> bytearray:
        if self.slow:
            self.clock.advance(self.seconds)
        return super().read_buffer(name)

    def read(self, name: str) -> bytes:
        if self.slow and "/steps/" in name:
            self.clock.advance(self.seconds)
        return super().read(name)


def test_4_the_lease_lives_while_the_input_loads_however_long_it_takes() -> None:
    clock = ManualClock()
    engine = make_engine(linear([]), lease_seconds=60, runtime=clock)
    engine.store = store = SlowStore(clock, seconds=200)  # > 3 leases per manifest read
    start(engine, "lin", {})
    drain(engine, limit=1)  # a committed
    (message,) = take_messages(engine)
    store.slow = True
    swept: list[dict[str, list[str]]] = []
    real_read = store.read

    def read_then_sweep(name: str) -> bytes:
        data = real_read(name)
        swept.append(watchdog_sweep(engine))  # the watchdog runs while b loads
        return data

    store.read = read_then_sweep  # type: ignore[method-assign]
    outcome = handle_step(engine, message)
    assert outcome.ack and outcome.reason.startswith("committed"), outcome
    assert all(not republished for republished in swept)  # the lease never looked lost
    assert state_of(engine, "lin").steps["b"].attempt == 1


def test_5_a_cancel_during_the_last_step_ends_completed_and_resume_completes_a_finished_run() -> (
    None
):
    holder: dict[str, Engine] = {}

    def c(context: dict[str, Any]) -> dict[str, Any]:
        cancel_run(holder["engine"], state_of(holder["engine"], "lin"))
        return {"c": 1}

    engine = holder["engine"] = make_engine(linear([], c=c))
    start(engine, "lin", {})
    drain(engine)
    state = state_of(engine, "lin")
    assert state.status == "completed" and state.steps["c"].status == "completed"

    # A run left "cancelled" with every step completed (as 0.1.0 left them) is repaired.
    def leave_cancelled(s: RunState) -> Decision[None]:
        new = s.model_copy(deep=True)
        new.status = "cancelled"
        return Decision(None, new)

    engine.runs.mutate(engine.doc_id("default", "lin", "run-1"), leave_cancelled)
    resumed, published = resume_run(engine, state_of(engine, "lin"))
    assert resumed.status == "completed" and published == []


def test_5_the_watchdog_finishes_a_running_run_with_nothing_left_to_run() -> None:
    engine = make_engine(linear([]))
    start(engine, "lin", {})
    drain(engine)

    def reopen(s: RunState) -> Decision[None]:
        new = s.model_copy(deep=True)
        new.status, new.finished_at = "running", None
        return Decision(None, new)

    engine.runs.mutate(engine.doc_id("default", "lin", "run-1"), reopen)
    watchdog_sweep(engine)
    assert state_of(engine, "lin").status == "completed"


def test_6_a_late_dead_letter_does_not_fail_a_run_resumed_since() -> None:
    engine = make_engine(linear([]))
    start(engine, "lin", {})
    drain(engine, limit=1)
    (message,) = take_messages(engine)  # b's message, generation 0
    assert "exhausted" in record_dead_letter(engine, message, "10")
    assert state_of(engine, "lin").status == "error"
    resume_run(engine, state_of(engine, "lin"))
    verdict = record_dead_letter(engine, message, "10")  # the same dead letter, again
    assert "stale dead letter" in verdict
    old = StepMessage(pipeline="lin", run_id="run-1", step="b")  # 0.1.0: no generation
    assert "before the run was resumed" in record_dead_letter(engine, old, "10")
    assert state_of(engine, "lin").status == "running"
    drain(engine)
    assert state_of(engine, "lin").status == "completed"


def test_7_the_watchdog_visits_every_running_run_and_one_failure_stops_none() -> None:
    clock = ManualClock()
    engine = make_engine(linear([]), lease_seconds=60, runtime=clock)
    for n in range(1005):
        start(engine, "lin", {}, run_id=f"r{n:04d}")
        clock.advance(1)
    take_messages(engine)  # every root message is lost
    real_publish = engine.publisher.publish

    def publish(topic: str, data: bytes, attributes: dict[str, str] | None = None) -> str:
        if b'"r0003"' in data:
            raise ConnectionError("Pub/Sub unavailable")
        return real_publish(topic, data, attributes)

    engine.publisher.publish = publish  # type: ignore[method-assign]
    clock.advance(10_000)
    republished = watchdog_sweep(engine)
    assert len(republished) == 1004 and "r0000" in republished and "r0003" not in republished


def test_10_resume_after_a_cancel_continues_from_the_saved_progress() -> None:
    processed: list[int] = []
    clock = ManualClock()
    holder: dict[str, Engine] = {}

    def b(context: dict[str, Any], should_stop: Any) -> dict[str, Any]:
        for item in range(context.get("done", 0), 40):
            processed.append(item)
            save_progress({"done": item + 1})
            if item == 18 and processed.count(18) == 1:
                engine = holder["engine"]
                cancel_run(engine, state_of(engine, "lin"))
                clock.advance(engine.settings.heartbeat_seconds)  # the heartbeat sees it
            if should_stop():
                raise RetryableError("stopping: the run is being cancelled")
        return {"done": 40}

    engine = holder["engine"] = make_engine(linear([], b=b), runtime=clock)
    start(engine, "lin", {})
    drain(engine)
    assert state_of(engine, "lin").status == "cancelled"
    processed.clear()
    resume_run(engine, state_of(engine, "lin"))
    drain(engine)
    assert state_of(engine, "lin").status == "completed"
    assert processed[0] == 19  # not 0


def test_11_a_huge_error_message_is_stored_bounded() -> None:
    def b(context: dict[str, Any]) -> dict[str, Any]:
        raise NonRetryableError("x" * 3_000_000)

    engine = make_engine(linear([], b=b))
    start(engine, "lin", {})
    drain(engine)
    state = state_of(engine, "lin")
    assert state.status == "error"
    assert document_size(state) < 64 * 1024
    assert "more characters in the logs" in (state.steps["b"].error or "")


def test_a_start_message_redelivered_after_cleanup_writes_nothing() -> None:
    pipeline = Pipeline("clean", {"a": lambda c: {"a": 1}}, storage="memory://unused")
    engine = make_engine(pipeline)
    start(engine, "clean", {"p": 1})
    drain(engine)
    assert state_of(engine, "clean").status == "completed"
    assert list(engine.store.list("runs/")) == []  # cleaned up
    start(engine, "clean", {"p": 1})  # redelivered
    assert list(engine.store.list("runs/")) == []
    assert take_messages(engine) == []


def test_resume_from_a_step_of_a_run_whose_checkpoints_were_deleted_is_refused() -> None:
    from resumable.errors import RunControlError

    pipeline = Pipeline("clean", {"a": lambda c: {"a": 1}}, storage="memory://unused")
    engine = make_engine(pipeline)
    start(engine, "clean", {})
    drain(engine)
    with pytest.raises(RunControlError, match="were deleted \\(when it completed"):
        resume_run(engine, state_of(engine, "clean"), from_step="a")


def test_a_stale_workers_commit_is_refused_after_another_took_the_step_over() -> None:
    clock = ManualClock()
    engine = make_engine(linear([]), lease_seconds=60, runtime=clock)
    start(engine, "lin", {})
    stale = claim(engine, "lin", "a")
    clock.advance(61)  # its lease expires (a frozen process, a lost network)
    fresh = claim(engine, "lin", "a")  # another worker takes the step over
    assert not stale.commit("steps/a/stale.json", 1, ["a"]).committed
    assert fresh.commit("steps/a/fresh.json", 1, ["a"]).committed
    record = state_of(engine, "lin").steps["a"]
    assert (record.commits, record.manifest) == (1, "steps/a/fresh.json")


def test_9_a_finished_runs_checkpoints_are_deleted_by_finish_time_not_creation_time() -> None:
    from resumable.serverless._control import collect_garbage

    clock = ManualClock()
    day = 86400.0

    def b(context: dict[str, Any]) -> dict[str, Any]:
        if broken["yes"]:
            raise NonRetryableError("bad input")
        return {"b": 1}

    broken = {"yes": True}
    engine = make_engine(linear([], b=b), runtime=clock)
    start(engine, "lin", {}, run_id="old")
    drain(engine)
    clock.advance(40 * day)  # the run was created 40 days ago and failed then ...
    broken["yes"] = False
    resume_run(engine, state_of(engine, "lin", "old"))  # ... and is resumed now
    drain(engine)
    start(engine, "lin", {}, run_id="kept")  # fails now, its checkpoints kept
    broken["yes"] = True
    drain(engine)
    assert state_of(engine, "lin", "old").status == "completed"
    assert collect_garbage(engine) == []  # nothing finished 30 days ago
    clock.advance(31 * day)
    assert sorted(collect_garbage(engine)) == ["kept", "old"]
    assert list(engine.store.list("runs/")) == []
    assert state_of(engine, "lin", "old").files_deleted
    assert collect_garbage(engine) == []


def test_expired_checkpoints_whose_deletion_failed_are_deleted_by_a_later_sweep() -> None:
    from resumable.serverless._control import collect_garbage

    clock = ManualClock()
    engine = make_engine(linear([]), runtime=clock)
    engine.store = DeleteFailsOnce()
    start(engine, "lin", {}, run_id="old")
    drain(engine)
    assert state_of(engine, "lin", "old").status == "completed"
    assert list(engine.store.list("runs/"))  # kept: the pipeline keeps checkpoints
    clock.advance(31 * 86400.0)
    assert collect_garbage(engine) == []  # the deletion failed (logged)
    assert list(engine.store.list("runs/"))
    assert collect_garbage(engine) == ["old"]  # the next sweep retries it
    assert list(engine.store.list("runs/")) == []


def test_a_completed_runs_checkpoints_whose_cleanup_failed_are_deleted_later() -> None:
    from resumable.serverless._control import collect_garbage

    clock = ManualClock()
    engine = make_engine(linear([]).replace(cleanup_on_success=True), runtime=clock)
    engine.store = DeleteFailsOnce()
    start(engine, "lin", {}, run_id="done")
    drain(engine)
    assert state_of(engine, "lin", "done").status == "completed"
    assert list(engine.store.list("runs/"))  # the cleanup failed
    clock.advance(31 * 86400.0)
    collect_garbage(engine)
    assert list(engine.store.list("runs/")) == []
