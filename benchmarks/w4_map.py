"""W4: a map step over 1,000 items on the local stack (issue 11; ``make bench-map``).

    make bench-map                                     # = this file: 1,000 items
    .venv/bin/python benchmarks/w4_map.py --items 200  # smaller
    .venv/bin/python benchmarks/w4_map.py --json       # one JSON object on stdout

A ``DevStack`` with its own emulators serves ``benchmarks/map_pipeline.py``: ``list``
makes the items, ``m`` maps over them; every 20th item fails once (retryably) and then
succeeds; an item returns an 8 KB array (one Cloud Storage object per result). The run
starts as users start runs: a start message published with the official client.

Reported:

- **items/s**: items ÷ (the map document's creation → the last item's finish);
- **time to an item's finish** from the map's start, p50/p95 (mostly queueing: 1,000
  items wait for the function's instances);
- **item service time**, p50/p95: an item document's claim → its finish decision (the
  function does no work: this is the framework's cost per item once the message arrived
  — claim, read the run and map documents, run, write the result);
- **the per-item floor**, measured in the same run on the same emulators: one publish
  until a tiny HTTP endpoint on a push subscription receives it, one item-document
  compare-and-set (read, then update with a ``last_update_time`` precondition), one 8 KB
  create-only object write — and the **item overhead** = service p50 + the floor's
  publish→push p50 + one compare-and-set (the finish's write, which the service time
  does not include), against the floor (target: ≤ 2×);
- **lost and doubled items** (from the calls log and the output; target: none);
- **writes to the run document during the map** (its ``revision`` when the map step was
  queued → when the run finished), beside the same figure for a map of 50 items: O(1),
  not O(items).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from benchmarks.map_pipeline import PIPELINE_NAME, RESULT_BYTES, item_result  # noqa: E402
from benchmarks.w2_w3_serverless import (  # noqa: E402
    PushProbe,
    log,
    med,
    pct,
    push_probe_subscription,
    versions,
)
from resumable.dev._stack import DevStack  # noqa: E402
from resumable.serverless._engine import Engine  # noqa: E402
from resumable.serverless._map_state import ItemStatus  # noqa: E402
from resumable.serverless._run_state import RunState  # noqa: E402
from resumable.serverless._settings import Settings  # noqa: E402
from resumable.status import StepStatus  # noqa: E402

PIPELINE_REF = "benchmarks.map_pipeline:build"
PROJECT = "resumable-bench-map"
BUCKET = "resumable-bench-map"
FLOOR_TOPIC = "bench-map-floor"
TARGET_RATIO = 2.0
FAIL_EVERY = 20


class ItemFloor:
    """One publish→push, one item-document compare-and-set, one 8 KB object write."""

    def __init__(self, stack: DevStack) -> None:
        from resumable.serverless._firestore import make_firestore_client
        from resumable.storage.gcs import make_storage_client

        self.probe = PushProbe()
        self.publisher, self.topic = push_probe_subscription(stack.project, FLOOR_TOPIC, self.probe)
        self.firestore = make_firestore_client(stack.project)
        self.doc = self.firestore.collection("bench_map_floor").document("item")
        self.doc.set({"status": "queued", "attempt": 0, "lease_owner": None})
        self.bucket = make_storage_client(stack.project).bucket(stack.bucket)
        self.payload = bytes(RESULT_BYTES)
        self.samples: list[dict[str, float]] = []

    def sample(self) -> dict[str, float]:
        key = uuid.uuid4().hex
        arrived = self.probe.expect(key)
        t0 = time.perf_counter()
        self.publisher.publish(self.topic, b"{}", probe=key).result(timeout=30)
        if not arrived.wait(timeout=30):
            raise RuntimeError("the floor's push endpoint never received its message")
        t1 = time.perf_counter()
        snapshot = self.doc.get()
        data = snapshot.to_dict()
        data["attempt"] = int(data["attempt"]) + 1
        option = self.firestore.write_option(last_update_time=snapshot.update_time)
        self.doc.update(data, option=option)
        t2 = time.perf_counter()
        self.bucket.blob(f"bench-map-floor/{key}").upload_from_string(
            self.payload, if_generation_match=0
        )
        t3 = time.perf_counter()
        result = {
            "push": self.probe.arrived[key] - t0,
            "cas": t2 - t1,
            "write": t3 - t2,
        }
        result["total"] = result["push"] + result["cas"] + result["write"]
        self.samples.append(result)
        return result

    def summary(self) -> dict[str, float]:
        keys = self.samples[0].keys() if self.samples else []
        return {k: med([s[k] for s in self.samples]) for k in keys}

    def close(self) -> None:
        self.probe.close()


class MapRun:
    """One run of the W4 pipeline, watched through its run document."""

    def __init__(self, stack: DevStack, engine: Engine, items: int, workdir: Path) -> None:
        self.stack = stack
        self.engine = engine
        self.items = items
        self.workdir = workdir
        self.run_id = f"w4-{uuid.uuid4().hex[:10]}"
        self.doc_id = engine.doc_id("default", PIPELINE_NAME, self.run_id)
        self.revision_at_queue: int | None = None

    def start(self) -> None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

        publisher = pubsub_v1.PublisherClient()
        topic = publisher.topic_path(self.stack.project, f"{self.stack.prefix}-start")
        params = {"items": self.items, "workdir": str(self.workdir), "fail_every": FAIL_EVERY}
        body = {"pipeline": PIPELINE_NAME, "params": params, "run_id": self.run_id}
        publisher.publish(topic, orjson.dumps(body)).result(timeout=60)

    def wait(self, timeout: float) -> RunState:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.engine.runs.get(self.doc_id)
            if state is not None:
                queued = state.steps["m"].status != StepStatus.NOT_STARTED
                if queued and self.revision_at_queue is None:
                    self.revision_at_queue = state.revision
                if state.finished:
                    return state
            time.sleep(0.05)
        raise RuntimeError(f"run {self.run_id} did not finish within {timeout:.0f} s")

    def measure(self, state: RunState) -> dict[str, Any]:
        record = state.steps["m"]
        assert record.map_id, "the map step never started its map"
        got = self.engine.maps.get_map(self.doc_id, record.map_id)
        assert got is not None
        began = got[0].created_at
        docs = dict(self.engine.maps.items(self.doc_id, record.map_id))
        finished = [d.finished_at for d in docs.values() if d.finished_at is not None]
        service = [
            d.finished_at - d.started_at
            for d in docs.values()
            if d.finished_at is not None and d.started_at is not None
        ]
        calls = Counter(
            int(x) for x in (self.workdir / "calls.log").read_text().split() if x.strip()
        )
        failing = {i for i in range(self.items) if i % FAIL_EVERY == FAIL_EVERY // 2}
        expected_calls = Counter({i: 2 if i in failing else 1 for i in range(self.items)})
        completed = {i for i, d in docs.items() if d.status == ItemStatus.COMPLETED}
        lost = sorted(set(range(self.items)) - completed)
        doubled = sorted(i for i in range(self.items) if calls[i] > expected_calls[i])
        output_ok = False
        if state.status == "completed":
            spec = self.engine.registry.get(PIPELINE_NAME).spec
            final = self.engine.files(state).final_context(state, spec)
            output_ok = len(final["m"]) == self.items and all(
                (final["m"][i] == item_result(i)).all() for i in range(self.items)
            )
        span = (max(finished) - began) if finished else float("inf")
        return {
            "items": self.items,
            "status": state.status,
            "items_per_s": len(finished) / span if finished else 0.0,
            "finish_p50_s": pct([f - began for f in finished], 0.5),
            "finish_p95_s": pct([f - began for f in finished], 0.95),
            "service_p50_ms": 1000 * pct(service, 0.5),
            "service_p95_ms": 1000 * pct(service, 0.95),
            "lost": len(lost),
            "doubled": len(doubled),
            "failed_once": len(failing),
            "output_exact": output_ok,
            "run_document_writes_during_map": state.revision - (self.revision_at_queue or 0),
            "run_document_bytes": len(orjson.dumps(state.model_dump())),
        }


@contextlib.contextmanager
def running_stack(home: Path) -> Iterator[DevStack]:
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    stack = DevStack([PIPELINE_REF], home=home, project=PROJECT, bucket=BUCKET)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def run_map(stack: DevStack, engine: Engine, items: int, tmp: Path) -> dict[str, Any]:
    workdir = tmp / f"map-{items}-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    run = MapRun(stack, engine, items, workdir)
    run.start()
    state = run.wait(timeout=max(300.0, items * 1.0))
    return run.measure(state)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="W4: a map step on the local stack")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--small", type=int, default=50, help="the map the writes compare to")
    parser.add_argument("--floor-samples", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-w4-") as folder:
        tmp = Path(folder)
        with running_stack(tmp / "stack") as stack:
            engine = Engine.from_settings(Settings.from_env())
            floor = ItemFloor(stack)
            try:
                for _ in range(3):
                    floor.sample()  # warm-up
                floor.samples.clear()
                log("W4 warm-up: a small map (starts every function's engine)")
                run_map(stack, engine, 10, tmp)
                log(f"W4: a map of {args.small} items")
                small = run_map(stack, engine, args.small, tmp)
                log(f"W4: a map of {args.items} items")
                large = run_map(stack, engine, args.items, tmp)
                for _ in range(args.floor_samples):
                    floor.sample()
            finally:
                floor.close()
    floor_summary = floor.summary()
    # The service time ends when the item's finish is decided, before its write: one
    # compare-and-set more, counted at the floor's price.
    overhead_ms = large["service_p50_ms"] + 1000 * (floor_summary["push"] + floor_summary["cas"])
    report = {
        "w4": large,
        "w4_small": small,
        "floor_ms": {k: 1000 * v for k, v in floor_summary.items()},
        "item_overhead_p50_ms": overhead_ms,
        "ratio": overhead_ms / (1000 * floor_summary["total"]),
        "versions": versions(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    ok = large["lost"] == 0 and large["doubled"] == 0 and large["output_exact"]
    return 0 if ok else 1


def _verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def print_report(report: dict[str, Any]) -> None:
    large, small, floor = report["w4"], report["w4_small"], report["floor_ms"]
    print()
    print(f"W4 — a map of {large['items']} items on the local stack ({large['status']})")
    print(f"  items/s                      {large['items_per_s']:8.1f}")
    print(
        f"  item finish since map start  p50 {large['finish_p50_s']:.2f} s, "
        f"p95 {large['finish_p95_s']:.2f} s   (queueing behind the other items)"
    )
    print(
        f"  item service (claim→finish)  p50 {large['service_p50_ms']:.1f} ms, "
        f"p95 {large['service_p95_ms']:.1f} ms"
    )
    print(
        f"  per-item floor               {floor['total']:.1f} ms   (publish→push "
        f"{floor['push']:.1f} + item CAS {floor['cas']:.1f} + 8 KB write {floor['write']:.1f})"
    )
    print(
        f"  item overhead p50            {report['item_overhead_p50_ms']:.1f} ms = "
        f"{report['ratio']:.2f}× floor   target ≤ {TARGET_RATIO:.0f}×: "
        f"{_verdict(report['ratio'] <= TARGET_RATIO)}"
    )
    lost_ok = large["lost"] == 0 and large["doubled"] == 0 and large["output_exact"]
    print(
        f"  lost / doubled items         {large['lost']} / {large['doubled']}   "
        f"({large['failed_once']} failed once and ran twice, as planned); output exact: "
        f"{large['output_exact']}   target none lost or doubled: {_verdict(lost_ok)}"
    )
    writes_ok = (
        large["run_document_writes_during_map"] <= small["run_document_writes_during_map"] + 10
    )
    print(
        f"  run-document writes          {large['run_document_writes_during_map']} during "
        f"{large['items']} items, {small['run_document_writes_during_map']} during "
        f"{small['items']}   target O(1): {_verdict(writes_ok)}"
    )
    print(
        f"  run document size            {large['run_document_bytes']} bytes "
        f"({small['run_document_bytes']} with {small['items']} items)"
    )
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))


if __name__ == "__main__":
    sys.exit(main())
