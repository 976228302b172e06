"""Real checkpoints to damage: an in-process run and a serverless run, written once per
session by the library itself, over a context that exercises every part of the format
(inline values, segments with parts, large blobs, compressed and raw, every tag)."""

from __future__ import annotations

import datetime as dt
import functools
import math
import uuid
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from resumable import Pipeline
from resumable.serverless._engine import Engine
from resumable.serverless._messages import StepMessage
from resumable.storage import MemoryStore
from tests.serverless_fakes import drain, make_engine, start, take_messages

PIPELINE = "fuzz"
RUN_ID = "r1"
PREFIX = f"runs/default/{PIPELINE}/{RUN_ID}/"
LATEST = PREFIX + ".checkpoint.json"


def context() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    record = np.zeros(3, dtype=[("id", "<u4"), ("box", ">f8", (2,)), ("name", "S4")])
    return {
        "noise": rng.integers(0, 255, 80_000, dtype=np.uint8),  # a large raw blob
        "zeros": np.zeros((64, 300), dtype=np.float32),  # a large compressed blob
        "grid": np.asfortranarray(rng.normal(size=(8, 9))),  # a segment part, F order
        "record": record,
        "times": np.array(["2026-01-01", "NaT"], dtype="datetime64[D]"),
        "tiny": b"\x00\xff",
        "medium": bytes(range(256)) * 4,
        "mixed": {
            (1, "a"): frozenset({1, 2}),
            "when": dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris")),
            "at": dt.time(12, 30, fold=1),
            "span": dt.timedelta(days=-1, microseconds=5),
            "id": uuid.UUID(int=5),
            "price": Decimal("-0.00100"),
            "path": PurePosixPath("a/b"),
            "nan": complex(-math.nan, math.inf),
            "big": -(7**40),
            "scalar": np.float16(1.5),
        },
        "plain": {"n": 3, "xs": [1.5, None, True, "s"]},
    }


def _pipeline(store: MemoryStore, **options: Any) -> Pipeline:
    steps = {
        "load": lambda c: context(),
        "touch": lambda c: {"touched": True},
        "last": lambda c: {"total": len(c)},
    }
    return Pipeline(PIPELINE, steps, storage=store, run_id=RUN_ID, **options)


@functools.cache
def inprocess_objects() -> dict[str, bytes]:
    """The objects of a completed in-process run whose checkpoint was kept."""
    store = MemoryStore()
    assert _pipeline(store, cleanup_on_success=False).run()["status"] == "completed"
    return {name: store.read(name) for name in store.list()}


def store_of(objects: dict[str, bytes]) -> MemoryStore:
    store = MemoryStore()
    for name, data in objects.items():
        store.write(name, data)
    return store


def resumable_pipeline(store: MemoryStore, **options: Any) -> Pipeline:
    """The pipeline that wrote :func:`inprocess_objects`, to load or resume them."""
    return _pipeline(store, **options)


def serverless_pipeline() -> Pipeline:
    steps = {
        "load": lambda c: context(),
        "touch": lambda c: {"touched": True, "plain": {**c["plain"], "n": 4}},
        "last": lambda c: {"total": len(c)},
    }
    return Pipeline(
        PIPELINE + "-sl", steps, storage="memory://fuzz-serverless", cleanup_on_success=False
    )


def serverless_run_before_last_step() -> tuple[Engine, StepMessage]:
    """An engine whose run has committed ``load`` and ``touch``; ``last``'s message is
    published. Returns ``(engine, message for last)``."""
    engine = make_engine(serverless_pipeline())
    start(engine, PIPELINE + "-sl", {"seed": 1, "when": dt.date(2026, 1, 1)}, run_id=RUN_ID)
    drain(engine, limit=2)
    (message,) = take_messages(engine)
    assert message.step == "last"
    return engine, message
