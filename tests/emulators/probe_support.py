"""Helpers for the emulator probes: measured facts, waiting, and two kinds of push receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ProbeFacts:
    """Numbers the probes measured, by name, for the session summary."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def record(self, name: str, value: Any) -> None:
        self.values[name] = value


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


@dataclass
class Push:
    """One push request as received: when, where, the JSON envelope, the headers."""

    at: float
    path: str
    envelope: dict[str, Any]
    headers: dict[str, str]
    open_requests: int = 1  # push requests being answered when this one arrived, itself included

    @property
    def attributes(self) -> dict[str, str]:
        attributes: dict[str, str] = self.envelope["message"].get("attributes", {})
        return attributes


@dataclass
class PushServer:
    """A plain HTTP endpoint in this process that records raw push requests.

    It answers with the status in the message attribute `status` (default 204); with the
    attribute `hold`, only once the same message has arrived again (at most `hold` seconds).
    """

    port: int
    pushes: list[Push] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    open_requests: int = 0

    def url(self, path: str = "/push") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, key: str | None = None) -> list[Push]:
        """Pushes so far, optionally only those whose attribute `key` equals `key`."""
        with self.lock:
            return [p for p in self.pushes if key is None or p.attributes.get("key") == key]

    def wait_for(self, count: int, key: str | None = None, timeout: float = 15.0) -> list[Push]:
        wait_until(lambda: len(self.received(key)) >= count, timeout)
        return self.received(key)


@dataclass
class FunctionProcess:
    """A functions-framework process serving push_recorder.record as a CloudEvent function."""

    port: int
    record_file: Path

    def endpoint(self, topic_path: str) -> str:
        """Push endpoint whose path makes functions-framework's CloudEvent source the topic."""
        return f"http://127.0.0.1:{self.port}/{topic_path}"

    def events(self, source_topic: str) -> list[dict[str, Any]]:
        """Events received so far that came from `source_topic` (a topic path)."""
        if not self.record_file.exists():
            return []
        lines = self.record_file.read_text().splitlines()
        source = f"//pubsub.googleapis.com/{source_topic}"
        return [e for e in map(json.loads, lines) if e["source"] == source]

    def wait_for(self, source_topic: str, count: int, timeout: float) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.events(source_topic)) >= count, timeout)
        return self.events(source_topic)
