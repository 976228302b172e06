"""Fixtures for the emulator probes: official clients, push receivers, measured facts.

Measured numbers are collected with `probe_facts.record(...)`; at the end of the session they
are printed and written to .emulators/probe-facts.json, so a run documents this machine.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore, pubsub_v1
from probe_support import FunctionProcess, ProbeFacts, Push, PushServer, wait_until

from emulators import LocalCloud
from emulators.localhttp import http_status
from emulators.ports import free_port
from emulators.processes import ManagedProcess, start_ticks
from emulators.registry import GroupRecord, Registry, RunRecord

HERE = Path(__file__).parent
FACTS_FILE = Path(".emulators") / "probe-facts.json"


# -- measured facts ------------------------------------------------------------------------


_FACTS = ProbeFacts()


@pytest.fixture(scope="session")
def probe_facts() -> ProbeFacts:
    return _FACTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FACTS.values:
        return
    terminalreporter.section("measured emulator behaviour")
    for name, value in _FACTS.values.items():
        terminalreporter.write_line(f"{name}: {json.dumps(value)}")
    FACTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    FACTS_FILE.write_text(json.dumps(_FACTS.values, indent=2) + "\n")


# -- official clients ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def publisher(local_cloud: LocalCloud) -> pubsub_v1.PublisherClient:
    """A Pub/Sub publisher reaching the emulator through PUBSUB_EMULATOR_HOST."""
    return pubsub_v1.PublisherClient()


@pytest.fixture(scope="session")
def subscriber(local_cloud: LocalCloud) -> pubsub_v1.SubscriberClient:
    """A Pub/Sub subscriber reaching the emulator through PUBSUB_EMULATOR_HOST.

    Not closed at the end: after SIGTERM the emulators are already gone, and close() would
    wait for a streaming pull that keeps reconnecting. Its threads are daemons.
    """
    return pubsub_v1.SubscriberClient()


@pytest.fixture(scope="session")
def firestore_client(local_cloud: LocalCloud) -> firestore.Client:
    """A Firestore client reaching the emulator through FIRESTORE_EMULATOR_HOST."""
    return firestore.Client(project=local_cloud.project)


@pytest.fixture
def make_topic(
    clean_cloud: LocalCloud, publisher: pubsub_v1.PublisherClient
) -> Callable[[str], str]:
    """Create a topic with a unique id starting with the given prefix; return its path."""

    def make(prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        path: str = publisher.topic_path(clean_cloud.project, name)
        publisher.create_topic(name=path)
        return path

    return make


@pytest.fixture
def sub_path() -> Callable[[str, str], str]:
    """The path of a subscription named after its topic: (topic path, suffix) → path."""

    def path(topic_path: str, suffix: str) -> str:
        return topic_path.replace("/topics/", "/subscriptions/") + f"-{suffix}"

    return path


# -- push receivers ------------------------------------------------------------------------


@pytest.fixture
def push_server() -> Iterator[PushServer]:
    server = PushServer(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            push = Push(time.time(), self.path, json.loads(body), dict(self.headers))
            with server.lock:
                server.open_requests += 1
                push.open_requests = server.open_requests
                server.pushes.append(push)
            try:
                if "hold" in push.attributes:
                    message_id = push.envelope["message"]["messageId"]
                    wait_until(
                        lambda: (
                            sum(
                                p.envelope["message"]["messageId"] == message_id
                                for p in server.received()
                            )
                            >= 2
                        ),
                        timeout=float(push.attributes["hold"]),
                    )
                self.send_response(int(push.attributes.get("status", "204")))
                self.send_header("Content-Length", "0")
                self.end_headers()
            finally:
                with server.lock:
                    server.open_requests -= 1

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

    httpd = ThreadingHTTPServer(("127.0.0.1", server.port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def cloudevent_function(local_cloud: LocalCloud) -> Iterator[FunctionProcess]:
    """One functions-framework process for the session, on a free port.

    Like the emulators, it runs in its own process group and is entered in the launcher's
    registry, so that a killed test run leaves nothing behind after the next start.
    """
    port = free_port()
    record_file = local_cloud.log_dir / "push-records.jsonl"
    record_file.unlink(missing_ok=True)
    executable = Path(sys.executable).parent / "functions-framework"
    process = ManagedProcess(
        "functions-framework",
        [
            str(executable),
            "--target=record",
            f"--source={HERE / 'push_recorder.py'}",
            "--signature-type=cloudevent",
            "--host=127.0.0.1",
            f"--port={port}",
        ],
        local_cloud.log_dir / "functions-framework.log",
        env={**os.environ, "PUSH_RECORD_FILE": str(record_file)},
    )
    registry = Registry()
    run_id = f"functions-framework-{os.getpid()}-{port}"
    process.start()
    try:
        registry.write(
            RunRecord(
                run_id=run_id,
                owner_pid=os.getpid(),
                owner_start=start_ticks(os.getpid()),
                groups=[GroupRecord("functions-framework", process.pid, "functions-framework")],
            )
        )
        url = f"http://127.0.0.1:{port}/"
        if not wait_until(lambda: http_status(url) is not None, timeout=30):
            raise RuntimeError(f"functions-framework did not start:\n{process.log_tail()}")
        yield FunctionProcess(port, record_file)
    finally:
        process.stop()
        registry.remove(run_id)
