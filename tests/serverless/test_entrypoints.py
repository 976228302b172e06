"""The deployed entry points ack an unusable delivery with a logged reason (a raw
exception would be a 500, and Pub/Sub would redeliver it forever)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from resumable import Pipeline
from resumable.serverless import entrypoints
from resumable.serverless._engine import Engine
from tests.serverless_fakes import make_engine
from tests.support.events import envelope, push_event

STEP = orjson.dumps({"pipeline": "p", "run_id": "r1", "step": "a"})
START = orjson.dumps({"pipeline": "p", "params": {}, "run_id": "r1"})


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = make_engine(Pipeline("p", {"a": lambda c: {"x": 1}}, storage="memory://entry"))
    entrypoints.set_engine(engine)
    yield engine
    entrypoints.set_engine(None)


def with_message(**fields: Any) -> Callable[[bytes], Any]:
    def build(body: bytes) -> Any:
        event = envelope(body)
        event["message"].update(fields)
        return event

    return build


def with_envelope(**fields: Any) -> Callable[[bytes], Any]:
    return lambda body: {**envelope(body), **fields}


BAD_ENVELOPES: dict[str, tuple[Callable[[bytes], Any], str]] = {
    "data-a-number": (with_message(data=5), "message data is a int"),
    "data-a-list": (with_message(data=[1]), "message data is a list"),
    "attributes-a-string": (with_message(attributes="ab"), "attributes are not a map"),
    "attributes-a-list": (with_message(attributes=[1]), "attributes are not a map"),
    "attribute-a-number": (with_message(attributes={"k": 1}), "attributes are not a map"),
    "attempt-a-word": (with_envelope(deliveryAttempt="b"), "delivery attempt 'b'"),
    "attempt-a-list": (with_envelope(deliveryAttempt=[1]), "delivery attempt \\[1\\]"),
    "attempt-infinite": (with_envelope(deliveryAttempt=float("inf")), "delivery attempt inf"),
    "attempt-negative": (with_envelope(deliveryAttempt=-1), "delivery attempt -1"),
    "message-id-a-dict": (with_message(messageId={"a": 1}), "not a Pub/Sub message id"),
    "message-id-a-path": (with_message(messageId="../x"), "not a safe id"),
    "message-a-string": (lambda body: {"message": "m"}, "no Pub/Sub 'message'"),
    "not-json": (lambda body: b"{{", "not JSON"),
    "a-list": (lambda body: [1], "no Pub/Sub 'message'"),
}


@pytest.mark.parametrize("function", ["run_step", "dead_letter", "start_run"])
@pytest.mark.parametrize(("make", "reason"), BAD_ENVELOPES.values(), ids=BAD_ENVELOPES.keys())
def test_envelopes_with_wrong_typed_fields_are_acked_with_the_reason(
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
    function: str,
    make: Callable[[bytes], Any],
    reason: str,
) -> None:
    body = START if function == "start_run" else STEP
    with caplog.at_level(logging.ERROR, logger="resumable"):
        getattr(entrypoints, function)(push_event(make(body)))  # returned: acked
    (logged,) = [r.getMessage() for r in caplog.records]
    assert logged.startswith(COMPLAINTS[function]) and re.search(reason, logged)
    assert engine.runs.query() == []  # nothing started, nothing changed


COMPLAINTS = {
    "run_step": "bad step message, acked: ",
    "dead_letter": "dead-lettered event that is not a Pub/Sub message: ",
    "start_run": "bad start message, acked: ",
}


def test_a_dead_letter_for_a_run_that_does_not_exist_is_acked(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the fuzzer: RunNotFoundError was raised, a 500, and redelivered forever."""
    with caplog.at_level(logging.ERROR, logger="resumable"):
        entrypoints.dead_letter(push_event(envelope(STEP)))
    assert "dead letter: no such run" in caplog.text
    assert engine.runs.query() == []


def test_warm_up_builds_the_engine_and_writes_nothing(engine: Engine) -> None:
    entrypoints.warm_up()
    assert entrypoints.engine() is engine
    assert list(engine.store.list()) == []
    assert engine.runs.get(engine.doc_id("warm-up", "warm-up", "warm-up")) is None


WARM_CHILD = """
import os, sys, time
from resumable.serverless import entrypoints
built = []
entrypoints.warm_up = lambda: built.append(os.getpid())
pid = os.fork()  # as the server forks its worker
if pid == 0:
    deadline = time.monotonic() + 60
    while not built and time.monotonic() < deadline:
        time.sleep(0.01)
    grandchild = os.fork()  # a process the step forks: no warm-up of its own
    if grandchild == 0:
        time.sleep(0.2)
        os._exit(len(built) - 1)  # inherited the child's list: 1 entry, not 2
    _, status = os.waitpid(grandchild, 0)
    os._exit(0 if built == [os.getpid()] and os.waitstatus_to_exitcode(status) == 0 else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) or (3 if built else 0))
"""


def test_a_served_process_warms_up_in_the_forked_worker_only() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WARM_CHILD],
        env={**os.environ, "RESUMABLE_WARM_UP": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
