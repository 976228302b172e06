"""The W2/W3 pipeline: W1's ten steps with a tiny context (bench-workloads.md).

Each step adds one small JSON value, so that a serverless run measures the hops between
steps (messages, run-document updates, manifests), not checkpoint volume or compute.
Load it as ``benchmarks.tiny_pipeline:build`` (from the repository root).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resumable import Pipeline

PIPELINE_NAME = "tiny"
STEPS = (
    "extract_frames",
    "detect",
    "crop",
    "remove_background",
    "augment",
    "split",
    "stats",
    "write_manifest",
    "validate",
    "finalize",
)


def _step(index: int, name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def run(context: dict[str, Any]) -> dict[str, Any]:
        return {name: {"index": index, "seed": int(context.get("seed", 0)) + index}}

    run.__name__ = name
    run.__doc__ = f"W2 step {index + 1}: add a small dict under {name!r}."
    return run


def build() -> Pipeline:
    """The 10-step tiny pipeline (one step after the other)."""
    return Pipeline(
        PIPELINE_NAME,
        {name: {"function": _step(i, name), "retries": 2} for i, name in enumerate(STEPS)},
    )
