"""The W4 pipeline: ``list`` makes ``params["items"]`` items, ``m`` maps over them.

An item's function does no work of its own: it returns an 8 KB array (above the 4 KB
inline limit, so each result is one object written to Cloud Storage, as real results
are), so that W4 measures the cost of an item — its message, its documents, its output —
not compute. Every ``params["fail_every"]``-th item fails once (retryably) and then
succeeds: the first call leaves a marker in ``params["workdir"]``. Every call appends the
item to ``workdir/calls.log``, so the benchmark can count lost and doubled items.
Load it as ``benchmarks.map_pipeline:build`` (from the repository root).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from resumable import Pipeline, RetryableError

PIPELINE_NAME = "bench_map"
RESULT_BYTES = 8192


def make_items(context: dict[str, Any]) -> dict[str, Any]:
    return {"items": list(range(int(context["items"])))}


def item_result(item: int) -> np.ndarray:
    return np.full(RESULT_BYTES, item % 251, dtype=np.uint8)


def process(item: int, context: Any) -> np.ndarray:
    workdir = Path(context["workdir"])
    with open(workdir / "calls.log", "a") as log:  # one short append: atomic
        log.write(f"{item}\n")
    every = int(context.get("fail_every", 0))
    if every and item % every == every // 2:
        marker = workdir / f"failed-once-{item}"
        if not marker.exists():
            marker.touch()
            raise RetryableError(f"item {item}: failing once, as planned")
    return item_result(item)


def build() -> Pipeline:
    return Pipeline(
        PIPELINE_NAME,
        {
            "list": {"function": make_items},
            "m": {
                "function": process,
                "dependencies": ["list"],
                "map": "items",
                "retries": 2,
                "concurrency": int(os.environ.get("BENCH_MAP_CONCURRENCY", "20")),
            },
        },
        cleanup_on_success=False,
    )
