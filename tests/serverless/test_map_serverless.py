"""Serverless map steps on in-memory services: one message per item, item state in item
documents, the join once, redrive of failed items, crashes and duplicates of item
deliveries. (The emulator tests in ``tests/integration/test_map_emulators.py`` run the
same protocol on the real services.)"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from resumable import NonRetryableError, Pipeline, RetryableError
from resumable.serverless import _map
from resumable.serverless._control import record_dead_letter, resume_run, watchdog_sweep
from resumable.serverless._map_state import ItemStatus, MemoryMapStore
from resumable.serverless._messages import StepMessage
from resumable.serverless._run_state import MemoryRunStateStore
from resumable.serverless._worker import handle_step
from tests.serverless_fakes import drain, make_engine, start, state_of, take_messages
from tests.support.clock import ManualClock

ITEMS = 40


def pipeline(calls: Counter[int], *, broken: set[int] | None = None, **options: Any) -> Pipeline:
    """``make`` lists ITEMS numbers; ``square`` maps over them; ``total`` sums the results."""
    broken = broken if broken is not None else set()

    def square(item: int, context: Any) -> dict[str, int]:
        calls[item] += 1
        assert context["offset"] == 1000  # the step's input, read-only
        if item in broken:
            raise NonRetryableError(f"item {item} is broken")
        return {"square": item * item + context["offset"]}

    def total(context: dict[str, Any]) -> dict[str, Any]:
        results = context["square"]
        if isinstance(results, dict):  # map_output="count"
            return {"total": results["completed"]}
        return {"total": sum(r["square"] for r in results if r is not None)}

    return Pipeline(
        "mapped",
        {
            "make": lambda c: {"numbers": list(range(ITEMS)), "offset": 1000},
            "square": {
                "function": square,
                "dependencies": ["make"],
                "map": "numbers",
                "concurrency": 4,
                **options,
            },
            "total": {"function": total, "dependencies": ["square"]},
        },
        storage="memory://unused",
        cleanup_on_success=False,
    )


def final(engine: Any, run_id: str = "run-1") -> dict[str, Any]:
    state = state_of(engine, "mapped", run_id)
    return engine.files(state).final_context(state, engine.registry.get("mapped").spec)


def expected_squares() -> list[dict[str, int]]:
    return [{"square": i * i + 1000} for i in range(ITEMS)]


def test_a_map_runs_every_item_once_and_outputs_the_results_in_item_order() -> None:
    calls: Counter[int] = Counter()
    engine = make_engine(pipeline(calls))
    start(engine, "mapped", {})
    drain(engine, limit=1000)
    state = state_of(engine, "mapped")
    assert state.status == "completed", state.error
    assert calls == Counter(range(ITEMS))
    context = final(engine)
    assert context["square"] == expected_squares()
    assert context["square_failed"] == []
    assert context["total"] == sum(r["square"] for r in expected_squares())
    record = state.steps["square"]
    assert record.items == {"total": ITEMS, "completed": ITEMS, "failed": 0}
    assert record.commits == 1 and record.failures == 0


def test_the_run_document_takes_a_bounded_number_of_writes_whatever_the_item_count() -> None:
    writes = []
    sizes = []
    for count in (10, 400):
        calls: Counter[int] = Counter()
        engine = make_engine(pipeline(calls))
        global ITEMS
        saved, ITEMS = ITEMS, count
        try:
            start(engine, "mapped", {})
            drain(engine, limit=5000)
        finally:
            ITEMS = saved
        assert isinstance(engine.runs, MemoryRunStateStore)
        state = state_of(engine, "mapped")
        assert state.status == "completed"
        writes.append(engine.runs.writes)
        sizes.append(len(orjson.dumps(state.model_dump())))
    assert writes[0] == writes[1]  # O(1) per map step, not O(items)
    assert abs(sizes[0] - sizes[1]) < 200


def test_too_many_failures_fail_the_step_listing_them_and_resume_runs_only_those() -> None:
    calls: Counter[int] = Counter()
    broken = {3, 17, 31}
    engine = make_engine(pipeline(calls, broken=broken, tolerated_failures=2))
    start(engine, "mapped", {})
    drain(engine, limit=1000)
    state = state_of(engine, "mapped")
    assert state.status == "error"
    error = state.steps["square"].error or ""
    assert "3 of 40 items failed, more than the 2 tolerated" in error
    for index in sorted(broken):
        assert f"#{index} (NonRetryableError: item {index} is broken)" in error
    assert "only the failed items run again" in error
    assert calls == Counter(range(ITEMS))

    broken.clear()  # the cause fixed
    calls.clear()
    resume_run(engine, state)
    drain(engine, limit=1000)
    state = state_of(engine, "mapped")
    assert state.status == "completed", state.error
    assert calls == Counter({3: 1, 17: 1, 31: 1})  # exactly the failed items, once each
    assert final(engine)["square"] == expected_squares()
    assert state.steps["square"].commits == 1


def test_failures_within_the_tolerance_complete_the_step_and_are_listed() -> None:
    calls: Counter[int] = Counter()
    engine = make_engine(pipeline(calls, broken={5}, tolerated_failures="5%"))
    start(engine, "mapped", {})
    drain(engine, limit=1000)
    state = state_of(engine, "mapped")
    assert state.status == "completed"
    context = final(engine)
    assert context["square"][5] is None
    assert context["square"][:5] == expected_squares()[:5]
    assert context["square_failed"] == [
        {"index": 5, "item": 5, "error": "NonRetryableError: item 5 is broken"}
    ]
    assert state.steps["square"].items == {"total": ITEMS, "completed": ITEMS - 1, "failed": 1}


def test_an_item_raising_a_retryable_error_is_redelivered_within_its_retries() -> None:
    calls: Counter[int] = Counter()
    flaky = {7: 2, 9: 5}  # item -> failures before it succeeds

    def work(item: int, context: Any) -> int:
        calls[item] += 1
        if calls[item] <= flaky.get(item, 0):
            raise RetryableError(f"item {item}: not yet")
        return item

    engine = make_engine(
        Pipeline(
            "mapped",
            {
                "make": lambda c: {"numbers": list(range(12))},
                "work": {
                    "function": work,
                    "dependencies": ["make"],
                    "map": "numbers",
                    "retries": 2,
                    "tolerated_failures": 1,
                },
            },
            storage="memory://unused",
            cleanup_on_success=False,
        )
    )
    start(engine, "mapped", {})
    drain(engine, limit=1000)
    state = state_of(engine, "mapped")
    assert state.status == "completed"
    assert calls[7] == 3  # two failures, then success
    assert calls[9] == 3  # 1 + its 2 retries, then failed (within the tolerance)
    context = final(engine)
    assert context["work"][7] == 7 and context["work"][9] is None
    assert [f["index"] for f in context["work_failed"]] == [9]
    assert "not yet" in context["work_failed"][0]["error"]


def test_duplicate_item_messages_run_the_item_once() -> None:
    calls: Counter[int] = Counter()
    engine = make_engine(pipeline(calls))
    start(engine, "mapped", {})
    log = []
    pending = take_messages(engine)
    while pending:
        message = pending.pop(0)
        outcome = handle_step(engine, message)
        log.append((message, outcome))
        if message.item is not None:
            assert handle_step(engine, message).ack  # a duplicate delivery: acked, not run
        fresh = take_messages(engine)
        pending.extend(fresh + [m for m in fresh if m.item is not None])  # and duplicates
    assert state_of(engine, "mapped").status == "completed"
    assert calls == Counter(range(ITEMS))


def test_an_item_whose_worker_died_is_taken_over_and_no_other_item_runs_again() -> None:
    clock = ManualClock()
    calls: Counter[int] = Counter()
    engine = make_engine(pipeline(calls), lease_seconds=10.0, runtime=clock)
    start(engine, "mapped", {})
    drain(engine, limit=2)  # make, then the driver: the item messages are out
    items = [m for m in take_messages(engine) if m.item is not None]
    assert len(items) == ITEMS
    victim = items[11]

    class Killed(BaseException):
        """The instance dies mid-item (a BaseException: nothing catches it)."""

    def die(item: int, context: Any) -> Any:
        calls[item] += 1
        raise Killed

    square = engine.registry.get("mapped").spec.steps["square"]
    original = square.function
    object.__setattr__(square, "function", die)
    with pytest.raises(Killed):
        handle_step(engine, victim)
    object.__setattr__(square, "function", original)
    assert not handle_step(engine, victim).ack  # its lease is live: retry later
    clock.advance(11)  # the dead worker's lease expires
    for message in items:
        assert handle_step(engine, message).ack
    drain(engine, limit=100)
    state = state_of(engine, "mapped")
    assert state.status == "completed"
    assert calls[11] == 2 and all(calls[i] == 1 for i in range(ITEMS) if i != 11)
    assert final(engine)["square"] == expected_squares()


def test_a_dispatcher_past_its_deadline_continues_from_its_cursor(monkeypatch: Any) -> None:
    monkeypatch.setattr(_map, "DISPATCH_BATCH", 7)
    clock = ManualClock()
    calls: Counter[int] = Counter()
    engine = make_engine(pipeline(calls, timeout=60), runtime=clock)
    engine.settings = dataclasses.replace(engine.settings, deadline_margin_seconds=10.0)
    published: list[int] = []
    publish_many = engine.publisher.publish_many

    def slow_publish(topic: str, messages: list[tuple[bytes, dict[str, str]]]) -> list[str]:
        clock.advance(20)  # each batch takes a third of the delivery
        published.extend(orjson.loads(data)["item"] for data, _ in messages)
        return publish_many(topic, messages)

    monkeypatch.setattr(engine.publisher, "publish_many", slow_publish)
    start(engine, "mapped", {})
    drain(engine, limit=2000)
    state = state_of(engine, "mapped")
    assert state.status == "completed", state.error
    assert sorted(published) == list(range(ITEMS))  # each item dispatched once
    assert state.steps["square"].failures == 0
    assert calls == Counter(range(ITEMS))


def test_the_last_items_finishing_together_ask_for_the_join_once() -> None:
    calls: Counter[int] = Counter()
    engine = make_engine(pipeline(calls))
    start(engine, "mapped", {})
    drain(engine, limit=2)
    items = [m for m in take_messages(engine) if m.item is not None]
    for message in items[:-2]:
        assert handle_step(engine, message).ack
    barrier = threading.Barrier(2)
    original = engine.maps.put_item

    def finish_together(key: Any, item: Any, version: Any, change: Any = None) -> bool:
        written = original(key, item, version, change)
        if written and change is not None and change.completed:
            barrier.wait(timeout=10)  # both items finished before either reads the counts
        return written

    engine.maps.put_item = finish_together  # type: ignore[method-assign]
    threads = [threading.Thread(target=handle_step, args=(engine, m)) for m in items[-2:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    joins = [m for m in take_messages(engine) if m.step == "square" and m.item is None]
    assert len(joins) == 1


def test_a_dead_lettered_item_fails_and_the_join_lists_it() -> None:
    calls: Counter[int] = Counter()
    engine = make_engine(pipeline(calls, tolerated_failures=1))
    start(engine, "mapped", {})
    drain(engine, limit=2)
    items = [m for m in take_messages(engine) if m.item is not None]
    for message in items[1:]:
        assert handle_step(engine, message).ack
    verdict = record_dead_letter(engine, items[0], "5")
    assert "item 0: failed" in verdict
    drain(engine, limit=100)
    state = state_of(engine, "mapped")
    assert state.status == "completed"
    failed = final(engine)["square_failed"]
    assert [f["index"] for f in failed] == [0]
    assert "dead-lettered after 5 delivery attempts" in failed[0]["error"]
    assert calls[0] == 0


def test_cancel_during_a_map_stops_it_and_resume_runs_only_the_unfinished_items() -> None:
    calls: Counter[int] = Counter()
    engine = make_engine(pipeline(calls))
    start(engine, "mapped", {})
    drain(engine, limit=2)
    items = [m for m in take_messages(engine) if m.item is not None]
    for message in items[:10]:
        handle_step(engine, message)
    from resumable.serverless._control import cancel_run

    cancel_run(engine, state_of(engine, "mapped"))
    for message in items[10:]:
        assert handle_step(engine, message).ack  # dropped: the run is cancelled
    drain(engine, limit=100)
    assert state_of(engine, "mapped").status == "cancelled"
    assert calls == Counter(range(10))
    resume_run(engine, state_of(engine, "mapped"))
    drain(engine, limit=1000)
    state = state_of(engine, "mapped")
    assert state.status == "completed"
    assert calls == Counter(range(ITEMS))
    assert final(engine)["square"] == expected_squares()


def test_the_watchdog_brings_back_a_join_whose_message_was_lost() -> None:
    clock = ManualClock()
    calls: Counter[int] = Counter()
    engine = make_engine(pipeline(calls), runtime=clock)
    start(engine, "mapped", {})
    drain(engine, limit=2)
    items = [m for m in take_messages(engine) if m.item is not None]
    for message in items:
        handle_step(engine, message)
    assert [m.step for m in take_messages(engine)] == ["square"]  # the join request: lost
    clock.advance(engine.settings.watchdog_grace_seconds + 1)
    assert watchdog_sweep(engine) == {"run-1": ["square"]}
    drain(engine, limit=100)
    assert state_of(engine, "mapped").status == "completed"


def test_a_map_over_a_prefix_lists_the_objects_once(tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("b.mp4", "a.mp4", "notes.txt", "c.mp4"):
        (folder / name).write_text(name)
    seen: list[str] = []

    def size(url: str, context: Any) -> int:
        seen.append(url)
        return len(Path(url.removeprefix("file://")).read_text())

    engine = make_engine(
        Pipeline(
            "prefix",
            {"sizes": {"function": size, "map": f"file://{folder}/*.mp4"}},
            storage="memory://unused",
            cleanup_on_success=False,
        )
    )
    start(engine, "prefix", {})
    drain(engine, limit=2)
    (folder / "d.mp4").write_text("late")  # after the listing: not an item
    drain(engine, limit=100)
    state = state_of(engine, "prefix")
    assert state.status == "completed"
    context = engine.files(state).final_context(state, engine.registry.get("prefix").spec)
    assert context["sizes"] == [5, 5, 5]
    assert sorted(seen) == [f"file://{folder}/{n}" for n in ("a.mp4", "b.mp4", "c.mp4")]


def test_count_output_keeps_only_the_counts() -> None:
    calls: Counter[int] = Counter()
    engine = make_engine(pipeline(calls, broken={2}, tolerated_failures=1, map_output="count"))
    start(engine, "mapped", {})
    drain(engine, limit=1000)
    state = state_of(engine, "mapped")
    context = final(engine)
    assert state.status == "completed"
    assert context["square"] == {"items": ITEMS, "completed": ITEMS - 1}
    assert [f["index"] for f in context["square_failed"]] == [2]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"step": "square", "item": 3}, "needs 'item' and 'map_id'"),
        ({"step": "make", "item": 3, "map_id": "m-1"}, "is not"),
    ],
)
def test_malformed_item_messages_are_acked_with_a_reason(
    fields: dict[str, Any], reason: str
) -> None:
    engine = make_engine(pipeline(Counter()))
    start(engine, "mapped", {})
    message = StepMessage(pipeline="mapped", run_id="run-1", generation=0, **fields)
    outcome = handle_step(engine, message)
    assert outcome.ack and reason in outcome.reason
    assert reason in (state_of(engine, "mapped").rejected_messages or [""])[-1]


def test_item_messages_for_an_unknown_map_or_item_are_acked() -> None:
    engine = make_engine(pipeline(Counter()))
    start(engine, "mapped", {})
    drain(engine, limit=2)
    real = next(m for m in take_messages(engine) if m.item is not None)
    unknown_map = real.model_copy(update={"map_id": "square-000"})
    past_the_end = real.model_copy(update={"item": ITEMS + 5})
    assert handle_step(engine, unknown_map).ack
    assert handle_step(engine, past_the_end).ack
    stale = real.model_copy(update={"generation": 7})
    assert "stale" in handle_step(engine, stale).reason


def test_item_documents_live_outside_the_run_document() -> None:
    engine = make_engine(pipeline(Counter()))
    start(engine, "mapped", {})
    drain(engine, limit=1000)
    state = state_of(engine, "mapped")
    assert isinstance(engine.maps, MemoryMapStore)
    doc_id = engine.doc_id("default", "mapped", "run-1")
    map_id = state.steps["square"].map_id
    assert map_id
    items = list(engine.maps.items(doc_id, map_id))
    assert len(items) == ITEMS and all(i.status == ItemStatus.COMPLETED for _, i in items)
    assert len(orjson.dumps(state.model_dump())) < 4000  # none of the 40 items in it


def test_resume_from_the_map_step_runs_every_item_again_with_a_new_map() -> None:
    calls: Counter[int] = Counter()
    engine = make_engine(pipeline(calls))
    start(engine, "mapped", {})
    drain(engine, limit=1000)
    first = state_of(engine, "mapped")
    assert first.status == "completed"
    calls.clear()
    resume_run(engine, first, from_step="square")
    drain(engine, limit=1000)
    state = state_of(engine, "mapped")
    assert state.status == "completed"
    assert calls == Counter(range(ITEMS))  # a roll-back re-runs the step: all its items
    assert state.steps["square"].map_id != first.steps["square"].map_id
    assert final(engine)["square"] == expected_squares()


def test_a_map_over_no_items_completes_with_empty_results() -> None:
    engine = make_engine(
        Pipeline(
            "empty",
            {
                "make": lambda c: {"xs": []},
                "each": {"function": lambda item, c: item, "dependencies": ["make"], "map": "xs"},
            },
            storage="memory://unused",
            cleanup_on_success=False,
        )
    )
    start(engine, "empty", {})
    drain(engine, limit=10)
    state = state_of(engine, "empty")
    assert state.status == "completed"
    context = engine.files(state).final_context(state, engine.registry.get("empty").spec)
    assert context["each"] == [] and context["each_failed"] == []


def test_an_item_returning_continue_fails_with_a_clear_error_and_no_retry() -> None:
    from resumable import Continue

    calls: Counter[int] = Counter()

    def item(x: int, context: Any) -> Any:
        calls[x] += 1
        return Continue() if x == 1 else x

    engine = make_engine(
        Pipeline(
            "cont",
            {
                "make": lambda c: {"xs": [0, 1, 2]},
                "each": {
                    "function": item,
                    "dependencies": ["make"],
                    "map": "xs",
                    "retries": 3,
                    "tolerated_failures": 1,
                },
            },
            storage="memory://unused",
            cleanup_on_success=False,
        )
    )
    start(engine, "cont", {})
    drain(engine, limit=50)
    state = state_of(engine, "cont")
    assert state.status == "completed" and calls[1] == 1
    context = engine.files(state).final_context(state, engine.registry.get("cont").spec)
    assert "cannot return Continue()" in context["each_failed"][0]["error"]
