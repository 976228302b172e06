"""How the CLI shows a serverless run (cli._views): the heading and table of ``status``
and the change lines of ``watch``, for the states a run passes through — another
tenant, a cancel requested while a step runs, a failure that will be retried."""

from __future__ import annotations

import io
import time

from rich.console import Console

from resumable.cli._views import RunChanges, clock, run_view, took
from resumable.serverless._run_state import RunState, StepState

NOW = 1_800_000_000.0


def state(**changes: object) -> RunState:
    base = RunState(
        run_id="r-1",
        pipeline="video",
        tenant_id="acme",
        fingerprint="f",
        params_manifest="m",
        params_hash="h",
        created_at=NOW - 90,
        updated_at=NOW - 1,
        steps={
            "load": StepState(status="completed", attempt=1, started_at=NOW - 80,
                              finished_at=NOW - 70, checkpoint_bytes=2048),
            "detect": StepState(status="running", attempt=2, started_at=NOW - 12.5),
            "report": StepState(),
            "ghost": StepState(),
        },
    )  # fmt: skip
    return base.model_copy(update=changes)


def _text(renderable: object) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_status_of_a_running_run_of_another_tenant_with_a_cancel_requested() -> None:
    text = _text(run_view(state(cancel_requested=True), ["load", "detect", "report"], now=NOW))
    heading = text.splitlines()[0]
    assert heading.startswith("video · run r-1 · tenant acme · ")
    assert "running (cancel requested) · created " in heading and heading.endswith(" · 90.00s")
    assert "12.50s" in text  # the running step's time so far
    assert "2.0 KB" in text and "report" in text and "ghost" not in text


def test_took_and_clock_of_unknown_or_old_times() -> None:
    assert took(None, None, NOW) == ""
    assert clock(None) == ""
    old = 86400.0 * 400  # 1971
    assert clock(old) == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(old))


def test_watch_lines_say_a_failed_attempt_will_be_retried_and_a_cancel_is_pending() -> None:
    changes = RunChanges(["load", "detect", "report", "missing"])
    first = changes.lines(state(tenant_id="default"))
    assert first[0] == "run r-1 of video: running"
    assert "step detect running (attempt 2)" in first
    retried = state(tenant_id="default")
    retried.steps["detect"] = StepState(status="queued", attempt=2, failures=1, error="timeout")
    assert changes.lines(retried) == ["step detect failed (attempt 2), will be retried: timeout"]
    cancelling = retried.model_copy(update={"cancel_requested": True})
    assert changes.lines(cancelling) == ["run r-1: cancel requested; running steps finish first"]
    assert changes.lines(cancelling) == []  # nothing changed since


def test_a_watch_attached_to_a_cancelled_run_says_so_at_once() -> None:
    cancelled = state(status="cancelled", finished_at=NOW, cancel_requested=True)
    lines = RunChanges(["load"]).lines(cancelled)
    assert lines[-1] == "run r-1 cancelled after 90.00s"


def test_a_map_steps_items_in_the_table_the_failed_item_lines_and_the_watch() -> None:
    from resumable.cli._views import failed_item_lines, items_cell
    from resumable.serverless._map_status import FailedItem, ItemSummary

    assert items_cell(None) == ""
    assert items_cell(ItemSummary(total=200, completed=200, failed=0, running=0)) == "200/200"
    summary = ItemSummary(
        total=200,
        completed=180,
        failed=3,
        running=2,
        failed_items=(
            FailedItem(3, "gs://b/x.txt", "ValueError: damaged"),
            FailedItem(9, None, "OSError: gone"),
        ),
    )
    assert items_cell(summary) == "180/200, 3 failed, 2 running"
    assert failed_item_lines({"objects": summary}) == [
        "step objects: item #3 gs://b/x.txt failed: ValueError: damaged",
        "step objects: item #9 failed: OSError: gone",
        "step objects: 1 more failed items (resumable status --json)",
    ]
    running = state(tenant_id="default")
    text = _text(run_view(running, ["load", "detect"], now=NOW, items={"detect": summary}))
    assert "items" in text and "180/200, 3 failed, 2 running" in text
    assert "item #3 gs://b/x.txt failed: ValueError: damaged" in text

    changes = RunChanges(["load", "detect"])
    first = changes.lines(running, {"detect": summary})
    assert "step detect items: 180/200, 3 failed, 2 running" in first
    assert changes.lines(running, {"detect": summary}) == []  # unchanged
    more = ItemSummary(total=200, completed=190, failed=3, running=0)
    assert changes.lines(running, {"detect": more}) == ["step detect items: 190/200, 3 failed"]
