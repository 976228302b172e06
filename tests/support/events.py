"""Pub/Sub push deliveries as the deployed functions receive them: CloudEvents."""

from __future__ import annotations

import base64
from typing import Any

from cloudevents.http import CloudEvent

ATTRIBUTES = {
    "type": "google.cloud.pubsub.topic.v1.messagePublished",
    "source": "//pubsub.googleapis.com/projects/test-project/topics/t",
}


def push_event(data: Any) -> CloudEvent:
    """A CloudEvent whose data is ``data`` (a push envelope, or anything else)."""
    return CloudEvent(ATTRIBUTES, data)


def envelope(body: bytes, **message_fields: Any) -> dict[str, Any]:
    """The push envelope of a message whose data is ``body``."""
    message = {"data": base64.b64encode(body).decode(), "messageId": "1", **message_fields}
    return {"message": message, "subscription": "projects/test-project/subscriptions/s"}
