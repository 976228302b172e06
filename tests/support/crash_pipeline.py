"""A pipeline run in a child process by the crash tests: they SIGKILL it mid-step.

Every step call appends a line to ``calls.log`` (fsynced), so the parent can count which
steps ran in which process. ``process_items`` saves its progress every 10 items and logs
each item it processes. A step signals that it has started by creating ``started-{step}``
and, when that step is the one to kill in, waits for the parent's SIGKILL.

Usage: python crash_pipeline.py STORAGE RUN_ID WORKDIR [--resume] [--hang-in STEP]
       [--hang-after-item N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from resumable import Pipeline

ITEMS = 100
PROGRESS_EVERY = 10


def _append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


class CrashPipeline(Pipeline):
    """Six steps over numpy data; deterministic, so runs can be compared exactly."""

    def __init__(
        self,
        storage: str,
        run_id: str,
        workdir: Path,
        hang_in: str | None,
        hang_after_item: int | None,
    ) -> None:
        self.workdir = workdir
        self.hang_in = hang_in
        self.hang_after_item = hang_after_item
        super().__init__(
            pipeline_name="crashy",
            step_definitions={
                "make_frames": {"function": self.make_frames},
                "detect": {"function": self.detect},
                "process_items": {"function": self.process_items},
                "crop": {"function": self.crop},
                "augment": {"function": self.augment},
                "summarize": {"function": self.summarize},
            },
            storage=storage,
            run_guid=run_id,
            cleanup_on_success=False,
        )

    def _enter(self, step: str) -> None:
        _append(self.workdir / "calls.log", step)
        (self.workdir / f"started-{step}").touch()
        if step == self.hang_in:
            time.sleep(600)  # the parent kills us here

    def make_frames(self, context: dict[str, Any]) -> dict[str, Any]:
        self._enter("make_frames")
        rng = np.random.default_rng(context["seed"])
        return {"frames": [rng.integers(0, 255, (72, 128, 3), dtype=np.uint8) for _ in range(8)]}

    def detect(self, context: dict[str, Any]) -> dict[str, Any]:
        self._enter("detect")
        boxes = [np.asarray(f.mean(axis=2) > 127, dtype=np.bool_) for f in context["frames"]]
        return {"masks": boxes, "scores": np.linspace(0, 1, 8, dtype=np.float32)}

    def process_items(self, context: dict[str, Any]) -> dict[str, Any]:
        self._enter("process_items")
        done = context.get("items_done", 0)
        totals = context.get("item_totals", [])
        for item in range(done + 1, ITEMS + 1):
            _append(self.workdir / "items.log", str(item))
            totals = [*totals, item * 2]
            if item == self.hang_after_item:
                time.sleep(600)
            if item % PROGRESS_EVERY == 0:
                context["items_done"] = item
                context["item_totals"] = totals
                self.save_checkpoint(context)
        return {"items_done": ITEMS, "item_totals": totals}

    def crop(self, context: dict[str, Any]) -> dict[str, Any]:
        self._enter("crop")
        return {"crops": {f"t{i}": f[10:40, 20:60].copy() for i, f in enumerate(context["frames"])}}

    def augment(self, context: dict[str, Any]) -> dict[str, Any]:
        self._enter("augment")
        return {
            "augmented": {
                k: np.flip(v, axis=1).astype(np.float64) / 255 for k, v in context["crops"].items()
            }
        }

    def summarize(self, context: dict[str, Any]) -> dict[str, Any]:
        self._enter("summarize")
        return {"summary": {"n": len(context["augmented"]), "total": sum(context["item_totals"])}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("storage")
    parser.add_argument("run_id")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--hang-in")
    parser.add_argument("--hang-after-item", type=int)
    args = parser.parse_args()
    pipeline = CrashPipeline(
        args.storage, args.run_id, args.workdir, args.hang_in, args.hang_after_item
    )
    result = pipeline.run({"seed": 7}, resume_from_checkpoint=args.resume)
    summary = {
        k: result[k]
        for k in ("status", "steps_completed", "steps_skipped", "errors", "resumed_from_checkpoint")
    }
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return 0 if result["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
