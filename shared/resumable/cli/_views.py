"""How the CLI shows serverless runs: tables of a run document, and the changes between
two reads of it (what ``resumable watch`` prints).

A view only reads the run document it is given; the words are the status words of
:mod:`resumable.status`, the same as in-process runs show.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from resumable._defaults import DEFAULT_TENANT
from resumable.cli._progress import format_size
from resumable.definition._spec import PipelineSpec
from resumable.serverless._control import describe
from resumable.serverless._map_status import ItemSummary
from resumable.serverless._run_state import RunState, StepState
from resumable.status import RunStatus, StepStatus
from resumable.ui._formatting import clock

STATUS_LOOK: Mapping[str, tuple[str, str]] = {
    StepStatus.NOT_STARTED: ("· not_started", "dim"),
    StepStatus.QUEUED: ("… queued", "cyan"),
    StepStatus.RUNNING: ("▶ running", "yellow"),
    StepStatus.COMPLETED: ("✓ completed", "green"),
    StepStatus.ERROR: ("✗ error", "bold red"),
    StepStatus.SKIPPED: ("↷ skipped", "cyan"),
    StepStatus.CANCELLED: ("⊘ cancelled", "magenta"),
}


def step_order(state: RunState, spec: PipelineSpec | None) -> list[str]:
    """The run's steps in the pipeline's graph order (``spec.order``) when the pipeline
    is known, else in the run document's order; steps only one side knows come last."""
    known = [name for name in spec.order if name in state.steps] if spec else []
    return known + [name for name in state.steps if name not in known]


def describe_run(
    state: RunState,
    spec: PipelineSpec | None,
    items: Mapping[str, ItemSummary] | None = None,
) -> dict[str, Any]:
    """:func:`resumable.serverless._control.describe`, with the steps in graph order and
    the map steps' ``items`` (counts and failed items)."""
    described = describe(state)
    steps = described["steps"]
    described["steps"] = {name: steps[name] for name in step_order(state, spec)}
    for name, summary in (items or {}).items():
        described["steps"][name]["items"] = summary.as_json()
    return described


def items_cell(summary: ItemSummary | None) -> str:
    """``180/200`` items completed, then the failed and running ones."""
    if summary is None:
        return ""
    text = f"{summary.completed}/{summary.total}"
    if summary.failed:
        text += f", {summary.failed} failed"
    if summary.running:
        text += f", {summary.running} running"
    return text


def status_look(status: str) -> Text:
    label, style = STATUS_LOOK.get(status, (status, ""))
    return Text(label, style=style)


def took(start: float | None, end: float | None, now: float | None = None) -> str:
    """``"1.25s"`` between two times (until ``now`` while unfinished); ``""`` if unknown."""
    if start is None:
        return ""
    stop = end if end is not None else now
    return f"{max(stop - start, 0.0):.2f}s" if stop is not None else ""


def _step_duration(record: StepState, now: float) -> str:
    if record.status == StepStatus.RUNNING:
        return took(record.started_at, None, now)
    if record.status in (StepStatus.COMPLETED, StepStatus.ERROR):
        return took(record.started_at, record.finished_at)
    return ""


def run_table(
    state: RunState,
    order: Sequence[str],
    *,
    now: float | None = None,
    items: Mapping[str, ItemSummary] | None = None,
) -> Table:
    """One row per step: status, attempt, start and end times, duration, checkpoint size
    (and a map step's items)."""
    now = time.time() if now is None else now
    items = items or {}
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("step", style="bold", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("attempt", justify="right", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("finished", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("checkpoint", justify="right", no_wrap=True)
    if items:
        table.add_column("items", justify="right", no_wrap=True)
    table.add_column("error", style="red", overflow="fold")
    for name in order:
        record = state.steps[name]
        map_cells = [items_cell(items.get(name))] if items else []
        table.add_row(
            name,
            status_look(record.status),
            str(record.attempt) if record.attempt else "",
            clock(record.started_at),
            clock(record.finished_at) if record.status != StepStatus.RUNNING else "",
            _step_duration(record, now),
            format_size(record.checkpoint_bytes) if record.checkpoint_bytes else "",
            *map_cells,
            record.error or "",
        )
    return table


def run_heading(state: RunState, *, now: float | None = None) -> Text:
    """``pipeline · run ID · status · created … · 3.20s``."""
    now = time.time() if now is None else now
    heading = Text()
    heading.append(state.pipeline, style="bold")
    heading.append(f" · run {state.run_id}")
    if state.tenant_id != DEFAULT_TENANT:
        heading.append(f" · tenant {state.tenant_id}")
    heading.append(" · ")
    heading.append_text(status_look(state.status))
    if state.cancel_requested and not state.finished:
        heading.append(" (cancel requested)", style="magenta")
    heading.append(f" · created {clock(state.created_at)}")
    elapsed = took(state.created_at, state.finished_at, now)
    if elapsed:
        heading.append(f" · {elapsed}")
    return heading


def run_view(
    state: RunState,
    order: Sequence[str],
    *,
    now: float | None = None,
    items: Mapping[str, ItemSummary] | None = None,
) -> RenderableType:
    """The heading, the step table, the failed items of map steps and the run's error,
    as ``resumable status`` shows it."""
    parts: list[RenderableType] = [
        run_heading(state, now=now),
        run_table(state, order, now=now, items=items),
    ]
    for line in failed_item_lines(items or {}):
        parts.append(Text(line, style="red"))
    if state.error:
        parts.append(Text(f"error: {state.error}", style="bold red"))
    return Group(*parts)


def failed_item_lines(items: Mapping[str, ItemSummary]) -> list[str]:
    """``step objects: item #3 gs://b/x.txt failed: ValueError: ...`` per failed item
    listed, and how many more failed."""
    lines = []
    for name, summary in items.items():
        for failed in summary.failed_items:
            what = f" {failed.item}" if failed.item is not None else ""
            lines.append(f"step {name}: item #{failed.index}{what} failed: {failed.error}")
        more = summary.failed - len(summary.failed_items)
        if more > 0:
            lines.append(f"step {name}: {more} more failed items (resumable status --json)")
    return lines


def runs_table(states: Iterable[RunState]) -> Table:
    """One row per run, for ``resumable list``."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("run id", "pipeline", "tenant", "status", "steps", "created", "duration"):
        table.add_column(column, no_wrap=True)
    table.add_column("error", style="red", overflow="fold")
    now = time.time()
    for state in states:
        done = sum(1 for r in state.steps.values() if r.status == StepStatus.COMPLETED)
        table.add_row(
            state.run_id,
            state.pipeline,
            state.tenant_id,
            status_look(state.status),
            f"{done}/{len(state.steps)}",
            clock(state.created_at),
            took(state.created_at, state.finished_at, now),
            state.error or "",
        )
    return table


class RunChanges:
    """What changed in a run document since the previous read, one line per change.

    The first read reports every step that has left ``not_started`` (so a watch attached
    to a run already under way shows where it is), later reads only what differs.
    """

    def __init__(self, order: Sequence[str]) -> None:
        self.order = list(order)
        self._steps: dict[str, tuple[str, int, int]] = {}
        self._items: dict[str, str] = {}
        self._run: tuple[str, bool] | None = None

    def lines(self, state: RunState, items: Mapping[str, ItemSummary] | None = None) -> list[str]:
        lines: list[str] = []
        if self._run is None:
            lines.append(f"run {state.run_id} of {state.pipeline}: {state.status}")
        for name in self.order:
            record = state.steps.get(name)
            if record is None:
                continue
            seen = (record.status, record.attempt, record.failures)
            before = self._steps.get(name)
            self._steps[name] = seen
            if seen == before or (before is None and record.status == StepStatus.NOT_STARTED):
                continue
            lines.append(_step_line(name, record, before))
        for name, summary in (items or {}).items():
            cell = items_cell(summary)
            if self._items.get(name) != cell:
                self._items[name] = cell
                lines.append(f"step {name} items: {cell}")
        run = (state.status, state.cancel_requested)
        first = self._run is None
        if (not first and run != self._run) or (
            first and (state.finished or state.cancel_requested)
        ):
            lines.append(_run_line(state))
        self._run = run
        return lines


def _step_line(name: str, record: StepState, before: tuple[str, int, int] | None) -> str:
    attempt = f"attempt {record.attempt}"
    if record.status == StepStatus.QUEUED and before and record.failures > before[2]:
        return f"step {name} failed ({attempt}), will be retried: {record.error}"
    if record.status == StepStatus.RUNNING:
        return f"step {name} running ({attempt})"
    if record.status == StepStatus.COMPLETED:
        size = format_size(record.checkpoint_bytes or 0)
        spent = took(record.started_at, record.finished_at)
        return f"step {name} completed ({attempt}, {spent}, checkpoint {size})"
    if record.status == StepStatus.ERROR:
        return f"step {name} error ({attempt}): {record.error}"
    return f"step {name} {record.status}"


def _run_line(state: RunState) -> str:
    if state.status == RunStatus.RUNNING and state.cancel_requested:
        return f"run {state.run_id}: cancel requested; running steps finish first"
    spent = took(state.created_at, state.finished_at)
    line = f"run {state.run_id} {state.status}"
    if state.finished and spent:
        line += f" after {spent}"
    if state.error:
        line += f": {state.error}"
    return line
