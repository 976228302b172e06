"""Pull and StreamingPull delivery: ack deadlines, nacks, delivery counts, dead letters.

Probes, through the official client only, of what the engine and its tests rely on when a
message is not acknowledged in time, is nacked, or keeps failing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from google.cloud import pubsub_v1
from probe_support import wait_until

pytestmark = pytest.mark.emulators


def _pull(subscriber: pubsub_v1.SubscriberClient, subscription: str, timeout: float) -> list[Any]:
    response = subscriber.pull(
        request={"subscription": subscription, "max_messages": 10}, timeout=timeout
    )
    return list(response.received_messages)


def _pull_until_any(
    subscriber: pubsub_v1.SubscriberClient, subscription: str, timeout: float
) -> list[Any]:
    """Long-poll until messages arrive (a waiting Pull returns as soon as one does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if messages := _pull(subscriber, subscription, timeout=3):
            return messages
    return []


def test_unacked_message_is_redelivered_after_the_ack_deadline(
    make_topic: Callable[[str], str],
    sub_path: Callable[[str, str], str],
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
) -> None:
    """Deadline 10 s, no ack: redelivered with a new ack id; acking the stale id does not
    raise; a nack (modack 0) and a modack of 2 s redeliver it too. (After how long:
    benchmarks/emulator_probes.py.)

    EMULATOR NOTE: a Pull that finds nothing holds until about 1 s before the client's
    timeout, then returns an empty list — so pull with a short timeout.
    """
    topic = make_topic("deadline")
    subscription = sub_path(topic, "pull")
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=10)
    publisher.publish(topic, b"late").result()

    [first] = _pull_until_any(subscriber, subscription, timeout=60)
    assert first.delivery_attempt == 0  # no dead-letter policy: no count (None in subscribe)
    [second] = _pull_until_any(subscriber, subscription, timeout=60)
    assert second.message.message_id == first.message.message_id
    assert second.ack_id != first.ack_id
    subscriber.acknowledge(subscription=subscription, ack_ids=[first.ack_id])  # stale: no error

    subscriber.modify_ack_deadline(
        subscription=subscription, ack_ids=[second.ack_id], ack_deadline_seconds=0
    )
    [third] = _pull_until_any(subscriber, subscription, timeout=60)
    assert third.message.message_id == first.message.message_id

    subscriber.modify_ack_deadline(
        subscription=subscription, ack_ids=[third.ack_id], ack_deadline_seconds=2
    )
    [fourth] = _pull_until_any(subscriber, subscription, timeout=60)
    assert fourth.message.message_id == first.message.message_id
    subscriber.acknowledge(subscription=subscription, ack_ids=[fourth.ack_id])
    assert _pull(subscriber, subscription, timeout=3) == []  # acked: gone


def test_streaming_pull_delivers_each_message_once_when_acked(
    make_topic: Callable[[str], str],
    sub_path: Callable[[str, str], str],
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
) -> None:
    """subscribe() (StreamingPull) gets all messages with data and attributes, with
    FlowControl capping the callbacks in flight."""
    count, max_in_flight = 200, 5
    topic = make_topic("stream")
    subscription = sub_path(topic, "stream")
    subscriber.create_subscription(name=subscription, topic=topic)
    received: list[tuple[bytes, dict[str, str]]] = []
    in_flight = peak = 0
    lock = threading.Lock()

    def callback(message: Any) -> None:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.002)
        with lock:
            received.append((message.data, dict(message.attributes)))
            in_flight -= 1
        message.ack()

    stream = subscriber.subscribe(
        subscription, callback, flow_control=pubsub_v1.types.FlowControl(max_messages=5)
    )
    try:
        futures = [publisher.publish(topic, f"m{i}".encode(), seq=str(i)) for i in range(count)]
        for future in futures:
            future.result()
        assert wait_until(lambda: len(received) >= count, timeout=120)
    finally:
        stream.cancel()
    assert len(received) == count
    assert {data for data, _ in received} == {f"m{i}".encode() for i in range(count)}
    assert all(attrs["seq"] == data.decode()[1:] for data, attrs in received)
    assert peak <= max_in_flight


def test_streaming_pull_counts_delivery_attempts_then_dead_letters(
    make_topic: Callable[[str], str],
    sub_path: Callable[[str, str], str],
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
) -> None:
    """With a dead-letter policy, delivery_attempt runs 1..max; nacks without a retry policy
    redeliver at once; then the message goes to the dead-letter topic. Attempts outside
    5..100 are refused.

    EMULATOR DIFFERS: it refuses them with OUT_OF_RANGE where the service documents
    INVALID_ARGUMENT; both are `BadRequest` (HTTP 400) in google-api-core.
    """
    from google.api_core.exceptions import BadRequest

    attempts = 5
    topic = make_topic("nacked")
    dead_topic = make_topic("nacked-dead")
    dead_sub = sub_path(dead_topic, "pull")
    subscriber.create_subscription(name=dead_sub, topic=dead_topic)
    for invalid in (4, 101):
        with pytest.raises(BadRequest, match="max_delivery_attempts"):
            subscriber.create_subscription(
                request={
                    "name": sub_path(topic, f"bad{invalid}"),
                    "topic": topic,
                    "dead_letter_policy": {
                        "dead_letter_topic": dead_topic,
                        "max_delivery_attempts": invalid,
                    },
                }
            )
    subscription = sub_path(topic, "stream")
    subscriber.create_subscription(
        request={
            "name": subscription,
            "topic": topic,
            "dead_letter_policy": {"dead_letter_topic": dead_topic, "max_delivery_attempts": 5},
        }
    )
    seen: list[int | None] = []

    def always_nack(message: Any) -> None:
        seen.append(message.delivery_attempt)
        message.nack()

    stream = subscriber.subscribe(subscription, always_nack)
    dead: list[Any] = []
    dead_stream = subscriber.subscribe(dead_sub, dead.append)
    try:
        publisher.publish(topic, b"bad input", step="s1").result()
        assert wait_until(lambda: bool(dead), timeout=120)
    finally:
        stream.cancel()
        dead_stream.cancel()

    assert seen == list(range(1, attempts + 1))
    [letter] = dead
    letter.ack()
    assert letter.data == b"bad input"
    assert letter.attributes["step"] == "s1"
    assert letter.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == str(attempts)
