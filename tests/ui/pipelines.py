"""The pipeline the UI tests run, in-process and on the local stack.

``gallery`` has seven steps with a diamond in the middle::

    fetch → decode → thumbs ─┐
                   → stats ──┴→ merge → render → publish

and outputs that exercise the checkpoint browser: an RGB ``uint8`` frame and a gray
poster (images), a float histogram, small JSON values. Faults come with the params, per
step, so one deployment serves every test: ``{"workdir": DIR, "faults": {"render":
{"gate": true, "fail_first": true, "fail": true}}}``:

- ``gate``: wait until the file ``DIR/open-{step}`` exists (a running step the test
  releases when it wants; two minutes at most);
- ``fail_first``: raise a non-retryable error the first time (``DIR/failed-{step}``
  remembers it), succeed afterwards — a failure a resume fixes;
- ``fail``: always raise a non-retryable error;
- ``sleep``: take this many seconds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from resumable import NonRetryableError, Pipeline

GATE_SECONDS = 120.0


def _faults(context: dict[str, Any], step: str) -> tuple[dict[str, Any], Path | None]:
    workdir = Path(context["workdir"]) if context.get("workdir") else None
    return dict(context.get("faults", {}).get(step, {})), workdir


def _obey(context: dict[str, Any], step: str) -> None:
    faults, workdir = _faults(context, step)
    time.sleep(float(faults.get("sleep", 0)))
    if faults.get("gate") and workdir is not None:
        deadline = time.monotonic() + GATE_SECONDS
        while not (workdir / f"open-{step}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    if faults.get("fail_first") and workdir is not None:
        marker = workdir / f"failed-{step}"
        if not marker.exists():
            marker.touch()
            raise NonRetryableError(f"{step}: the frame is corrupt (first try)")
    if faults.get("fail"):
        raise NonRetryableError(f"{step}: the frame is corrupt")


def fetch(context: dict[str, Any]) -> dict[str, Any]:
    _obey(context, "fetch")
    return {"source": "synthetic", "size": [48, 64]}


def decode(context: dict[str, Any]) -> dict[str, Any]:
    _obey(context, "decode")
    height, width = context["size"]
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    return {"frame": frame.astype(np.uint8)}


def thumbs(context: dict[str, Any]) -> dict[str, Any]:
    _obey(context, "thumbs")
    return {"thumb": np.ascontiguousarray(context["frame"][::2, ::2])}


def stats(context: dict[str, Any]) -> dict[str, Any]:
    _obey(context, "stats")
    histogram, _edges = np.histogram(context["frame"], bins=16, range=(0, 256))
    return {"histogram": histogram.astype(np.float32)}


def merge(context: dict[str, Any]) -> dict[str, Any]:
    _obey(context, "merge")
    return {
        "summary": {
            "peak_bin": int(np.argmax(context["histogram"])),
            "thumb_shape": list(context["thumb"].shape),
        }
    }


def render(context: dict[str, Any]) -> dict[str, Any]:
    _obey(context, "render")
    return {"poster": context["frame"].mean(axis=2).astype(np.uint8)}


def publish(context: dict[str, Any]) -> dict[str, Any]:
    _obey(context, "publish")
    return {"published": True}


STEPS: dict[str, dict[str, Any]] = {
    "fetch": {"function": fetch, "description": "find the source"},
    "decode": {"function": decode, "description": "decode a frame"},
    "thumbs": {"function": thumbs, "dependencies": ["decode"]},
    "stats": {"function": stats, "dependencies": ["decode"]},
    "merge": {"function": merge, "dependencies": ["thumbs", "stats"]},
    "render": {"function": render},
    "publish": {"function": publish},
}


def build(storage: str | None = None, run_id: str | None = None) -> Pipeline:
    """The pipeline; checkpoints are kept after success so the browser can show them."""
    return Pipeline("gallery", STEPS, storage=storage, run_id=run_id, cleanup_on_success=False)


gallery = build()
