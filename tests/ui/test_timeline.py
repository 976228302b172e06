"""The timeline draws every attempt a serverless run keeps, colored by how it ended."""

from __future__ import annotations

import re

from resumable.ui._models import StepView
from resumable.ui._timeline import render_svg


def test_each_kept_attempt_is_a_bar_of_its_own() -> None:
    step = StepView(
        name="b",
        status="completed",
        dependencies=[],
        attempt=3,
        queued_at=0.0,
        started_at=20.0,
        finished_at=30.0,
        spans=[
            (1.0, 5.0, "raised: retried"),
            (10.0, 18.0, "lost its lease"),
            (20.0, 30.0, "committed"),
        ],
    )
    running = StepView(
        name="c", status="running", dependencies=[], attempt=1, started_at=31.0,
        spans=[(31.0, None, "")],
    )  # fmt: skip
    svg = render_svg([step, running], start=0.0, now=40.0)
    bars = re.findall(r'<rect class="bar ([^"]+)" data-step="(\w)" data-attempt="(\d)"', svg)
    assert bars == [
        ("outcome-raised", "b", "1"),
        ("outcome-lost", "b", "2"),
        ("status-completed", "b", "3"),
        ("status-running", "c", "1"),
    ]
    assert "b attempt 2: lost its lease after 8.00s" in svg
    assert ">×3</text>" in svg


def test_a_step_without_spans_draws_its_latest_attempt() -> None:
    step = StepView(
        name="a", status="completed", dependencies=[], attempt=2, started_at=1.0, finished_at=2.0
    )
    svg = render_svg([step], start=0.0, now=3.0)
    assert svg.count('class="bar status-completed"') == 1 and ">×2</text>" in svg
