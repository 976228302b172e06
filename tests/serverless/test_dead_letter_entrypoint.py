"""The dead-letter function: whatever dead-lettering forwards to it — a step message, a
start message, or something else — ends up on the run it names, or in the log."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from cloudevents.http import CloudEvent

from resumable import Pipeline
from resumable.serverless._engine import Engine
from resumable.serverless.entrypoints import dead_letter, set_engine
from tests.serverless_fakes import make_engine, start, state_of, take_messages


def step(context: dict[str, Any]) -> dict[str, Any]:
    return {"done": True}


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = make_engine(Pipeline("lin", {"a": {"function": step}}, storage="memory://unused"))
    set_engine(engine)
    yield engine
    set_engine(None)


def dead_lettered(body: Any, deliveries: int = 10) -> CloudEvent:
    """The push event the dead-letter subscription delivers for ``body``."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    message = {
        "data": base64.b64encode(data).decode(),
        "attributes": {"CloudPubSubDeadLetterSourceDeliveryCount": str(deliveries)},
    }
    attributes = {
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": "//pubsub.googleapis.com/projects/p/topics/resumable-dead-letter",
    }
    return CloudEvent(attributes, {"message": message})


def test_a_dead_lettered_step_message_fails_its_run(engine: Engine) -> None:
    start(engine, "lin", {})
    (message,) = take_messages(engine)
    dead_letter(dead_lettered(message.model_dump(exclude_none=True), deliveries=14))
    state = state_of(engine, "lin")
    assert state.status == "error"
    assert "exhausted its delivery attempts (14 deliveries)" in (state.error or "")


def test_a_dead_lettered_start_message_is_noted_on_its_run(engine: Engine) -> None:
    start(engine, "lin", {})
    dead_letter(dead_lettered({"pipeline": "lin", "params": {}, "run_id": "run-1"}))
    state = state_of(engine, "lin")
    assert state.rejected_messages == [
        "the start message exhausted its delivery attempts (10 deliveries)"
    ]
    assert state.status == "running"  # the watchdog carries on a run whose start was cut short


def test_a_dead_lettered_start_message_without_a_run_is_logged(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        dead_letter(dead_lettered({"pipeline": "lin", "params": {}, "run_id": "never-started"}))
        dead_letter(dead_lettered({"pipeline": "lin", "params": {}}))
    logged = [r.getMessage() for r in caplog.records]
    assert (
        logged
        == [
            "dead letter: the start message exhausted its delivery attempts (10 deliveries); "
            "no run document to note it on"
        ]
        * 2
    )
    assert engine.runs.get(engine.doc_id("default", "lin", "never-started")) is None


def test_a_dead_lettered_message_of_no_known_kind_is_logged(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        dead_letter(dead_lettered(b"not json"))
    (record,) = caplog.records
    assert "neither a step nor a start message" in record.getMessage()


def _touch(state: Any) -> Any:
    from resumable.serverless._run_state import Decision

    new = state.model_copy(deep=True)
    new.rejected_messages = [*new.rejected_messages[-3:], "another writer"]
    return Decision(None, new)


def test_a_dead_letter_on_a_run_document_that_keeps_changing_is_redelivered(
    engine: Engine,
) -> None:
    from werkzeug.exceptions import ServiceUnavailable

    start(engine, "lin", {})
    (message,) = take_messages(engine)
    runs = engine.runs
    runs.max_attempts = 2  # type: ignore[attr-defined]
    interfering = [False]

    def another_writer_first(operation: str, doc_id: str) -> None:
        if operation == "write" and not interfering[0]:
            interfering[0] = True
            try:
                runs.mutate(doc_id, _touch)
            finally:
                interfering[0] = False

    runs.documents.on_io = another_writer_first  # type: ignore[attr-defined]
    with pytest.raises(ServiceUnavailable, match="retry later"):
        dead_letter(dead_lettered(message.model_dump(exclude_none=True)))
    runs.documents.on_io = None  # type: ignore[attr-defined]
    assert state_of(engine, "lin").status == "running"  # unchanged: the redelivery decides


def test_a_dead_letter_the_run_document_has_no_room_for_is_logged_and_acked(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    from resumable.serverless._run_state import MAX_DOCUMENT_BYTES, Decision, document_size

    start(engine, "lin", {})
    (message,) = take_messages(engine)
    doc_id = engine.doc_id("default", "lin", message.run_id)

    def nearly_full(state: Any) -> Decision[None]:
        new = state.model_copy(deep=True)
        room = MAX_DOCUMENT_BYTES - document_size(new) - 40
        new.rejected_messages = ["x" * room]
        return Decision(None, new)

    engine.runs.mutate(doc_id, nearly_full)
    with caplog.at_level(logging.ERROR):
        dead_letter(dead_lettered(message.model_dump(exclude_none=True)))  # acked: no raise
    assert any("dead letter not recorded" in r.getMessage() for r in caplog.records)
    assert state_of(engine, "lin").status == "running"
