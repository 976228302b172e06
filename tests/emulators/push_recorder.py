"""CloudEvent function for the push probes, run by a real functions-framework process.

It appends every event it receives as one JSON line to the file named by PUSH_RECORD_FILE,
and fails (functions-framework then answers 500) when the Pub/Sub message carries the
attribute `fail=1`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import functions_framework
from cloudevents.http.event import CloudEvent


@functions_framework.cloud_event
def record(event: CloudEvent) -> None:
    data: dict[str, Any] = event.data
    entry = {
        "received_at": time.time(),
        "id": event["id"],
        "type": event["type"],
        "source": event["source"],
        "specversion": event["specversion"],
        "subject": event.get("subject"),
        "time": event.get("time"),
        "data": data,
    }
    # One write of one line to an O_APPEND file: concurrent requests never interleave.
    with open(os.environ["PUSH_RECORD_FILE"], "a") as out:
        out.write(json.dumps(entry) + "\n")
    if data["message"].get("attributes", {}).get("fail") == "1":
        raise RuntimeError("asked to fail by the message attribute fail=1")
