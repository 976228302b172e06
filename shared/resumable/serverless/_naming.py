"""Names of topics, subscriptions and functions, derived from the pipeline definition.

The runtime, the local dev stack and the deployment tools all call these functions, so
infrastructure and code cannot disagree on a name.
"""

from __future__ import annotations

import hashlib
import re

# Cloud Run service names: lowercase letters, digits and hyphens, starting with a letter,
# at most 49 characters.
_SERVICE_MAX = 49
# Pub/Sub topic and subscription names.
_PUBSUB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._~+%-]{2,254}")


def start_topic(prefix: str) -> str:
    return f"{prefix}-start"


def step_topic(prefix: str, pipeline: str, step: str) -> str:
    return f"{prefix}-{pipeline}-{step}"


def dead_letter_topic(prefix: str) -> str:
    return f"{prefix}-dead-letter"


def watchdog_topic(prefix: str) -> str:
    return f"{prefix}-watchdog"


def push_subscription(topic: str) -> str:
    return f"{topic}-push"


def pubsub_name_problem(name: str) -> str | None:
    """Why Pub/Sub would refuse ``name`` for a topic or subscription; ``None`` if it is valid."""
    if not _PUBSUB_NAME.fullmatch(name):
        return (
            f"({len(name)} characters) is not a Pub/Sub name: 3-255 letters, digits and "
            "'-._~+%', starting with a letter"
        )
    if name.startswith("goog"):
        return "is not a Pub/Sub name: names starting with 'goog' are reserved"
    return None


def topic_path(project: str, topic: str) -> str:
    return f"projects/{project}/topics/{topic}"


def subscription_path(project: str, subscription: str) -> str:
    return f"projects/{project}/subscriptions/{subscription}"


def service_name(*parts: str) -> str:
    """A valid Cloud Run service name for the parts, stable and unique per input."""
    raw = "-".join(parts)
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if not name or not name[0].isalpha():
        name = f"f-{name}"
    if len(name) > _SERVICE_MAX or name != raw:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:6]
        name = f"{name[: _SERVICE_MAX - 7].rstrip('-')}-{digest}"
    return name


def step_function(prefix: str, pipeline: str, step: str) -> str:
    return service_name(prefix, pipeline, step)
