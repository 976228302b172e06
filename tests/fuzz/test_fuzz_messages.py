"""Fuzz: random Pub/Sub push deliveries through the deployed entry points (``start_run``,
``run_step``, ``dead_letter``), as CloudEvents, on in-memory services.

Invariant: each delivery is acked (returns) or answered "retry later" (werkzeug's 503);
never a raw exception, which Pub/Sub would redeliver forever.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from werkzeug.exceptions import ServiceUnavailable

from resumable import Pipeline
from resumable.serverless import entrypoints
from tests.fuzz.budget import bounded, fuzz_settings
from tests.fuzz.mutations import json_values
from tests.serverless_fakes import make_engine
from tests.support.events import push_event

# Mostly ids the deployment knows (so that deliveries reach runs, steps and leases),
# then unsafe ones, then arbitrary safe ones.
known = st.sampled_from(["p", "r1", "r2", "a", "b", "c", "default"])
ids = st.one_of(
    known,
    known,
    st.sampled_from(["nope", "", "../x", "a" * 200, "__x", "a/b"]),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,8}", fullmatch=True),
)
params = st.one_of(st.dictionaries(st.text(max_size=5), json_values, max_size=3), json_values)
start_bodies = st.fixed_dictionaries(
    {"pipeline": st.just("p"), "params": st.dictionaries(st.text(max_size=5), json_values)},
    optional={"run_id": st.sampled_from(["r1", "r2"]), "tenant_id": ids},
)
step_bodies = st.fixed_dictionaries(
    {"pipeline": st.just("p"), "run_id": st.sampled_from(["r1", "r2"]), "step": ids},
    optional={"tenant_id": st.just("default"), "attempt": st.integers(-3, 20)},
)
any_bodies = st.dictionaries(
    st.sampled_from(["pipeline", "run_id", "step", "tenant_id", "attempt", "params"]),
    st.one_of(ids, params),
)
bodies = st.one_of(
    start_bodies.map(orjson.dumps),
    step_bodies.map(orjson.dumps),
    step_bodies.map(orjson.dumps),
    any_bodies.map(orjson.dumps),
    json_values.map(orjson.dumps),
    st.binary(max_size=64),
)

base64_text = bodies.map(lambda b: base64.b64encode(b).decode())
message_ids = st.from_regex(r"[0-9]{1,20}", fullmatch=True)
attributes = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
well_formed = st.fixed_dictionaries(
    {"data": base64_text, "messageId": message_ids},
    optional={"attributes": attributes, "deliveryAttempt": st.integers(1, 10)},
)
any_typed = st.fixed_dictionaries(
    {},
    optional={
        "data": st.one_of(base64_text, json_values),
        "attributes": st.one_of(attributes, json_values),
        "messageId": st.one_of(message_ids, json_values),
        "deliveryAttempt": st.one_of(st.integers(-2, 10**12), json_values),
    },
)
well_formed_envelopes = st.fixed_dictionaries(
    {"message": well_formed},
    optional={"subscription": st.text(max_size=10), "deliveryAttempt": st.integers(1, 10)},
)
envelopes = st.one_of(
    well_formed_envelopes,
    well_formed_envelopes,
    well_formed_envelopes,
    st.fixed_dictionaries(
        {"message": any_typed},
        optional={
            "subscription": st.text(max_size=10),
            "deliveryAttempt": st.one_of(
                st.integers(-2, 10**12), st.floats(), st.text(max_size=3), json_values
            ),
        },
    ),
    json_values,
    st.binary(max_size=32),
    st.text(max_size=32),
)


class Outcomes(logging.Handler):
    """What the entry points logged about the last delivery."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def outcomes() -> Iterator[Outcomes]:
    steps = {"a": lambda c: {"x": 1}, "b": lambda c: {"y": c.get("x")}}
    entrypoints.set_engine(make_engine(Pipeline("p", steps, storage="memory://fuzz-msg")))
    handler = Outcomes()
    logger = logging.getLogger("resumable")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)
    entrypoints.set_engine(None)


@fuzz_settings(ci_examples=400)
@given(function=st.sampled_from(["start_run", "run_step", "dead_letter"]), data=envelopes)
def test_random_deliveries_are_acked_or_retried_never_raise(
    outcomes: Outcomes, function: str, data: Any
) -> None:
    outcomes.messages.clear()
    with bounded():
        try:
            getattr(entrypoints, function)(push_event(data))
            answer = "acked"
        except ServiceUnavailable:
            answer = "retry later"
    said = " ".join(outcomes.messages[-1].split()[:8]) if outcomes.messages else "nothing"
    event(f"{function}: {answer}, {said}")
