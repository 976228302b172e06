"""The 50-step chain and W5 (a large context) on the local stack's emulators.

Both drive the real worker code (``handle_step``) in this process against the stack's
Firestore emulator and fake-gcs-server; messages go to an in-memory publisher and are
delivered by a loop, one at a time, so that each delivery's storage reads and writes are
its own (``store.stats``) and no Pub/Sub push sits in the figures.

- **chain**: a 50-step pipeline, each step adding one small dict. A step's *load* is
  ``StepAttempt.load`` (run document → its input context), timed in 3 runs' deliveries and
  30 more times each from the last run's state, alternated: target, step 50's median
  within 1.5× step 2's.
- **W5**: step 1 builds a context of ``size_mb`` (arrays of 5 MB under their own keys,
  incompressible, drawn before the run); each of steps 2–10 replaces 5 % of them and reads
  nothing else. Per
  step: bytes read and written (target: they follow what changed), the cycle (claim → the
  next step's claim, the write of the changed bytes included), and the raw transfer time
  of the changed bytes (5 % written with the client, then read) measured in the same run.
  Target: cycle ≤ 2× the W2 floor + that transfer time.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from resumable import Pipeline
from resumable.serverless._control import start_run
from resumable.serverless._engine import Engine, PipelineRegistry
from resumable.serverless._messages import StartMessage, parse_step
from resumable.serverless._publisher import MemoryPublisher
from resumable.serverless._run_state import RunState
from resumable.serverless._settings import Settings
from resumable.serverless._worker import StepAttempt, handle_step

CHUNK_MB = 5
W5_STEPS = 10
W5_CHANGE = 0.05


def local_engine(settings: Settings, *pipelines: Pipeline) -> Engine:
    """The stack's Firestore and Cloud Storage; messages kept in memory."""
    from resumable.serverless._firestore import FirestoreRunStateStore, make_firestore_client
    from resumable.storage import open_store

    return Engine(
        settings=settings,
        registry=PipelineRegistry(pipelines=pipelines),
        runs=FirestoreRunStateStore(
            make_firestore_client(settings.project, settings.database), settings.collection
        ),
        store=open_store(settings.storage),
        publisher=MemoryPublisher(),
    )


@dataclass
class Delivery:
    step: str
    load_s: float
    bytes_read: int
    bytes_written: int


@dataclass
class DrivenRun:
    state: RunState
    deliveries: list[Delivery] = field(default_factory=list)

    def by_step(self) -> dict[str, Delivery]:
        return {d.step: d for d in self.deliveries}


@contextmanager
def timed_loads() -> Iterator[list[float]]:
    """Durations of ``StepAttempt.load`` while inside."""
    loads: list[float] = []
    original = StepAttempt.load

    def load(self: StepAttempt) -> None:
        began = time.perf_counter()
        try:
            original(self)
        finally:
            loads.append(time.perf_counter() - began)

    StepAttempt.load = load  # type: ignore[method-assign]
    try:
        yield loads
    finally:
        StepAttempt.load = original  # type: ignore[method-assign]


def drive(engine: Engine, pipeline: str, params: dict[str, Any]) -> DrivenRun:
    """Start a run and deliver its messages one at a time until none are left."""
    assert isinstance(engine.publisher, MemoryPublisher)
    run_id = f"l-{uuid.uuid4().hex[:12]}"
    start_run(engine, StartMessage(pipeline=pipeline, params=params, run_id=run_id))
    deliveries = []
    stats = engine.store.stats
    with timed_loads() as loads:
        while engine.publisher.messages:
            message = parse_step(engine.publisher.messages.pop(0).data)
            read, written, count = stats.bytes_read, stats.bytes_written, len(loads)
            outcome = handle_step(engine, message)
            if not outcome.ack:
                raise RuntimeError(f"step {message.step} not acked: {outcome.reason}")
            deliveries.append(
                Delivery(
                    message.step,
                    loads[-1] if len(loads) > count else float("nan"),
                    stats.bytes_read - read,
                    stats.bytes_written - written,
                )
            )
    state = engine.runs.get(engine.doc_id("default", pipeline, run_id))
    if state is None or state.status != "completed":
        raise RuntimeError(f"run {run_id} of {pipeline} did not complete")
    return DrivenRun(state, deliveries)


# -- the 50-step chain -----------------------------------------------------------------------


def _small_step(index: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def run(context: dict[str, Any]) -> dict[str, Any]:
        return {f"s{index:02d}": {"index": index, "seed": int(context.get("seed", 0)) + index}}

    run.__name__ = f"s{index:02d}"
    return run


def chain_pipeline(length: int) -> Pipeline:
    steps = {f"s{i:02d}": _small_step(i) for i in range(1, length + 1)}
    return Pipeline(f"chain{length}", steps, cleanup_on_success=False)  # loaded again after


def load_input(engine: Engine, state: RunState, pipeline: Pipeline, step: str) -> float:
    """What ``StepAttempt.load`` does for ``step`` (a new delivery: new ``RunFiles``), timed."""
    began = time.perf_counter()
    files = engine.files(state)
    files.decode_lazily(files.input_entries(state, pipeline.spec, step))
    return time.perf_counter() - began


def measure_chain(
    settings: Settings, *, length: int = 50, runs: int = 3, samples: int = 30
) -> dict[str, Any]:
    """Loads of step 2 and step ``length``: in real deliveries of ``runs`` runs, and
    ``samples`` more of each, alternated, from the last run's committed state."""
    pipeline = chain_pipeline(length)
    engine = local_engine(settings, pipeline)
    drive(engine, pipeline.pipeline_name, {"seed": 0})  # warm: clients, connections
    last = f"s{length:02d}"
    delivered: dict[str, list[float]] = {"s02": [], last: []}
    for _ in range(runs):
        run = drive(engine, pipeline.pipeline_name, {"seed": 1})
        for step in delivered:
            delivered[step].append(run.by_step()[step].load_s)
    repeated: dict[str, list[float]] = {"s02": [], last: []}
    for _ in range(samples):
        for step in repeated:
            repeated[step].append(load_input(engine, run.state, pipeline, step))
    step2 = statistics.median(delivered["s02"] + repeated["s02"])
    step_n = statistics.median(delivered[last] + repeated[last])
    return {
        "length": length,
        "runs": runs,
        "samples": runs + samples,
        "load_step2_ms": 1000 * step2,
        f"load_step{length}_ms": 1000 * step_n,
        "ratio": step_n / step2,
        "delivered_ms": {k: [1000 * v for v in vs] for k, vs in delivered.items()},
    }


# -- W5 --------------------------------------------------------------------------------------


def _chunk(seed: int, index: int) -> np.ndarray:
    data = np.random.default_rng([seed, index]).bytes(CHUNK_MB * 1024 * 1024)
    return np.frombuffer(data, dtype=np.uint8)


def w5_pipeline(size_mb: int) -> tuple[Pipeline, int, int]:
    """The W5 pipeline; returns it, the number of chunks, and how many each step replaces.
    Every chunk is drawn before the run, so that the steps' compute is nil."""
    chunks = max(1, size_mb // CHUNK_MB)
    changed = max(1, round(chunks * W5_CHANGE))
    initial = {f"c{i:04d}": _chunk(1, i) for i in range(chunks)}
    replacements = {
        step: {
            f"c{((step - 2) * changed + j) % chunks:04d}": _chunk(step, j) for j in range(changed)
        }
        for step in range(2, W5_STEPS + 1)
    }

    def build(context: dict[str, Any]) -> dict[str, Any]:
        return dict(initial)

    def change(step: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def run(context: dict[str, Any]) -> dict[str, Any]:
            return dict(replacements[step])

        run.__name__ = f"change_{step}"
        return run

    steps: dict[str, Any] = {"w5_01": build}
    for step in range(2, W5_STEPS + 1):
        steps[f"w5_{step:02d}"] = change(step)
    return Pipeline("w5", steps), chunks, changed


def raw_transfer(engine: Engine, chunks: int) -> dict[str, float]:
    """The changed bytes written (create-only) and read back with the plain store client."""
    data = [_chunk(99, i) for i in range(chunks)]
    names = [f"bench-transfer/{uuid.uuid4().hex}" for _ in data]
    began = time.perf_counter()
    for name, chunk in zip(names, data, strict=True):
        engine.store.write(name, memoryview(chunk), if_generation_match=0)
    wrote = time.perf_counter() - began
    began = time.perf_counter()
    for name in names:
        engine.store.read_buffer(name)
    read = time.perf_counter() - began
    for name in names:
        engine.store.delete(name)
    return {"write_s": wrote, "read_s": read}


def measure_w5(settings: Settings, *, size_mb: int) -> dict[str, Any]:
    pipeline, chunks, changed = w5_pipeline(size_mb)
    engine = local_engine(settings, pipeline)
    transfer = [raw_transfer(engine, changed) for _ in range(3)]
    run = drive(engine, "w5", {})
    transfer += [raw_transfer(engine, changed) for _ in range(2)]
    steps = [run.state.steps[name] for name in pipeline.spec.order]
    per_step = []
    for index, (name, delivery) in enumerate(zip(pipeline.spec.order, run.deliveries, strict=True)):
        record = steps[index]
        following = steps[index + 1] if index + 1 < len(steps) else None
        per_step.append(
            {
                "step": name,
                "bytes_read": delivery.bytes_read,
                "bytes_written": delivery.bytes_written,
                "load_ms": 1000 * delivery.load_s,
                "step_ms": 1000 * ((record.finished_at or 0) - (record.started_at or 0)),
                "hop_ms": (
                    1000 * (following.started_at - record.finished_at)
                    if following and following.started_at and record.finished_at
                    else None
                ),
                "cycle_ms": (
                    1000 * (following.started_at - record.started_at)
                    if following and following.started_at and record.started_at
                    else None
                ),
            }
        )
    changed_bytes = changed * CHUNK_MB * 1024 * 1024
    write_s = statistics.median(t["write_s"] for t in transfer)
    read_s = statistics.median(t["read_s"] for t in transfer)
    return {
        "size_mb": chunks * CHUNK_MB,
        "chunks": chunks,
        "changed_per_step": changed,
        "changed_bytes": changed_bytes,
        "transfer_write_ms": 1000 * write_s,
        "transfer_read_ms": 1000 * read_s,
        "steps": per_step,
    }
