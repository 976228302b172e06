"""Publishing messages: Pub/Sub in production, a list in unit tests."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, attributes: dict[str, str] | None = None) -> str:
        """Publish and wait until the service accepted the message; returns its id."""
        ...

    def publish_many(self, topic: str, messages: list[tuple[bytes, dict[str, str]]]) -> list[str]:
        """Publish ``(data, attributes)`` pairs, batched; wait until all were accepted."""
        ...


class PubSubPublisher:
    """google-cloud-pubsub's publisher (honours ``PUBSUB_EMULATOR_HOST``)."""

    def __init__(self, project: str, *, client: Any = None, timeout: float = 60.0) -> None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

        self.project = project
        self.timeout = timeout
        # One message per request, sent at once: a step hop waits on its publish, and the
        # default 10 ms batching window would add to every hop.
        batching = pubsub_v1.types.BatchSettings(max_messages=1)
        self.client = client or pubsub_v1.PublisherClient(batch_settings=batching)
        self._batching: Any = None  # for publish_many, built on first use
        self._lock = threading.Lock()

    def publish(self, topic: str, data: bytes, attributes: dict[str, str] | None = None) -> str:
        path = self.client.topic_path(self.project, topic)
        future = self.client.publish(path, data, **(attributes or {}))
        return str(future.result(timeout=self.timeout))

    def publish_many(self, topic: str, messages: list[tuple[bytes, dict[str, str]]]) -> list[str]:
        """Many messages in few requests (a map's items): the client's batching, up to
        1,000 messages or 10 ms per request."""
        from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

        with self._lock:
            if self._batching is None:
                settings = pubsub_v1.types.BatchSettings(max_messages=1000, max_latency=0.01)
                self._batching = pubsub_v1.PublisherClient(batch_settings=settings)
        path = self._batching.topic_path(self.project, topic)
        futures = [self._batching.publish(path, data, **attrs) for data, attrs in messages]
        return [str(f.result(timeout=self.timeout)) for f in futures]


@dataclass
class PublishedMessage:
    topic: str
    data: bytes
    attributes: dict[str, str]


class MemoryPublisher:
    """Keeps published messages in a list."""

    def __init__(self) -> None:
        self.messages: list[PublishedMessage] = []
        self._lock = threading.Lock()

    def publish(self, topic: str, data: bytes, attributes: dict[str, str] | None = None) -> str:
        with self._lock:
            self.messages.append(PublishedMessage(topic, data, dict(attributes or {})))
            return str(len(self.messages))

    def publish_many(self, topic: str, messages: list[tuple[bytes, dict[str, str]]]) -> list[str]:
        return [self.publish(topic, data, attributes) for data, attributes in messages]
