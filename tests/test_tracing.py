"""One OpenTelemetry trace per run: spans of every function join the run's trace, through
the ``traceparent`` carried in the Pub/Sub attributes or, without one, through the trace
id derived from the run. Driven through the deployed entry points over in-memory
services; tests/ui/test_traces.py checks the same across the local stack's processes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resumable import tracing
from resumable.serverless import entrypoints
from resumable.serverless._engine import Engine
from resumable.serverless._publisher import MemoryPublisher
from tests.serverless_fakes import make_engine
from tests.support.events import envelope, push_event
from tests.ui.pipelines import STEPS, build

STAGES = ["claim", "load", "run", "write", "commit", "publish"]


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = make_engine(build())
    entrypoints.set_engine(engine)
    yield engine
    entrypoints.set_engine(None)
    tracing.shutdown()


@pytest.fixture
def spans(engine: Engine) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    assert tracing.configure("test-project", exporter=exporter, service="test")
    return exporter


def start(run_id: str = "run-1", message_id: str = "m1") -> None:
    body = orjson.dumps({"pipeline": "gallery", "params": {}, "run_id": run_id})
    entrypoints.start_run(push_event(envelope(body, messageId=message_id)))


def deliver_all(engine: Engine, *, drop_trace_context: bool = False) -> int:
    """Push every published message to the step function, as Pub/Sub would."""
    publisher = engine.publisher
    assert isinstance(publisher, MemoryPublisher)
    delivered = 0
    while publisher.messages:
        message = publisher.messages.pop(0)
        attributes = dict(message.attributes)
        if drop_trace_context:
            attributes.pop(tracing.TRACEPARENT, None)
        entrypoints.run_step(push_event(envelope(message.data, attributes=attributes)))
        delivered += 1
    return delivered


def by_name(exporter: InMemorySpanExporter) -> dict[str, Any]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_a_run_is_one_trace_with_a_span_per_step_and_its_stages(
    engine: Engine, spans: InMemorySpanExporter
) -> None:
    start()
    assert deliver_all(engine) == 7
    finished = spans.get_finished_spans()
    assert {s.context.trace_id for s in finished} == {
        tracing.run_trace_id("default", "gallery", "run-1")
    }
    named = by_name(spans)
    assert named["start run"].parent is None
    for step in STEPS:
        delivery = named[f"step {step}"]
        assert delivery.attributes["resumable.step"] == step
        assert delivery.attributes["resumable.attempt"] == 1
        assert delivery.attributes["resumable.acked"] is True
        children = [
            s.name for s in finished if s.parent and s.parent.span_id == delivery.context.span_id
        ]
        assert children == STAGES, step
    # Each delivery is a child of the span that published its message.
    assert named["step fetch"].parent.span_id == named["start run"].context.span_id
    publishes = {
        s.context.span_id: s.parent.span_id for s in finished if s.name == "publish" and s.parent
    }
    decode_parent = named["step decode"].parent.span_id
    assert publishes[decode_parent] == named["step fetch"].context.span_id


def test_a_message_without_trace_context_still_joins_its_runs_trace(
    engine: Engine, spans: InMemorySpanExporter
) -> None:
    start()
    deliver_all(engine, drop_trace_context=True)
    finished = spans.get_finished_spans()
    assert {s.context.trace_id for s in finished} == {
        tracing.run_trace_id("default", "gallery", "run-1")
    }
    assert by_name(spans)["step decode"].parent is None  # a root of its own in that trace


def test_a_traceparent_of_another_trace_is_not_followed(
    engine: Engine, spans: InMemorySpanExporter
) -> None:
    start()
    publisher = engine.publisher
    assert isinstance(publisher, MemoryPublisher)
    message = publisher.messages.pop(0)
    forged = {**message.attributes, "traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}
    entrypoints.run_step(push_event(envelope(message.data, attributes=forged)))
    fetch = by_name(spans)["step fetch"]
    assert fetch.context.trace_id == tracing.run_trace_id("default", "gallery", "run-1")
    assert fetch.parent is None


def test_runs_have_distinct_traces(engine: Engine, spans: InMemorySpanExporter) -> None:
    start("run-1", "m1")
    start("run-2", "m2")
    deliver_all(engine)
    traces = {
        s.attributes.get("resumable.run_id"): s.context.trace_id
        for s in spans.get_finished_spans()
        if s.name.startswith("step")
    }
    assert traces["run-1"] != traces["run-2"]


def test_traces_are_off_unless_configured(engine: Engine) -> None:
    assert not tracing.enabled()
    start()
    publisher = engine.publisher
    assert isinstance(publisher, MemoryPublisher)
    assert all(tracing.TRACEPARENT not in m.attributes for m in publisher.messages)
    assert deliver_all(engine) == 7


def test_logs_written_in_a_span_carry_its_trace(
    engine: Engine, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="resumable"):
        start()
        deliver_all(engine)
    claimed = [r for r in caplog.records if r.getMessage() == "step render claimed"]
    trace_id = f"{tracing.run_trace_id('default', 'gallery', 'run-1'):032x}"
    assert claimed and claimed[0].trace == f"projects/test-project/traces/{trace_id}"  # type: ignore[attr-defined]
    render = by_name(spans)["step render"]
    assert claimed[0].span_id == f"{render.context.span_id:016x}"  # type: ignore[attr-defined]


def test_the_file_exporter_writes_one_json_span_per_line(engine: Engine, tmp_path: Path) -> None:
    assert tracing.configure("test-project", setting=f"file:{tmp_path}")
    start()
    deliver_all(engine)
    tracing.shutdown()
    [written] = list(tmp_path.glob("spans-*.jsonl"))
    lines = [json.loads(line) for line in written.read_text().splitlines()]
    assert len(lines) == 1 + 7 * (1 + len(STAGES))
    assert {line["context"]["trace_id"] for line in lines} == {
        f"0x{tracing.run_trace_id('default', 'gallery', 'run-1'):032x}"
    }


def test_an_unusable_setting_leaves_traces_off(engine: Engine) -> None:
    assert not tracing.configure("p", setting="carrier-pigeon")
    assert not tracing.enabled()
