"""A small pipeline with every deployment setting a step can have: memory, a timeout past
what an event-driven function may run (540 s), concurrency (which needs a whole CPU) and
retries (which set its subscription's delivery attempts)."""

from __future__ import annotations

from typing import Any

from resumable import Pipeline


def fetch(context: dict[str, Any]) -> dict[str, Any]:
    return {"fetched": True}


def index(context: dict[str, Any]) -> dict[str, Any]:
    return {"indexed": True}


ingest = Pipeline(
    "ingest",
    {
        "fetch": {
            "function": fetch,
            "memory": "2Gi",
            "timeout": 900,
            "concurrency": 4,
            "retries": 20,
        },
        "index": {"function": index},
    },
)
