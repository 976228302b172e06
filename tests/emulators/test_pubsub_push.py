"""Push delivery, as the engine's step functions receive it.

Probes, through the official clients only: the push envelope; which HTTP answers ack; a real
functions-framework CloudEvent function receiving a message intact; redelivery of a failing
push within the retry policy, then dead-lettering; redelivery past the ack deadline.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from google.cloud import pubsub_v1
from probe_support import FunctionProcess, PushServer, wait_until

pytestmark = pytest.mark.emulators


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _push_subscription(
    subscriber: pubsub_v1.SubscriberClient, name: str, topic: str, endpoint: str, **extra: Any
) -> str:
    subscriber.create_subscription(
        request={"name": name, "topic": topic, "push_config": {"push_endpoint": endpoint}, **extra}
    )
    return name


def test_push_envelope_is_the_service_format_without_delivery_attempt(
    make_topic: Callable[[str], str],
    sub_path: Callable[[str, str], str],
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
    push_server: PushServer,
) -> None:
    """EMULATOR DIFFERS: the service adds `deliveryAttempt` to the envelope when the
    subscription has a dead-letter policy; the emulator never does. The engine must not need
    it (functions-framework drops it from the CloudEvent anyway)."""
    topic = make_topic("envelope")
    dead = make_topic("envelope-dead")
    plain = _push_subscription(subscriber, sub_path(topic, "plain"), topic, push_server.url("/a"))
    lettered = _push_subscription(
        subscriber,
        sub_path(topic, "dlq"),
        topic,
        push_server.url("/b"),
        dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": 5},
    )
    data = b"\x00step payload \xff"
    key = uuid.uuid4().hex
    message_id = publisher.publish(topic, data, key=key, run="r-1", step="é").result()

    pushes = push_server.wait_for(2, key)
    assert len(pushes) == 2
    by_path = {p.path: p for p in pushes}
    for path, subscription in (("/a", plain), ("/b", lettered)):
        push = by_path[path]
        assert push.headers["Content-Type"].startswith("application/json")
        assert set(push.envelope) == {"message", "subscription"}  # no deliveryAttempt
        assert push.envelope["subscription"] == subscription
        message = push.envelope["message"]
        assert message["data"] == _b64(data)
        assert message["attributes"] == {"key": key, "run": "r-1", "step": "é"}
        assert message["messageId"] == message["message_id"] == message_id
        assert message["publishTime"] == message["publish_time"]
        assert message["publishTime"].endswith("Z")


# EMULATOR DIFFERS: the service acks 202 as well; the emulator redelivers it. The engine
# answers 200 or 204 for success, which both ack.
ACKING_STATUSES = (200, 201, 204)
NACKING_STATUSES = (202, 400, 404, 409, 429, 500, 503)


def test_push_answer_status_decides_ack_or_redelivery(
    make_topic: Callable[[str], str],
    sub_path: Callable[[str, str], str],
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
    push_server: PushServer,
) -> None:
    topic = make_topic("status")
    _push_subscription(
        subscriber,
        sub_path(topic, "push"),
        topic,
        push_server.url(),
        retry_policy={"minimum_backoff": {"seconds": 1}, "maximum_backoff": {"seconds": 1}},
    )
    keys = {status: f"{status}-{uuid.uuid4().hex}" for status in ACKING_STATUSES + NACKING_STATUSES}
    for status, key in keys.items():
        publisher.publish(topic, b"x", key=key, status=str(status)).result()
    for key in keys.values():
        assert push_server.wait_for(1, key, timeout=60)
    # Every nacked message comes back after the 1 s backoff; an acked one would have too.
    for status in NACKING_STATUSES:
        push_server.wait_for(2, keys[status], timeout=60)
    deliveries = {status: len(push_server.received(key)) for status, key in keys.items()}
    assert all(deliveries[s] == 1 for s in ACKING_STATUSES), deliveries
    assert all(deliveries[s] >= 2 for s in NACKING_STATUSES), deliveries


def test_cloudevent_function_receives_data_and_attributes_intact(
    make_topic: Callable[[str], str],
    sub_path: Callable[[str, str], str],
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
    cloudevent_function: FunctionProcess,
) -> None:
    """functions-framework turns the push body into a CloudEvent whose source is the topic
    named in the endpoint path and whose data is {"message": {...}} without `subscription`.
    How long the push takes: benchmarks/emulator_probes.py."""
    topic = make_topic("cloudevent")
    _push_subscription(
        subscriber, sub_path(topic, "ff"), topic, cloudevent_function.endpoint(topic)
    )
    data = bytes(range(256))
    attributes = {"pipeline": "dataprep", "run_id": "r-42", "step": "décode", "empty": ""}
    message_id = publisher.publish(topic, data, **attributes).result()

    [event] = cloudevent_function.wait_for(topic, 1, timeout=60)
    assert event["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert event["source"] == f"//pubsub.googleapis.com/{topic}"
    assert event["specversion"] == "1.0"
    assert event["id"] == message_id
    message = event["data"]["message"]
    assert set(event["data"]) == {"message"}
    assert base64.b64decode(message["data"]) == data
    assert message["attributes"] == attributes
    assert message["messageId"] == message_id
    assert event["time"] == message["publishTime"]


def test_failing_function_is_redelivered_within_retry_policy_then_dead_lettered(
    make_topic: Callable[[str], str],
    sub_path: Callable[[str, str], str],
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
    cloudevent_function: FunctionProcess,
) -> None:
    """An exception in the function answers 500; the emulator redelivers with the policy's
    backoff and, after max_delivery_attempts deliveries, publishes to the dead-letter topic
    with the original data and attributes plus the CloudPubSubDeadLetter* attributes.
    The gaps between deliveries: benchmarks/emulator_probes.py."""
    min_backoff, max_backoff, attempts = 1.0, 4.0, 5
    topic = make_topic("failing")
    dead_topic = make_topic("failing-dead")
    dead_sub = sub_path(dead_topic, "pull")
    subscriber.create_subscription(name=dead_sub, topic=dead_topic)
    source_sub = _push_subscription(
        subscriber,
        sub_path(topic, "ff"),
        topic,
        cloudevent_function.endpoint(topic),
        retry_policy={
            "minimum_backoff": {"seconds": int(min_backoff)},
            "maximum_backoff": {"seconds": int(max_backoff)},
        },
        dead_letter_policy={"dead_letter_topic": dead_topic, "max_delivery_attempts": attempts},
    )
    message_id = publisher.publish(topic, b"poison", fail="1", run_id="r-7").result()

    dead_letters: list[Any] = []
    stream = subscriber.subscribe(dead_sub, dead_letters.append)
    try:
        assert wait_until(lambda: bool(dead_letters), timeout=120)
    finally:
        stream.cancel()

    deliveries = cloudevent_function.events(topic)
    assert len(deliveries) == attempts
    assert {e["id"] for e in deliveries} == {message_id}

    [letter] = dead_letters
    letter.ack()
    attributes = dict(letter.attributes)
    assert letter.data == b"poison"
    assert attributes.pop("fail") == "1"
    assert attributes.pop("run_id") == "r-7"
    assert attributes.pop("CloudPubSubDeadLetterSourceTopicPublishTime").endswith("Z")
    assert attributes == {
        "CloudPubSubDeadLetterSourceDeliveryCount": str(attempts),
        "CloudPubSubDeadLetterSourceSubscription": source_sub.rsplit("/", 1)[1],
        "CloudPubSubDeadLetterSourceSubscriptionProject": source_sub.split("/")[1],
    }
    # The dead letter is a new message on another topic.
    assert letter.message_id != message_id


def test_push_slower_than_ack_deadline_is_delivered_again_while_running(
    make_topic: Callable[[str], str],
    sub_path: Callable[[str, str], str],
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
    push_server: PushServer,
) -> None:
    """A push not answered within the ack deadline counts as a nack: the same message arrives
    again while the first request still runs. Long steps therefore hold a lease with
    heartbeats in Firestore instead of relying on the ack deadline. (After how long:
    benchmarks/emulator_probes.py.)"""
    topic = make_topic("slow")
    _push_subscription(
        subscriber, sub_path(topic, "push"), topic, push_server.url(), ack_deadline_seconds=10
    )
    key = uuid.uuid4().hex
    publisher.publish(topic, b"slow", key=key, hold="120").result()  # answered once redelivered

    pushes = push_server.wait_for(2, key, timeout=120)
    assert len(pushes) >= 2
    assert pushes[0].envelope["message"]["messageId"] == pushes[1].envelope["message"]["messageId"]
    assert pushes[1].open_requests == 2  # the first request was still being answered
