"""The soak's pipeline: a fan-out of three branches and a join.

    source ─┬─ scan (loops over frames, saves progress after each, checks should_stop)
            ├─ histogram (an output large enough to be a content-addressed blob)
            ├─ checks (raises NonRetryableError when the params ask it to fail)
            └───────────── join (needs all three)

Every step is deterministic — its output is a function of its input and, for ``scan``,
of how far it had got — so any correct schedule of crashes, duplicates, cancels and
resumes ends with the context of an uninterrupted in-process run (:func:`reference`).

The function processes pause ``$SOAK_ITEM_SECONDS`` per frame of ``scan`` (and once in
the other steps) so that kills land mid-step; the pause is read from the environment, not
the params, so that the in-process reference runs at full speed with the same params.
``$SOAK_GATE`` (when set) names a file: while it exists, ``scan`` holds before returning,
so that no run can end before the killer has made its kills however slow the machine is
(the soak removes it once the killer is done). ``$SOAK_LOG_DIR`` (when set) receives
one line per step execution: which run, step and frame it started from, so the soak can
count resumptions from saved progress.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from resumable import NonRetryableError, Pipeline, RetryableError

PIPELINE_NAME = "soak"
FAILURE = "checks: the params ask this run to fail"
EXECUTIONS = "executions.log"


def _pause(scale: float = 1.0) -> None:
    seconds = float(os.environ.get("SOAK_ITEM_SECONDS") or 0) * scale
    if seconds:
        time.sleep(seconds)


def _executed(context: dict[str, Any], step: str, start: int = 0) -> None:
    folder = os.environ.get("SOAK_LOG_DIR")
    if folder:
        # One short append per line: atomic for concurrent writers from several processes.
        line = f"{context['run']} {step} {start} {os.getpid()}\n"
        with open(Path(folder) / EXECUTIONS, "a") as log:
            log.write(line)


def source(context: dict[str, Any]) -> dict[str, Any]:
    _executed(context, "source")
    _pause()
    rng = np.random.default_rng(int(context["seed"]))
    return {"frames": rng.integers(0, 256, (int(context["items"]), 24, 32), dtype=np.uint8)}


def scan(context: dict[str, Any], save_progress: Any, should_stop: Any) -> dict[str, Any]:
    frames = context["frames"]
    done = int(context.get("scan_done", 0))
    sums = list(context.get("scan_sums", []))
    _executed(context, "scan", done)
    for item in range(done, len(frames)):
        if should_stop():  # cancelled (or the lease was lost): resume from here later
            raise RetryableError(f"scan: stopped at frame {item}")
        _pause()
        digest = hashlib.sha256(frames[item].tobytes()).hexdigest()[:8]
        sums.append(int(digest, 16))
        save_progress({"scan_done": item + 1, "scan_sums": sums})
    _hold(should_stop)
    return {"scan_total": sum(sums)}


def _hold(should_stop: Any) -> None:
    """Wait while the soak's gate file exists (see the module's docstring)."""
    gate = os.environ.get("SOAK_GATE")
    while gate and Path(gate).exists():
        if should_stop():
            raise RetryableError("scan: stopped while the soak held it")
        time.sleep(0.1)


def histogram(context: dict[str, Any]) -> dict[str, Any]:
    _executed(context, "histogram")
    _pause()
    frames = context["frames"]
    return {
        "histogram": np.bincount(frames.ravel(), minlength=256).astype(np.int64),
        # Over the 64 KiB threshold: stored as a blob, not inline in the manifest.
        "normalized": (frames.astype(np.float32) / 255.0),
    }


def checks(context: dict[str, Any]) -> dict[str, Any]:
    _executed(context, "checks")
    _pause()
    if context.get("fail"):
        raise NonRetryableError(FAILURE)
    frames = context["frames"]
    return {"checked": {"frames": len(frames), "brightest": int(frames.max())}}


def join(context: dict[str, Any]) -> dict[str, Any]:
    _executed(context, "join")
    _pause()
    summary = hashlib.sha256()
    summary.update(context["histogram"].tobytes())
    summary.update(str(context["scan_total"]).encode())
    summary.update(repr(sorted(context["checked"].items())).encode())
    return {"summary": summary.hexdigest()}


STEPS: dict[str, Any] = {
    "source": {"function": source, "retries": 2},
    "scan": {"function": scan, "dependencies": ["source"], "retries": 2},
    "histogram": {"function": histogram, "dependencies": ["source"], "retries": 2},
    "checks": {"function": checks, "dependencies": ["source"], "retries": 2},
    "join": {"function": join, "dependencies": ["scan", "histogram", "checks"], "retries": 2},
}


def build(storage: Any = "memory://soak") -> Pipeline:
    """The pipeline; serverless runs keep their checkpoints, so that the soak can read
    every completed run's final context."""
    return Pipeline(PIPELINE_NAME, STEPS, storage=storage, cleanup_on_success=False)


soak = build()


def params(run_id: str, index: int, *, fail: bool) -> dict[str, Any]:
    """The params of the soak's run number ``index``."""
    values: dict[str, Any] = {"run": run_id, "seed": index, "items": 6 + index % 7}
    if fail:
        values["fail"] = True
    return values


def reference(run_params: dict[str, Any]) -> dict[str, Any]:
    """The final context of an uninterrupted in-process run with these params."""
    result = build().run(dict(run_params))
    if result["status"] != "completed":
        raise AssertionError(f"the in-process reference run failed: {result['errors']}")
    return dict(result["context"])
