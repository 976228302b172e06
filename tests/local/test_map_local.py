"""Map steps in the in-process runner: items from a context key or a storage prefix, per-item
retries, tolerated failures, results in item order, and a resume that runs only the items
not finished (or failed) yet."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from resumable import NonRetryableError, Pipeline
from resumable.errors import PipelineDefinitionError


def make(storage: Path, steps: dict[str, Any], **kw: Any) -> Pipeline:
    return Pipeline("mapped", steps, storage=str(storage), cleanup_on_success=False, **kw)


def test_a_map_over_a_context_list_returns_the_results_in_item_order(tmp_path: Path) -> None:
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    def square(item: int, context: Any) -> int:
        with lock:
            calls[item] += 1
        assert context["factor"] == 3  # the step's input, read-only
        with pytest.raises(TypeError):
            context["factor"] = 4
        return item * item * context["factor"]

    steps = {
        "list": lambda c: {"numbers": list(range(50))},
        "square": {"function": square, "map": "numbers", "concurrency": 8},
        "total": lambda c: {"total": sum(c["square"])},
    }
    result = make(tmp_path, steps).run({"factor": 3})
    assert result["status"] == "completed", result["errors"]
    assert result["context"]["square"] == [3 * i * i for i in range(50)]
    assert result["context"]["square_failed"] == []
    assert result["context"]["total"] == 3 * sum(i * i for i in range(50))
    assert set(calls.values()) == {1} and len(calls) == 50
    assert not [k for k in result["context"] if "__map_" in k]  # no internal keys left


def test_items_are_retried_alone_and_failures_within_the_tolerance_are_listed(
    tmp_path: Path,
) -> None:
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    def flaky(item: int, context: Any) -> int:
        with lock:
            calls[item] += 1
            tries = calls[item]
        if item % 10 == 0 and tries == 1:
            raise ConnectionError("transient")  # retried: succeeds on the second try
        if item in (7, 13):
            raise NonRetryableError(f"item {item} is corrupt")  # not retried
        return item

    steps = {
        "list": lambda c: {"numbers": list(range(30))},
        "work": {
            "function": flaky,
            "map": "numbers",
            "retries": 2,
            "tolerated_failures": 2,
            "concurrency": 4,
        },
    }
    result = make(tmp_path, steps, retry_backoff=0.0).run()
    assert result["status"] == "completed", result["errors"]
    output = result["context"]["work"]
    assert output[7] is None and output[13] is None
    assert [v for i, v in enumerate(output) if i not in (7, 13)] == [
        i for i in range(30) if i not in (7, 13)
    ]
    failed = result["context"]["work_failed"]
    assert [(f["index"], f["item"]) for f in failed] == [(7, 7), (13, 13)]
    assert "item 7 is corrupt" in failed[0]["error"]
    assert calls[0] == 2 and calls[7] == 1 and calls[1] == 1
    assert result["steps"]["work"]["attempts"] == 1  # item retries are not step attempts


def test_beyond_the_tolerance_the_step_fails_and_a_resume_runs_only_the_failed_items(
    tmp_path: Path,
) -> None:
    broken = {3, 11, 12}
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    def work(item: int, context: Any) -> str:
        with lock:
            calls[item] += 1
        if item in broken:
            raise ValueError(f"cannot read item {item}")
        return f"done-{item}"

    steps = {
        "list": lambda c: {"items": list(range(40))},
        "work": {
            "function": work,
            "map": "items",
            "retries": 1,
            "tolerated_failures": "5%",
            "concurrency": 5,
        },
        "after": lambda c: {"n": len(c["work"])},
    }
    pipeline = make(tmp_path, steps, retry_backoff=0.0)
    first = pipeline.run()
    assert first["status"] == "error"
    assert "3 of 40 items failed, more than the 2 tolerated" in first["errors"][0]
    assert "#3 (ValueError: cannot read item 3)" in first["errors"][0]
    assert first["steps"]["work"]["attempts"] == 1  # not retried as a whole
    assert calls == Counter({i: (2 if i in broken else 1) for i in range(40)})

    broken.clear()  # the cause is fixed
    calls.clear()
    second = make(tmp_path, steps, run_guid=first["run_guid"]).run(resume_from_checkpoint=True)
    assert second["status"] == "completed", second["errors"]
    assert calls == Counter({3: 1, 11: 1, 12: 1})  # exactly the failed items ran again
    assert second["context"]["work"] == [f"done-{i}" for i in range(40)]
    assert second["context"]["work_failed"] == []
    assert second["context"]["n"] == 40


def test_a_map_over_a_storage_prefix_lists_the_objects_once_sorted_and_filtered(
    tmp_path: Path,
) -> None:
    videos = tmp_path / "in" / "videos"
    (videos / "sub").mkdir(parents=True)
    for name in ("b.mp4", "a.mp4", "notes.txt", "sub/c.mp4"):
        (videos / name).write_bytes(name.encode())
    seen: list[str] = []
    lock = threading.Lock()

    def size(url: str, context: Any) -> int:
        with lock:
            seen.append(url)
        return len(url)

    source = f"file://{videos}/*.mp4"
    steps = {"sizes": {"function": size, "map": source, "concurrency": 2}}
    result = make(tmp_path / "runs", steps).run()
    assert result["status"] == "completed", result["errors"]
    expected = [f"file://{videos}/{n}" for n in ("a.mp4", "b.mp4", "sub/c.mp4")]
    assert sorted(seen) == expected
    assert result["context"]["sizes"] == [len(u) for u in expected]


def test_the_count_output_keeps_no_results(tmp_path: Path) -> None:
    steps = {
        "list": lambda c: {"items": ["a", "b", "c"]},
        "write": {"function": lambda item, c: item * 1000, "map": "items", "map_output": "count"},
    }
    result = make(tmp_path, steps).run()
    assert result["context"]["write"] == {"items": 3, "completed": 3}


def test_a_stop_during_a_map_ends_the_run_cancelled_and_a_resume_runs_only_the_rest(
    tmp_path: Path,
) -> None:
    calls: Counter[int] = Counter()
    lock = threading.Lock()
    pipeline_box: list[Pipeline] = []

    def work(item: int, context: Any) -> int:
        with lock:
            calls[item] += 1
        if item == 9:
            pipeline_box[0].request_stop()  # a cancel while items run
        return item

    steps = {
        "list": lambda c: {"items": list(range(30))},
        "work": {"function": work, "map": "items", "concurrency": 1},
    }
    pipeline = make(tmp_path, steps)
    pipeline_box.append(pipeline)
    first = pipeline.run()
    assert first["status"] == "cancelled"
    assert first["steps"]["work"]["status"] == "cancelled"
    assert sorted(calls) == list(range(10))  # no item started after the stop
    calls.clear()
    second = make(tmp_path, steps, run_guid=first["run_guid"]).run(resume_from_checkpoint=True)
    assert second["status"] == "completed", second["errors"]
    assert sorted(calls) == list(range(10, 30)) and set(calls.values()) == {1}
    assert second["context"]["work"] == list(range(30))


def test_a_map_step_with_a_timeout_continues_past_it_without_losing_items(tmp_path: Path) -> None:
    calls: Counter[int] = Counter()

    def work(item: int, context: Any, should_stop: Any) -> int:
        calls[item] += 1
        return item

    steps = {
        "list": lambda c: {"items": list(range(12))},
        # A timeout of ~0: should_stop() is true at once, so every call runs one item,
        # saves it and yields; the runner continues the step from its saved items.
        "work": {"function": work, "map": "items", "timeout": 1e-9},
    }
    result = make(tmp_path, steps).run()
    assert result["status"] == "completed", result["errors"]
    assert result["context"]["work"] == list(range(12))
    assert set(calls.values()) == {1}
    assert result["steps"]["work"]["continuations"] >= 11  # one item per call at least


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"map": 3}, "'map' must name a context key"),
        ({"map": "s3://bucket/x"}, "'map' URLs are gs:// or file://"),
        ({"map": "k", "tolerated_failures": -1}, "'tolerated_failures' must be an integer"),
        ({"map": "k", "tolerated_failures": "x%"}, "is not a percentage"),
        ({"map": "k", "tolerated_failures": "120%"}, "is not a percentage"),
        ({"map": "k", "map_output": "all"}, "'map_output' is 'results' or 'count'"),
        ({"tolerated_failures": 2}, "apply to map steps only"),
    ],
)
def test_a_bad_map_definition_is_refused_clearly(
    definition: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(PipelineDefinitionError, match=message):
        make(tmp_path, {"s": {"function": lambda item, c: item, **definition}})


def test_a_map_over_a_missing_or_non_list_key_fails_the_step_clearly(tmp_path: Path) -> None:
    steps = {"s": {"function": lambda item, c: item, "map": "items"}}
    missing = make(tmp_path, steps).run()
    assert missing["status"] == "error"
    assert "maps over context key 'items', which its input lacks" in missing["errors"][0]
    wrong = make(tmp_path, steps).run({"items": 5})
    assert "holds a int, not a list" in wrong["errors"][0]


KILLED_RUN = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from resumable import Pipeline

    log = Path(sys.argv[2])

    def work(item, context):
        with log.open("a") as f:
            f.write(f"{item}\\n")
        if item == 25 and not Path(sys.argv[3]).exists():
            Path(sys.argv[3]).touch()
            os._exit(9)  # the process dies mid-item
        return item * 2

    steps = {
        "list": lambda c: {"items": list(range(40))},
        "work": {"function": work, "map": "items", "concurrency": 1},
    }
    pipeline = Pipeline("mapped", steps, storage=sys.argv[1], run_guid="run-1",
                        cleanup_on_success=False)
    result = pipeline.run(resume_from_checkpoint=True)
    print(result["status"], result["context"].get("work") == [i * 2 for i in range(40)])
    """
)


def test_a_killed_process_resumes_the_map_with_only_the_unfinished_items(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    log = tmp_path / "calls.log"
    env = {**os.environ, "RESUMABLE_MAP_CHECKPOINT_ITEMS": "1"}
    args = [sys.executable, str(script), str(tmp_path / "runs"), str(log), str(tmp_path / "k")]
    killed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 9
    resumed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == ["completed", "True"]
    runs = Counter(int(line) for line in log.read_text().split())
    assert runs[25] == 2  # the item killed mid-way ran again
    assert {i for i, n in runs.items() if n != 1} == {25}  # and no other item did
