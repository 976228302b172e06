"""The run's timeline (a Gantt chart) as server-rendered SVG.

One row per step: how long its message waited (queued, light) and each attempt (colored
by how it ended: committed, raised, lost its lease, continued...), on a common time axis
from the run's creation. A serverless run keeps the spans of each step's latest 20
attempts; for an in-process run the latest attempt is drawn, earlier ones counted in its
label.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from resumable.ui._models import StepView

LABEL_W = 150
CHART_W = 560
ROW_H = 22
AXIS_H = 22


def _ticks(span: float) -> list[float]:
    """Round tick positions (seconds) for an axis of ``span`` seconds."""
    for step in (
        0.01,
        0.02,
        0.05,
        0.1,
        0.2,
        0.5,
        1,
        2,
        5,
        10,
        15,
        30,
        60,
        120,
        300,
        600,
        1800,
        3600,
        7200,
    ):
        if span / step <= 8:
            break
    else:
        step = span / 8
    count = int(span / step) + 1
    return [i * step for i in range(count)]


def _format(seconds: float) -> str:
    if seconds < 1 and seconds != int(seconds):
        return f"{seconds:.2f}s"
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render_svg(steps: Sequence[StepView], *, start: float | None, now: float) -> str:
    """The timeline of ``steps``; ``start`` is the run's creation (the axis's zero)."""
    times = [t for s in steps for t in (s.queued_at, s.started_at, s.finished_at) if t is not None]
    t0 = start if start is not None else min(times, default=now)
    ends = [s.finished_at or (now if s.status == "running" else s.started_at) for s in steps]
    t1 = max([t for t in ends if t is not None] + times + [t0 + 0.001])
    span = max(t1 - t0, 0.001)
    scale = CHART_W / span
    height = AXIS_H + ROW_H * len(steps) + 4
    width = LABEL_W + CHART_W + 12
    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-label="timeline of attempts" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    ]
    for tick in _ticks(span):
        x = LABEL_W + tick * scale
        parts.append(
            f'<line class="tick" x1="{x:.1f}" y1="{AXIS_H - 4}" x2="{x:.1f}" y2="{height}"/>'
            f'<text class="axis" x="{x + 2:.1f}" y="{AXIS_H - 8}">{_format(tick)}</text>'
        )
    for index, step in enumerate(steps):
        y = AXIS_H + index * ROW_H
        name = escape(step.name)
        parts.append(f'<text class="label" x="4" y="{y + 15}">{name}</text>')
        if step.queued_at is not None:
            until = step.started_at or (now if step.status == "queued" else step.queued_at)
            x = LABEL_W + (step.queued_at - t0) * scale
            w = max((until - step.queued_at) * scale, 1.0)
            parts.append(
                f'<rect class="wait" x="{x:.1f}" y="{y + 6}" width="{w:.1f}" height="{ROW_H - 12}">'
                f"<title>{name} queued</title></rect>"
            )
        if step.spans:
            parts += _spans(step, y, t0, scale, now)
        elif step.started_at is not None:
            end = step.finished_at if step.status != "running" else now
            end = end if end is not None else step.started_at
            x = LABEL_W + (step.started_at - t0) * scale
            w = max((end - step.started_at) * scale, 2.0)
            attempts = f"attempt {step.attempt}" if step.attempt else ""
            failed = f", {step.failures} failed before" if step.failures else ""
            took = f"{end - step.started_at:.2f}s"
            parts.append(
                f'<rect class="bar status-{escape(step.status)}" data-step="{name}" '
                f'x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW_H - 6}" rx="3">'
                f"<title>{name}: {escape(step.status)} {took} ({attempts}{failed})</title></rect>"
            )
            if step.attempt > 1:
                parts.append(
                    f'<text class="attempt" x="{x + w + 4:.1f}" y="{y + 15}">×{step.attempt}</text>'
                )
    parts.append("</svg>")
    return "".join(parts)


_OUTCOME_CLASS = {
    "committed": "status-completed",
    "failed": "status-error",
    "raised: retried": "outcome-raised",
    "storage error: released": "outcome-raised",
    "lost its lease": "outcome-lost",
    "killed at its time limit": "outcome-lost",
    "cancelled": "status-cancelled",
    "continued": "outcome-continued",
    "waiting for items": "outcome-continued",
}


def _spans(step: StepView, y: float, t0: float, scale: float, now: float) -> list[str]:
    """One bar per attempt of ``step``, the latest numbered when there were several."""
    name = escape(step.name)
    parts = []
    first = step.attempt - len(step.spans) + 1
    for number, (start, end, outcome) in enumerate(step.spans, start=first):
        running = end is None
        stop = now if running else end
        assert stop is not None
        x = LABEL_W + (start - t0) * scale
        w = max((stop - start) * scale, 2.0)
        kind = "status-running" if running else _OUTCOME_CLASS.get(outcome, "outcome-other")
        what = "running" if running else escape(outcome)
        parts.append(
            f'<rect class="bar {kind}" data-step="{name}" data-attempt="{number}" '
            f'x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW_H - 6}" rx="3">'
            f"<title>{name} attempt {number}: {what} after {stop - start:.2f}s</title></rect>"
        )
    if len(step.spans) > 1:
        start, end, _ = step.spans[-1]
        stop = end if end is not None else now
        x = LABEL_W + (stop - t0) * scale
        parts.append(f'<text class="attempt" x="{x + 4:.1f}" y="{y + 15}">×{step.attempt}</text>')
    return parts
