"""Pipelines of the compatibility fixtures (``tests/fixtures/compat-0.1.0``).

The fixtures are checkpoints and run documents written by release 0.1.0 (commit f0d14c1)
of these exact pipelines, interrupted half way. Their step graph, versions and outputs
must never change: a later release must resume them and end with the context an
uninterrupted run gives (``tests/checkpoint/test_compat_fixtures.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np

from resumable import Pipeline, save_progress

ITEMS = 12
CRASH_AFTER = 7  # the fixture was written by a run killed after this item's progress save

calls: list[str] = []  # every step call, with the item it started from


class Killed(BaseException):
    """Raised by the fixture generator to stop a run as a SIGKILL would (no handler runs)."""


def load(context: dict[str, Any]) -> dict[str, Any]:
    calls.append("load")
    rng = np.random.default_rng(int(context["seed"]))
    return {
        "frames": rng.integers(0, 255, (6, 32, 48, 3), dtype=np.uint8),
        "meta": {"when": dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC), "price": Decimal("1.10")},
        "tags": ("a", "b"),
    }


def make_detect(kill_after: int | None = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def detect(context: dict[str, Any]) -> dict[str, Any]:
        found = list(context.get("found", []))
        calls.append(f"detect@{len(found)}")
        frames = context["frames"]
        for i in range(len(found), ITEMS):
            found.append(int(frames[i % len(frames)].sum()) + i)
            save_progress({**context, "found": found})
            if kill_after is not None and i + 1 == kill_after:
                raise Killed
        return {"found": found, "frames": frames[:, ::2, ::2].copy()}

    return detect


def report(context: dict[str, Any]) -> dict[str, Any]:
    calls.append("report")
    return {"total": sum(context["found"]), "shape": tuple(context["frames"].shape)}


def inprocess(storage: Any, run_id: str, *, kill_after: int | None = None) -> Pipeline:
    return Pipeline(
        "compat",
        {
            "load": {"function": load},
            "detect": {"function": make_detect(kill_after), "retries": 1},
            "report": {"function": report},
        },
        storage=storage,
        run_id=run_id,
        cleanup_on_success=False,
    )


def serverless(*, kill_after: int | None = None) -> Pipeline:
    """A diamond: ``load`` → (``detect``, ``side``) → ``report``; ``detect`` saves progress."""

    def side(context: dict[str, Any]) -> dict[str, Any]:
        calls.append("side")
        return {"side": np.asarray(context["frames"]).mean(axis=(1, 2, 3)).astype(np.float32)}

    def joined(context: dict[str, Any]) -> dict[str, Any]:
        out = report(context)
        out["side_sum"] = float(context["side"].sum())
        return out

    return Pipeline(
        "compatsl",
        {
            "load": {"function": load},
            "detect": {"function": make_detect(kill_after), "retries": 1},
            "side": {"function": side, "dependencies": ["load"]},
            "report": {"function": joined, "dependencies": ["detect", "side"]},
        },
        storage="memory://compat-unused",
        cleanup_on_success=False,
    )
