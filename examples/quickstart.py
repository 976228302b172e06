"""Quickstart: a small video data-prep pipeline over numpy arrays.

    synthesize → detect → crop → augment → split

``synthesize`` renders frames with a few bright blobs moving over noise, ``detect`` finds
the blobs frame by frame (saving its progress every few frames, so an interrupted run
continues where it was), ``crop`` cuts a patch around every detection, ``augment`` adds
flipped and rotated copies, and ``split`` divides the patches into train and validation
sets. Everything is deterministic for a given ``seed``.

Run it from the command line (Ctrl-C stops after the current step; add
``--run-id ID --resume`` to continue):

    resumable run examples/quickstart.py:QuickstartPipeline --param frames=40

or from Python:

    result = QuickstartPipeline(storage="/tmp/ckpt").run({"frames": 40})

Parameters (initial context, all optional): ``frames`` (40), ``size`` (64, pixels),
``seed`` (7), ``seconds_per_frame`` (0.05, stands in for a detector model's cost),
``progress_every`` (5 frames), ``patch`` (16, pixels), ``val_fraction`` (0.25).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from resumable import Pipeline

Context = dict[str, Any]


class QuickstartPipeline(Pipeline):
    """The five steps, as a ``Pipeline`` subclass like the original API's pipelines."""

    def __init__(self, storage: Any = None, run_guid: str | None = None, **options: Any) -> None:
        super().__init__(
            pipeline_name="quickstart",
            step_definitions={
                "synthesize": {
                    "function": self.synthesize,
                    "description": "render frames with moving bright blobs",
                },
                "detect": {
                    "function": self.detect,
                    "description": "find the blobs in every frame, saving progress as it goes",
                },
                "crop": {"function": self.crop, "description": "cut a patch around each blob"},
                "augment": {
                    "function": self.augment,
                    "description": "add flipped and rotated copies of each patch",
                },
                "split": {
                    "function": self.split,
                    "description": "shuffle the patches into train and validation sets",
                },
            },
            storage=storage,
            run_guid=run_guid,
            **options,
        )

    def synthesize(self, context: Context) -> Context:
        count, size = context.get("frames", 40), context.get("size", 64)
        rng = np.random.default_rng(context.get("seed", 7))
        frames = rng.normal(30.0, 8.0, size=(count, size, size))
        starts = rng.uniform(0, size, size=(3, 2))
        velocities = rng.uniform(-2.0, 2.0, size=(3, 2))
        yy, xx = np.mgrid[0:size, 0:size]
        for t in range(count):
            for (y0, x0), (vy, vx) in zip(starts, velocities, strict=True):
                cy, cx = (y0 + vy * t) % size, (x0 + vx * t) % size
                frames[t] += 200.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 12.5)
        return {"frames": np.clip(frames, 0, 255).astype(np.uint8)}

    def detect(self, context: Context, save_progress: Callable[..., bool]) -> Context:
        frames = context["frames"]
        every = context.get("progress_every", 5)
        # After an interruption the step runs again with the context it last saved, so
        # the frames it already handled are in "detections": start after them.
        detections: list[list[list[int]]] = list(context.get("detections", []))
        for index in range(len(detections), len(frames)):
            detections.append(find_blobs(frames[index]))
            time.sleep(context.get("seconds_per_frame", 0.05))
            if (index + 1) % every == 0 and index + 1 < len(frames):
                save_progress({**context, "detections": detections})
        return {"detections": detections}

    def crop(self, context: Context) -> Context:
        frames, patch = context["frames"], context.get("patch", 16)
        half = patch // 2
        # Edge padding keeps patches of blobs near the border full-sized.
        padded = np.pad(frames, ((0, 0), (half, half), (half, half)), mode="edge")
        origins = [[t, y, x] for t, blobs in enumerate(context["detections"]) for y, x in blobs]
        patches = [padded[t, y : y + patch, x : x + patch] for t, y, x in origins]
        return {
            "patches": np.stack(patches) if patches else np.zeros((0, patch, patch), np.uint8),
            "patch_origins": np.array(origins, dtype=np.int32).reshape(-1, 3),
        }

    def augment(self, context: Context) -> Context:
        patches = context["patches"].astype(np.float32) / 255.0
        copies = [patches, patches[:, :, ::-1], np.rot90(patches, k=1, axes=(1, 2))]
        # samples[i] comes from patch i % len(patches).
        return {"samples": np.ascontiguousarray(np.concatenate(copies))}

    def split(self, context: Context) -> Context:
        samples, count = context["samples"], len(context["patches"])
        rng = np.random.default_rng(context.get("seed", 7))
        # Split by source patch, so that copies of one patch never land on both sides.
        val_patches = rng.permutation(count)[: round(count * context.get("val_fraction", 0.25))]
        is_val = np.isin(np.arange(len(samples)) % max(count, 1), val_patches)
        return {
            "train": samples[~is_val],
            "val": samples[is_val],
            "summary": {
                "frames": len(context["frames"]),
                "blobs": count,
                "train_samples": int((~is_val).sum()),
                "val_samples": int(is_val.sum()),
            },
        }


def find_blobs(frame: np.ndarray, threshold: int = 128, radius: int = 5) -> list[list[int]]:
    """``[y, x]`` of each bright blob: the brightest pixel, then its neighbourhood erased."""
    work = frame.astype(np.int16)
    blobs = []
    while True:
        y, x = np.unravel_index(int(np.argmax(work)), work.shape)
        if work[y, x] < threshold:
            return blobs
        blobs.append([int(y), int(x)])
        work[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1] = 0


if __name__ == "__main__":
    outcome = QuickstartPipeline(storage="memory://quickstart").run({"seconds_per_frame": 0})
    print(outcome["status"], outcome["context"]["summary"])
