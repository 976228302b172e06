"""Messages: Pub/Sub envelopes decode; every malformed input has a clear, logged reason."""

from __future__ import annotations

import base64

import orjson
import pytest

from resumable.errors import BadMessageError
from resumable.serverless._messages import parse_step, pubsub_payload
from resumable.serverless._naming import service_name, step_topic
from resumable.serverless._topology import build_topology
from tests.support.serverless_pipelines import diamond, faulty


def envelope(data: bytes, **extra: object) -> dict[str, object]:
    message = {"data": base64.b64encode(data).decode(), "messageId": "1", "attributes": {"k": "v"}}
    return {"message": message, "subscription": "projects/p/subscriptions/s", **extra}


def test_a_push_envelope_gives_data_attributes_and_delivery_attempt() -> None:
    payload = pubsub_payload(envelope(b'{"a": 1}', deliveryAttempt=3))
    assert payload.data == b'{"a": 1}' and payload.attributes == {"k": "v"}
    assert payload.delivery_attempt == 3 and payload.message_id == "1"
    assert pubsub_payload(orjson.dumps(envelope(b"x"))).delivery_attempt is None


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (b"{{", "not JSON"),
        ({"nomessage": 1}, "no Pub/Sub 'message'"),
        ({"message": {"data": "***"}}, "not valid base64"),
    ],
)
def test_malformed_envelopes_are_refused(event: object, reason: str) -> None:
    with pytest.raises(BadMessageError, match=reason):
        pubsub_payload(event)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"pipeline": "p", "run_id": "r"}', "step: Field required"),
        (b'{"pipeline": "p", "run_id": "../../etc", "step": "s"}', "not a safe id"),
        (b'{"pipeline": "p", "run_id": "r", "step": "s", "tenant_id": "a/b"}', "not a safe id"),
        (b'{"pipeline": 5, "run_id": "r", "step": "s"}', "pipeline"),
        (b"", "not JSON"),
    ],
)
def test_malformed_step_messages_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(BadMessageError, match=reason):
        parse_step(body)


def test_extra_fields_are_allowed_in_step_messages() -> None:
    message = parse_step(b'{"pipeline": "p", "run_id": "r", "step": "s", "trace": "abc"}')
    assert message.step == "s" and message.tenant_id == "default"


def test_service_names_are_valid_cloud_run_names_and_unique() -> None:
    names = {service_name("resumable", "dataprep", s) for s in ("extract_frames", "extract-frames")}
    assert len(names) == 2
    for name in names:
        assert len(name) <= 49 and name[0].isalpha() and name == name.lower()
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    long = service_name("resumable", "p" * 60, "step")
    assert len(long) <= 49


def test_the_topology_has_one_function_and_topic_per_step_plus_the_shared_ones() -> None:
    topology = build_topology([faulty, diamond], "rs")
    assert topology.step_topics("diamond") == {
        s: step_topic("rs", "diamond", s) for s in ("root", "left", "right", "join")
    }
    targets = sorted(f.target for f in topology.functions)
    assert targets.count("run_step") == 7
    assert {"start_run", "dead_letter", "watchdog"} <= set(targets)
    assert topology.start_topic == "rs-start" and topology.dead_letter_topic == "rs-dead-letter"
    assert len(topology.topics) == len(set(topology.topics)) == 7 + 3
    dead_letter_fn = next(f for f in topology.functions if f.target == "dead_letter")
    assert dead_letter_fn.dead_letter is False  # its own failures are not dead-lettered again
