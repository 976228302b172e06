"""The deployed entry points, plus wall-clock marks around each stage of the step protocol.

``w2_w3_serverless.py --profile`` deploys this file instead of ``functions/main.py``. Every
delivery of a step message appends one JSON line to
``$RESUMABLE_BENCH_TIMINGS/{pid}.jsonl``: when the function was entered, when each stage of
``resumable.serverless._worker.handle_step`` started and ended (claim, load, write, commit, publish,
finish), the message's Pub/Sub ``publishTime``, and when the function returned. Marks are
``time.time()`` values, comparable across the processes of one machine. The protocol
itself is unchanged: the stage functions are wrapped, not replaced.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import functions_framework
import orjson
from cloudevents.http import CloudEvent

from resumable.serverless import entrypoints as entrypoints
from resumable.serverless._engine import Engine
from resumable.serverless._run_files import RunFiles
from resumable.serverless._worker import StepAttempt
from resumable.serverless.entrypoints import dead_letter, start_run, watchdog

F = TypeVar("F", bound=Callable[..., Any])

_OUT = Path(os.environ.get("RESUMABLE_BENCH_TIMINGS", "/nonexistent"))
_local = threading.local()
_write_lock = threading.Lock()


def _mark(name: str) -> None:
    record = getattr(_local, "record", None)
    if record is not None and name not in record:  # the first occurrence per delivery
        record[name] = time.time()


def _timed(function: F, stage: str) -> F:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _mark(f"{stage}_start")
        try:
            return function(*args, **kwargs)
        finally:
            _mark(f"{stage}_end")

    return wrapper  # type: ignore[return-value]


StepAttempt.claim = _timed(StepAttempt.claim, "claim")  # type: ignore[method-assign]
StepAttempt.load = _timed(StepAttempt.load, "load")  # type: ignore[method-assign]
StepAttempt.commit = _timed(StepAttempt.commit, "commit")  # type: ignore[method-assign]
StepAttempt.finish_run = _timed(StepAttempt.finish_run, "finish")  # type: ignore[method-assign]
RunFiles.write_step_output = _timed(RunFiles.write_step_output, "write")  # type: ignore[method-assign]
Engine.publish_steps = _timed(Engine.publish_steps, "publish")  # type: ignore[method-assign]


@functions_framework.cloud_event
def run_step(event: CloudEvent) -> None:
    """``resumable.serverless.entrypoints.run_step``, timed."""
    data = event.get_data()
    message = data.get("message", {}) if isinstance(data, dict) else {}
    attributes = message.get("attributes") or {}
    record: dict[str, Any] = {
        "entry": time.time(),
        "pid": os.getpid(),
        "run_id": attributes.get("run_id"),
        "step": attributes.get("step"),
        "publish_time": message.get("publishTime") or message.get("publish_time"),
    }
    _local.record = record
    try:
        entrypoints.run_step(event)
        record["ack"] = True
    except Exception:
        record["ack"] = False
        raise
    finally:
        record["exit"] = time.time()
        _local.record = None
        line = orjson.dumps(record) + b"\n"
        with _write_lock, open(_OUT / f"{os.getpid()}.jsonl", "ab") as out:
            out.write(line)


__all__ = ["dead_letter", "run_step", "start_run", "watchdog"]
