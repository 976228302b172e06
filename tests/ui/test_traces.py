"""A serverless run on the local stack is one OpenTelemetry trace across its functions:
every function process writes its spans to the stack's trace folder (``RESUMABLE_TRACES=
file:DIR``, set in conftest.py), read back here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from resumable import tracing
from resumable.dev._stack import DevStack
from resumable.serverless._engine import Engine
from tests.ui.conftest import wait_for
from tests.ui.pipelines import STEPS
from tests.ui.test_browser import publish_start, unique, wait_run

pytestmark = pytest.mark.slow
STAGES = {"claim", "load", "run", "write", "commit", "publish"}


def spans_of(folder: Path, run_id: str) -> list[dict[str, Any]]:
    """The finished spans of ``run_id`` (theirs, and their stages') in every process's file."""
    spans = []
    for path in folder.glob("spans-*.jsonl"):
        for line in path.read_text().splitlines():
            if line.strip():
                spans.append(json.loads(line))
    ours = {
        s["context"]["span_id"] for s in spans if s["attributes"].get("resumable.run_id") == run_id
    }
    return [s for s in spans if s["context"]["span_id"] in ours or s["parent_id"] in ours]


def test_a_serverless_run_of_seven_steps_is_one_trace_across_its_functions(
    stack: DevStack, ui_engine: Engine, workdir: Path
) -> None:
    run_id = unique("traced")
    publish_start(stack, run_id, {"workdir": str(workdir)})
    wait_run(ui_engine, run_id, "completed", lambda s: s.status == "completed")
    folder = stack.home / "traces"

    def complete() -> list[dict[str, Any]] | None:
        spans = spans_of(folder, run_id)
        deliveries = [s for s in spans if s["name"].startswith("step ")]
        return spans if len(deliveries) >= len(STEPS) else None

    spans = wait_for(complete, "the spans of all seven steps", 20)
    expected = f"0x{tracing.run_trace_id('default', 'gallery', run_id):032x}"
    assert {s["context"]["trace_id"] for s in spans} == {expected}
    deliveries = {
        s["name"].removeprefix("step "): s for s in spans if s["name"].startswith("step ")
    }
    assert set(deliveries) == set(STEPS)
    for step, delivery in deliveries.items():
        stages = {s["name"] for s in spans if s["parent_id"] == delivery["context"]["span_id"]}
        assert stages == STAGES, step
        assert delivery["attributes"]["resumable.attempt"] == 1
    # Across functions: each step's spans come from its own process, and each delivery's
    # parent is a span another process ended (the start's, or the publishing step's).
    services = {d["resource"]["attributes"]["service.name"] for d in deliveries.values()}
    assert len(services) == len(STEPS)
    [start] = [s for s in spans if s["name"] == "start run"]
    assert start["parent_id"] is None
    assert deliveries["fetch"]["parent_id"] == start["context"]["span_id"]
    by_id = {s["context"]["span_id"]: s for s in spans}
    for step in ("decode", "thumbs", "stats", "merge", "render", "publish"):
        publisher = by_id[deliveries[step]["parent_id"]]
        assert publisher["name"] == "publish", step
        assert by_id[publisher["parent_id"]]["name"].startswith("step "), step
