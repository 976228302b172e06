"""How fast the local cloud answers: the latency figures of the emulator probes.

    make bench-emulators                                # = this file
    .venv/bin/python benchmarks/emulator_probes.py --json

The probes in ``tests/emulators/`` pin what the emulators *do* (which answers ack, that a
contended transaction waits for a lock, that a message is redelivered); how *long* each
takes depends on how busy the machine is, so it is measured here and only printed: the
latencies the design notes quote for the local cloud are re-measured with this script. It
starts its own emulators (Pub/Sub, Firestore, fake-gcs-server) on free ports and talks to
them through the official clients only.
"""

from __future__ import annotations

import argparse
import http.server
import itertools
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emulators.launcher import LocalCloud  # noqa: E402
from emulators.ports import free_port  # noqa: E402


def seconds(value: float) -> float:
    return round(value, 3)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def race(workers: int, work: Callable[[int], None]) -> tuple[list[BaseException | None], float]:
    """``work(i)`` in ``workers`` threads at once; each one's error, and the wall time."""
    errors: list[BaseException | None] = [None] * workers

    def run(i: int) -> None:
        try:
            work(i)
        except Exception as error:
            errors[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors, time.monotonic() - started


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- Firestore ------------------------------------------------------------------------------


def firestore_figures(project: str, samples: int) -> dict[str, Any]:
    from google.api_core.exceptions import Aborted
    from google.cloud import firestore

    db = firestore.Client(project=project)
    prefix = uuid.uuid4().hex[:8]

    def increment(ref: Any, on_first_read: Callable[[], object] = lambda: None) -> None:
        attempts = 0

        @firestore.transactional  # type: ignore[untyped-decorator,unused-ignore]
        def body(transaction: Any) -> None:
            nonlocal attempts
            attempts += 1
            snapshot = ref.get(transaction=transaction)
            if attempts == 1:
                on_first_read()
            transaction.update(ref, {"n": snapshot.get("n") + 1})

        body(db.transaction())

    figures: dict[str, Any] = {}
    doc = db.collection("bench").document(f"{prefix}-rmw")
    doc.set({"n": 0})
    durations = []
    for _ in range(samples):
        started = time.monotonic()
        increment(doc)
        durations.append(time.monotonic() - started)
    figures["uncontended read-modify-write transaction (s)"] = {
        "median": seconds(statistics.median(durations)),
        "p95": seconds(percentile(durations, 0.95)),
        "samples": samples,
    }

    writers = 10
    cas = db.collection("bench").document(f"{prefix}-cas")
    cas.set({"owner": None})
    base = cas.get().update_time
    barrier = threading.Barrier(writers)

    def claim(i: int) -> None:
        barrier.wait()
        cas.update({"owner": i}, option=db.write_option(last_update_time=base))

    errors, cas_elapsed = race(writers, claim)
    fresh = db.collection("bench").document(f"{prefix}-create")
    barrier = threading.Barrier(writers)

    def create(i: int) -> None:
        barrier.wait()
        fresh.create({"owner": i})

    create_errors, create_elapsed = race(writers, create)
    figures[f"{writers} racing precondition writes (winners, s)"] = {
        "last_update_time": [errors.count(None), seconds(cas_elapsed)],
        "create": [create_errors.count(None), seconds(create_elapsed)],
    }

    locked = db.collection("bench").document(f"{prefix}-lock")
    locked.set({"n": 0})
    read_done, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        read_done.set()
        release.wait(timeout=60)

    holder = threading.Thread(target=increment, args=(locked, hold_lock))
    holder.start()
    read_done.wait(timeout=30)
    started = time.monotonic()
    try:
        locked.update({"n": 100})
        outcome = "written"
    except Aborted:
        outcome = "aborted"
    waited = time.monotonic() - started
    release.set()
    holder.join(timeout=60)
    figures["plain write blocked by a transaction's read lock"] = {
        "outcome": outcome,
        "after_s": seconds(waited),
    }

    for n in (2, 5, 10):
        counter = db.collection("bench").document(f"{prefix}-n{n}")
        counter.set({"n": 0})
        together = threading.Barrier(n)

        def contend(_: int, counter: Any = counter, together: Any = together) -> None:
            increment(counter, lambda: together.wait(60))

        errors, elapsed = race(n, contend)
        figures[f"contended transactions on one document, N={n}"] = {
            "committed": errors.count(None),
            "seconds": round(elapsed, 2),
        }
    return figures


# -- Pub/Sub --------------------------------------------------------------------------------


class PushEndpoint:
    """A local HTTP endpoint on a push subscription: records arrivals, answers a status."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    endpoint.arrivals.append((time.monotonic(), body))
                attributes = body["message"].get("attributes", {})
                time.sleep(float(attributes.get("sleep", 0)))
                self.send_response(int(attributes.get("status", 204)))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/push"

    def times(self, key: str) -> list[float]:
        with self.lock:
            return [
                at for at, body in self.arrivals if body["message"]["attributes"].get("key") == key
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def pubsub_figures(project: str, samples: int) -> dict[str, Any]:
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    endpoint = PushEndpoint()
    figures: dict[str, Any] = {}

    def topic(name: str) -> str:
        path: str = publisher.topic_path(project, f"{name}-{uuid.uuid4().hex[:8]}")
        publisher.create_topic(name=path)
        return path

    def subscription(topic_path: str, suffix: str, **extra: Any) -> str:
        name = topic_path.replace("/topics/", "/subscriptions/") + f"-{suffix}"
        subscriber.create_subscription(request={"name": name, "topic": topic_path, **extra})
        return name

    try:
        latency = topic("latency")
        subscription(latency, "push", push_config={"push_endpoint": endpoint.url})
        publish_s, push_s = [], []
        for i in range(samples):
            key = f"lat-{i}-{uuid.uuid4().hex[:6]}"
            sent = time.monotonic()
            publisher.publish(latency, b"ping", key=key).result()
            publish_s.append(time.monotonic() - sent)
            wait_until(lambda key=key: bool(endpoint.times(key)), timeout=30)
            push_s.append(endpoint.times(key)[0] - sent)
        figures["publish().result() (s)"] = {"median": seconds(statistics.median(publish_s))}
        figures["publish → push endpoint receives (s)"] = {
            "median": seconds(statistics.median(push_s)),
            "p95": seconds(percentile(push_s, 0.95)),
            "samples": samples,
        }

        failing, dead = topic("failing"), topic("failing-dead")
        subscription(dead, "pull")
        subscription(
            failing,
            "push",
            push_config={"push_endpoint": endpoint.url},
            retry_policy={"minimum_backoff": {"seconds": 1}, "maximum_backoff": {"seconds": 4}},
            dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": 5},
        )
        key = f"fail-{uuid.uuid4().hex[:6]}"
        publisher.publish(failing, b"poison", key=key, status="500").result()
        wait_until(lambda: len(endpoint.times(key)) >= 5, timeout=60)
        arrivals = endpoint.times(key)
        figures["push retry gaps, retry policy 1–4 s, 500 answers (s)"] = [
            round(b - a, 2) for a, b in itertools.pairwise(arrivals)
        ]

        slow = topic("slow")
        subscription(slow, "push", push_config={"push_endpoint": endpoint.url},
                     ack_deadline_seconds=10)  # fmt: skip
        key = f"slow-{uuid.uuid4().hex[:6]}"
        publisher.publish(slow, b"slow", key=key, sleep="14").result()
        wait_until(lambda: len(endpoint.times(key)) >= 2, timeout=30)
        arrivals = endpoint.times(key)
        if len(arrivals) >= 2:
            figures["push redelivered while the first still runs, ack deadline 10 s (s)"] = round(
                arrivals[1] - arrivals[0], 2
            )

        pulled = topic("deadline")
        sub = subscription(pulled, "pull", ack_deadline_seconds=10)
        publisher.publish(pulled, b"late").result()
        first = subscriber.pull(request={"subscription": sub, "max_messages": 1}, timeout=10)
        pulled_at = time.monotonic()
        second: list[Any] = []
        while not second and time.monotonic() - pulled_at < 30:
            response = subscriber.pull(request={"subscription": sub, "max_messages": 1}, timeout=3)
            second = list(response.received_messages)
        after_deadline = time.monotonic() - pulled_at
        nacked_at = time.monotonic()
        subscriber.modify_ack_deadline(
            subscription=sub, ack_ids=[second[0].ack_id], ack_deadline_seconds=0
        )
        third = subscriber.pull(request={"subscription": sub, "max_messages": 1}, timeout=5)
        after_nack = time.monotonic() - nacked_at
        subscriber.acknowledge(
            subscription=sub, ack_ids=[m.ack_id for m in third.received_messages]
        )
        empty_at = time.monotonic()
        subscriber.pull(request={"subscription": sub, "max_messages": 1}, timeout=3)
        figures["pull redelivery (s): ack deadline 10 s / nack / empty pull of 3 s"] = [
            round(after_deadline, 2),
            seconds(after_nack),
            round(time.monotonic() - empty_at, 2),
        ]
        assert first.received_messages

        stream_topic = topic("stream")
        stream_sub = subscription(stream_topic, "stream")
        received: list[bytes] = []
        count = 200

        def callback(message: Any) -> None:
            received.append(message.data)
            message.ack()

        stream = subscriber.subscribe(stream_sub, callback)
        try:
            started = time.monotonic()
            futures = [publisher.publish(stream_topic, f"m{i}".encode()) for i in range(count)]
            for future in futures:
                future.result()
            wait_until(lambda: len(received) >= count, timeout=60)
            figures[f"StreamingPull: {count} messages published and acked (s)"] = round(
                time.monotonic() - started, 2
            )
        finally:
            stream.cancel()
    finally:
        endpoint.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40, help="samples per latency figure")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with LocalCloud(project="resumable-bench") as cloud:
        cloud.apply_env()
        figures = {
            "firestore": firestore_figures(cloud.project, args.samples),
            "pubsub": pubsub_figures(cloud.project, args.samples),
        }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    for service, values in figures.items():
        print(f"{service}:")
        for name, value in values.items():
            print(f"  {name}: {json.dumps(value, ensure_ascii=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
