"""Pipelines the serverless integration tests deploy on the local stack.

Faults are chosen per run through the params, so one deployment serves every test:
``{"workdir": DIR, "faults": {"b": {"hang_first": true, "retryable_failures": 2,
"nonretryable": true, "always_retryable": true, "sleep": 1.0,
"wait_first_for": PATH, "wait_for": PATH}}}`` (``wait_*`` hold the step until the test
creates PATH). Every call appends
the step's name to ``DIR/calls.log`` and creates ``DIR/started-{step}``, so a test can
count calls across function processes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from resumable import NonRetryableError, Pipeline, RetryableError


def _append(path: Path, line: str) -> int:
    with open(path, "a+") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
        f.seek(0)
        return sum(1 for existing in f.read().split() if existing == line)


def _wait_for_file(path: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def faulty_step(name: str) -> Any:
    def run(context: dict[str, Any]) -> dict[str, Any]:
        workdir = Path(context["workdir"])
        calls = _append(workdir / "calls.log", name)
        (workdir / f"started-{name}").touch()
        faults = context.get("faults", {}).get(name, {})
        if faults.get("hang_first") and calls == 1:
            time.sleep(300)  # the test kills this process
        if faults.get("wait_first_for") and calls == 1:
            _wait_for_file(Path(faults["wait_first_for"]))
        if faults.get("wait_for"):
            _wait_for_file(Path(faults["wait_for"]))
        if faults.get("sleep"):
            time.sleep(float(faults["sleep"]))
        if calls <= int(faults.get("retryable_failures", 0)):
            raise RetryableError(f"{name}: transient failure {calls}")
        if faults.get("always_retryable"):
            raise RetryableError(f"{name}: still failing ({calls})")
        if faults.get("nonretryable"):
            raise NonRetryableError(f"{name}: the input is invalid")
        rng = np.random.default_rng(len(name))
        return {name: rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)}

    run.__name__ = name
    return run


faulty = Pipeline(
    "faulty",
    {
        "a": {"function": faulty_step("a"), "retries": 3},
        "b": {"function": faulty_step("b"), "retries": 3},
        "c": {"function": faulty_step("c"), "retries": 3},
    },
    cleanup_on_success=False,
)

diamond = Pipeline(
    "diamond",
    {
        "root": {"function": faulty_step("root")},
        "left": {"function": faulty_step("left"), "dependencies": ["root"]},
        "right": {"function": faulty_step("right"), "dependencies": ["root"]},
        "join": {"function": faulty_step("join"), "dependencies": ["left", "right"]},
    },
    cleanup_on_success=False,
)

# A step whose deliveries the tests make fail before it is claimed: its message exhausts
# its delivery attempts, and the dead-letter handler ends the run.
exhaust = Pipeline("exhaust", {"x": {"function": faulty_step("x")}}, cleanup_on_success=False)


# -- map steps ---------------------------------------------------------------------------
# Every item call appends the item's name to ``DIR/items.log``. ``mapped`` maps over the
# objects under a prefix of the stack's bucket; an item fails for good while
# ``DIR/broken-{name}`` exists. ``mapkill`` maps over ``params["items"]``; its
# ``params["victim"]`` item hangs on its first call (the test kills its process).

MAP_BUCKET = "resumable-stack"
MAP_PREFIX = "map-objects/"


def map_object(url: str, context: dict[str, Any]) -> dict[str, Any]:
    import hashlib

    from resumable.storage import open_store

    workdir = Path(context["workdir"])
    name = url.rsplit("/", 1)[1]
    _append(workdir / "items.log", name)
    if (workdir / f"broken-{name}").exists():
        raise NonRetryableError(f"{name} is broken")
    data = open_store(f"gs://{MAP_BUCKET}").read(MAP_PREFIX + name)
    return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def summarize(context: dict[str, Any]) -> dict[str, Any]:
    return {"summary": sum(r["bytes"] for r in context["objects"] if r is not None)}


mapped = Pipeline(
    "mapped",
    {
        "objects": {
            "function": map_object,
            "map": f"gs://{MAP_BUCKET}/{MAP_PREFIX}*.txt",
            "concurrency": 20,
            "retries": 3,
        },
        "summary": {"function": summarize, "dependencies": ["objects"]},
    },
    cleanup_on_success=False,
)


def slow_item(item: int, context: dict[str, Any]) -> int:
    workdir = Path(context["workdir"])
    calls = _append(workdir / "items.log", str(item))
    if item == context["victim"] and calls == 1:
        (workdir / "started-victim").touch()
        time.sleep(300)  # the test kills this process
    return item * 10


mapkill = Pipeline(
    "mapkill",
    {"work": {"function": slow_item, "map": "items", "retries": 3}},
    cleanup_on_success=False,
)
