"""The in-process runner: step order, retries, failures, stop requests, parallel steps,
and the original's checkpoint error handling."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from resumable import (
    InvalidIdError,
    NonRetryableError,
    Pipeline,
    PipelineDefinitionError,
    RetryableError,
)
from resumable._ids import chosen_run_id
from resumable.errors import StorageError
from resumable.storage import MemoryStore


def test_steps_run_in_order_and_results_merge_into_the_context() -> None:
    seen: list[dict[str, Any]] = []

    def first(context: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(context))
        return {"a": 1}

    def second(context: dict[str, Any]) -> int:
        seen.append(dict(context))
        return context["a"] + 1

    result = Pipeline("p", {"first": first, "second": second}, storage=MemoryStore()).run({"x": 0})
    assert result["status"] == "completed"
    assert seen == [{"x": 0}, {"x": 0, "a": 1}]
    assert result["context"] == {"x": 0, "a": 1, "second_result": 2}
    assert result["steps_completed"] == ["first", "second"]
    assert set(result) >= {
        "pipeline_name", "status", "run_guid", "run_folder", "steps_completed", "steps_failed",
        "steps_skipped", "errors", "context", "resumed_from_checkpoint",
    }  # fmt: skip


def test_a_retryable_error_is_retried_then_succeeds() -> None:
    attempts: list[int] = []

    def flaky(context: dict[str, Any]) -> dict[str, Any]:
        attempts.append(1)
        if len(attempts) < 3:
            raise RetryableError("busy")
        return {"ok": True}

    pipeline = Pipeline(
        "p", {"flaky": {"function": flaky, "retries": 2}}, storage=MemoryStore(), retry_backoff=0.01
    )
    result = pipeline.run()
    assert result["status"] == "completed"
    assert len(attempts) == 3
    assert result["steps"]["flaky"]["attempts"] == 3


def test_a_non_retryable_error_fails_at_once_and_keeps_the_checkpoint() -> None:
    calls: list[str] = []

    def bad(context: dict[str, Any]) -> None:
        calls.append("bad")
        raise NonRetryableError("input video is missing")

    store = MemoryStore()
    pipeline = Pipeline(
        "p",
        {"ok": lambda c: {"a": 1}, "bad": {"function": bad, "retries": 5}, "never": lambda c: None},
        storage=store,
    )
    result = pipeline.run()
    assert result["status"] == "error"
    assert calls == ["bad"]
    assert result["steps_failed"] == ["bad"]
    assert result["steps"]["never"]["status"] == "not_started"
    assert "input video is missing" in result["errors"][0]
    loaded = pipeline.load_checkpoint()
    assert loaded is not None and loaded.manifest.status == "error"
    assert loaded.manifest.completed_steps == ["ok"]


def test_resume_after_a_failure_runs_only_from_the_failed_step() -> None:
    store = MemoryStore()
    calls: list[str] = []
    broken = {"yes": True}

    def make() -> dict[str, Any]:
        def a(c: dict[str, Any]) -> dict[str, Any]:
            calls.append("a")
            return {"a": 1}

        def b(c: dict[str, Any]) -> dict[str, Any]:
            calls.append("b")
            if broken["yes"]:
                raise ValueError("boom")
            return {"b": 2}

        return {"a": a, "b": b, "c": lambda c: calls.append("c")}

    first = Pipeline("p", make(), storage=store)
    assert first.run()["status"] == "error"
    broken["yes"] = False
    calls.clear()
    result = Pipeline("p", make(), storage=store, run_guid=first.run_guid).run(
        resume_from_checkpoint=True
    )
    assert result["status"] == "completed"
    assert calls == ["b", "c"]
    assert result["steps_skipped"] == ["a"]


def test_a_stop_request_ends_the_run_cancelled_between_steps_and_offers_should_stop() -> None:
    store = MemoryStore()
    observed: list[bool] = []
    holder: dict[str, Pipeline] = {}

    def long_step(context: dict[str, Any], should_stop: Any) -> dict[str, Any]:
        holder["p"].request_stop()
        observed.append(should_stop())
        return {"partial": True}

    pipeline = Pipeline("p", {"long": long_step, "next": lambda c: {"next": 1}}, storage=store)
    holder["p"] = pipeline
    result = pipeline.run()
    assert observed == [True]
    assert result["status"] == "cancelled"
    assert result["steps_completed"] == ["long"]
    assert result["steps"]["next"]["status"] == "cancelled"
    resumed = Pipeline(
        "p",
        {"long": long_step, "next": lambda c: {"next": 1}},
        storage=store,
        run_guid=pipeline.run_guid,
    ).run(resume_from_checkpoint=True)
    assert resumed["status"] == "completed" and resumed["steps_completed"] == ["next"]


def test_a_failed_checkpoint_save_warns_and_the_run_goes_on() -> None:
    class FailingStore(MemoryStore):
        def write(self, name: str, data: Any, *, if_generation_match: int | None = None) -> int:
            raise StorageError("disk full")

    result = Pipeline("p", {"a": lambda c: {"a": 1}}, storage=FailingStore()).run()
    assert result["status"] == "completed"
    assert any("disk full" in w and "checkpoint" in w for w in result["warnings"])
    with pytest.raises(StorageError, match="disk full"):
        Pipeline(
            "p", {"a": lambda c: {"a": 1}}, storage=FailingStore(), fail_on_checkpoint_error=True
        ).run()


def test_an_unencodable_value_warns_naming_its_key_path() -> None:
    result = Pipeline("p", {"a": lambda c: {"bad": [object()]}}, storage=MemoryStore()).run()
    assert result["status"] == "completed"
    assert any("context['bad'][0]" in w and "object" in w for w in result["warnings"])


def test_a_diamond_runs_both_branches_in_parallel_and_joins_once() -> None:
    barrier = threading.Barrier(2, timeout=60)
    joins: list[dict[str, Any]] = []

    def branch(name: str) -> Any:
        def run(context: dict[str, Any]) -> dict[str, Any]:
            barrier.wait()  # both branches must be running at the same time
            return {name: context["root"] + 1}

        return run

    def join(context: dict[str, Any]) -> dict[str, Any]:
        joins.append(dict(context))
        return {"sum": context["left"] + context["right"]}

    result = Pipeline(
        "diamond",
        {
            "root": lambda c: {"root": 1},
            "left": {"function": branch("left"), "dependencies": ["root"]},
            "right": {"function": branch("right"), "dependencies": ["root"]},
            "join": {"function": join, "dependencies": ["left", "right"]},
        },
        storage=MemoryStore(),
        max_workers=2,
    ).run()
    assert result["status"] == "completed", result["errors"]
    assert len(joins) == 1 and joins[0]["left"] == joins[0]["right"] == 2
    assert result["context"]["sum"] == 4


def test_parallel_branches_writing_the_same_key_are_a_conflict() -> None:
    both_running = threading.Barrier(2, timeout=60)

    def writes(value: str) -> Any:
        def run(context: dict[str, Any]) -> dict[str, Any]:
            both_running.wait()  # the two branches run at the same time
            return {"shared": value}

        return run

    result = Pipeline(
        "p",
        {
            "root": lambda c: {},
            "left": {"function": writes("left"), "dependencies": ["root"]},
            "right": {"function": writes("right"), "dependencies": ["root"]},
        },
        storage=MemoryStore(),
        max_workers=2,
    ).run()
    assert result["status"] == "error"
    assert "both write context key 'shared'" in result["errors"][0]


@pytest.mark.parametrize(
    ("definitions", "message"),
    [
        ({"a": {"function": len, "dependencies": ["zzz"]}}, "unknown step 'zzz'"),
        (
            {"a": {"function": len, "dependencies": ["b"]}, "b": {"function": len}},
            "dependency cycle",
        ),
        ({"a": {"description": "no function"}}, "'function' must be callable"),
        ({"a": {"function": len, "retries": -1}}, "'retries' must be an integer"),
        ({"a/../b": {"function": len}}, "not a safe id"),
        ({"a": {"function": len, "colour": "red"}}, "unknown option"),
    ],
)
def test_invalid_definitions_are_refused_clearly(definitions: dict[str, Any], message: str) -> None:
    with pytest.raises(PipelineDefinitionError, match=message):
        Pipeline("p", definitions, storage=MemoryStore())


@pytest.mark.parametrize("run_id", ["../other", "a/b", "..", "", "x" * 200, ".hidden", "a\nb"])
def test_unsafe_run_ids_are_refused(run_id: str) -> None:
    with pytest.raises(InvalidIdError, match="not a safe id"):
        Pipeline("p", {"a": len}, storage=MemoryStore(), run_guid=run_id or "..")


def test_a_new_pipeline_object_with_the_run_id_resumes_the_run() -> None:
    store = MemoryStore()
    calls: list[str] = []

    def steps() -> dict[str, Any]:
        return {
            "a": lambda c: calls.append("a") or {"a": 1},
            "b": lambda c: (
                (_ for _ in ()).throw(RuntimeError("crash")) if not calls.count("x") else None
            ),
        }

    first = Pipeline("p", steps(), storage=store)
    first.run()
    calls.append("x")
    again = Pipeline("p", steps(), storage=store, run_guid=first.run_guid).run(
        resume_from_checkpoint=True
    )
    assert again["status"] == "completed"
    assert calls.count("a") == 1
    assert Pipeline("p", steps(), storage=store).run_guid != first.run_guid


def test_progress_saved_before_a_failure_is_where_the_retry_and_the_resume_start() -> None:
    store = MemoryStore()
    seen: list[int] = []
    failures = {"left": 2}

    def items(context: dict[str, Any], save_progress: Any) -> dict[str, Any]:
        start = context.get("done", 0)
        seen.append(start)
        for i in range(start + 1, 31):
            if i % 10 == 0:
                save_progress({"done": i})  # just the progress key: merged into the context
            if i == 25 and failures["left"]:
                failures["left"] -= 1
                raise RetryableError("flaky") if failures["left"] else NonRetryableError("stop")
        return {"total": 30}

    pipeline = Pipeline(
        "p", {"items": {"function": items, "retries": 1}}, storage=store, retry_backoff=0.01
    )
    first = pipeline.run({"x": 1})
    assert first["status"] == "error"
    assert seen == [0, 20]  # the retry started from the saved progress
    resumed = Pipeline("p", {"items": items}, storage=store, run_guid=pipeline.run_guid).run(
        resume_from_checkpoint=True
    )
    assert resumed["status"] == "completed"
    assert seen == [0, 20, 20] and resumed["context"]["x"] == 1


def test_in_place_changes_are_saved_by_default_and_trusted_away_on_request() -> None:
    import numpy as np

    def make(store: MemoryStore, detect: bool) -> Pipeline:
        def fill(context: dict[str, Any]) -> dict[str, Any]:
            return {"frames": np.zeros(100_000, dtype=np.uint8), "note": "a"}

        def touch(context: dict[str, Any]) -> dict[str, Any]:
            context["frames"][0] = 7  # changed in place, not returned
            context["note"] = "b"  # rebound without being returned
            return {"done": True}

        return Pipeline(
            "p",
            {"fill": fill, "touch": touch},
            storage=store,
            cleanup_on_success=False,
            detect_in_place_changes=detect,
        )

    exact, trusting = MemoryStore(), MemoryStore()
    make(exact, True).run()
    make(trusting, False).run()
    loaded_exact = Pipeline(
        "p", {"fill": len, "touch": len}, storage=exact, run_guid=_only_run(exact)
    ).load_checkpoint()
    loaded_trusting = Pipeline(
        "p", {"fill": len, "touch": len}, storage=trusting, run_guid=_only_run(trusting)
    ).load_checkpoint()
    assert loaded_exact is not None and loaded_trusting is not None
    assert loaded_exact.context["frames"][0] == 7
    assert loaded_trusting.context["frames"][0] == 0  # the documented trade-off
    assert loaded_exact.context["note"] == loaded_trusting.context["note"] == "b"


def _only_run(store: MemoryStore) -> str:
    (run,) = {name.split("/")[3] for name in store.list("runs/default/p/")}
    return run


def test_a_step_returning_non_string_keys_fails_naming_the_step_and_the_keys() -> None:
    pipeline = Pipeline("p", {"a": lambda c: {1: "x", "ok": 2}}, storage=MemoryStore())
    result = pipeline.run({})
    assert result["status"] == "error" and result["steps_failed"] == ["a"]
    assert "step 'a' returned non-string context keys [1]" in result["errors"][0]


def test_an_empty_run_id_is_refused_by_the_id_choice() -> None:
    with pytest.raises(InvalidIdError, match="run id '' is not a safe id"):
        chosen_run_id("")
    with pytest.raises(InvalidIdError):
        chosen_run_id(None, "")
    with pytest.raises(ValueError, match="aliases"):
        chosen_run_id("a", "b")
    assert chosen_run_id("a", "a") == chosen_run_id(None, "a") == "a"
    assert chosen_run_id(None) != chosen_run_id(None)  # a new one each time


def test_an_empty_run_guid_is_a_clear_error_not_a_silent_new_run() -> None:
    with pytest.raises(InvalidIdError, match="run id '' is not a safe id"):
        Pipeline("p", {"a": lambda c: None}, storage=MemoryStore(), run_guid="")
