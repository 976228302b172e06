"""Workload W1 of bench-workloads.md: video data-prep, 10 steps, numpy context.

Deterministic from a seed: step ``i`` draws from ``default_rng([seed, i])``, so a resumed
run produces the same context as an uninterrupted one. Step compute is trivial (random
fill, slicing), so what a benchmark measures is the cost of checkpointing.

Every step returns only the keys it adds or replaces; the caller merges them into the
context. This module depends on numpy only: the peers' drivers import it from their own
virtual environment.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Context = dict[str, Any]
Step = Callable[[Context], Context]

CRASH_EXIT_CODE = 75
CRASH_ENV = "W1_CRASH_AT"
CRASH_STEP = "write_manifest"  # step 8


@dataclass(frozen=True)
class W1Config:
    """W1's sizes; ``scaled`` shrinks the frame and crop data for slow methods."""

    seed: int = 20240601
    frames: int = 24
    frame_rows: int = 360
    frame_cols: int = 640
    detections_per_frame: int = 20
    tracks: int = 50
    crops_per_track: int = 10
    crop_shape: tuple[int, int, int] = (96, 48, 3)
    scale_label: str = "1/1"

    @classmethod
    def scaled(cls, denominator: int) -> W1Config:
        """1/``denominator`` of the frame data (rows per frame) and of the crops (tracks)."""
        full = cls()
        if denominator == 1:
            return full
        return cls(
            frame_rows=max(1, full.frame_rows // denominator),
            tracks=max(1, full.tracks // denominator),
            scale_label=f"1/{denominator}",
        )

    def describe(self) -> str:
        rows, cols = self.frame_rows, self.frame_cols
        h, w, c = self.crop_shape
        return (
            f"{self.frames} frames {rows}x{cols}x3, {self.tracks} tracks x "
            f"{self.crops_per_track} crops {h}x{w}x{c}"
        )


def initial_context(config: W1Config) -> Context:
    return {"video_path": "/data/videos/w1-sample.mp4", "video_guid": f"w1-{config.seed}"}


def _rng(config: W1Config, step_index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, step_index])


def _track_ids(config: W1Config) -> list[str]:
    return [f"track_{t:03d}" for t in range(config.tracks)]


def make_steps(config: W1Config) -> list[tuple[str, Step]]:
    """The 10 steps of W1, in order, bound to ``config``."""

    def extract_frames(context: Context) -> Context:
        rng = _rng(config, 1)
        shape = (config.frame_rows, config.frame_cols, 3)
        frames = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(config.frames)]
        meta = [
            {
                "index": i,
                "pts": i * 1001,
                "time_s": round(i / 29.97, 6),
                "width": config.frame_cols,
                "height": config.frame_rows,
                "keyframe": i % 12 == 0,
            }
            for i in range(config.frames)
        ]
        return {"frames_data": frames, "frame_meta": meta}

    def detect(context: Context) -> Context:
        rng = _rng(config, 2)
        n = config.detections_per_frame
        scale = np.array(
            [config.frame_cols, config.frame_rows, config.frame_cols, config.frame_rows],
            dtype=np.float32,
        )
        detections = [
            {
                "frame": i,
                "boxes": rng.random((n, 4), dtype=np.float32) * scale,
                "confidences": rng.random(n, dtype=np.float32),
            }
            for i in range(len(context["frames_data"]))
        ]
        return {"detections": detections}

    def crop(context: Context) -> Context:
        rng = _rng(config, 3)
        crops = {
            track: [
                rng.integers(0, 256, config.crop_shape, dtype=np.uint8)
                for _ in range(config.crops_per_track)
            ]
            for track in _track_ids(config)
        }
        return {"crops_in_memory": crops}

    def remove_background(context: Context) -> Context:
        rng = _rng(config, 4)
        modified = {
            track: [rng.integers(0, 256, c.shape, dtype=np.uint8) for c in crops]
            for track, crops in context["crops_in_memory"].items()
        }
        return {"modified_crops_in_memory": modified}

    def augment(context: Context) -> Context:
        augmented = {
            track: [np.ascontiguousarray(c[:, ::-1]) for c in crops]  # horizontal flip
            for track, crops in context["modified_crops_in_memory"].items()
        }
        return {"augmented_crops_in_memory": augmented}

    def split(context: Context) -> Context:
        rng = _rng(config, 6)
        ids = [
            f"{track}/{k}"
            for track, crops in context["augmented_crops_in_memory"].items()
            for k in range(len(crops))
        ]
        order = rng.permutation(len(ids))
        cut = int(len(ids) * 0.8)
        return {
            "train_ids": [ids[i] for i in order[:cut]],
            "val_ids": [ids[i] for i in order[cut:]],
        }

    def stats(context: Context) -> Context:
        first = context["frames_data"][0]
        return {
            "stats": {
                "frame_mean": float(first.mean()),
                "frame_std": float(first[:8].std()),
                "train_fraction": len(context["train_ids"])
                / (len(context["train_ids"]) + len(context["val_ids"])),
                "detections_per_frame": float(config.detections_per_frame),
            }
        }

    def write_manifest(context: Context) -> Context:
        return {
            "dataset_manifest": {
                "video_guid": context["video_guid"],
                "train_count": len(context["train_ids"]),
                "val_count": len(context["val_ids"]),
                "location": "/data/datasets/w1/",
            }
        }

    def validate(context: Context) -> Context:
        manifest = context["dataset_manifest"]
        total = manifest["train_count"] + manifest["val_count"]
        return {"validation": {"ok": total > 0, "checked": total, "errors": 0}}

    def finalize(context: Context) -> Context:
        return {"final": {"status": "done", "video_guid": context["video_guid"]}}

    return [
        ("extract_frames", extract_frames),
        ("detect", detect),
        ("crop", crop),
        ("remove_background", remove_background),
        ("augment", augment),
        ("split", split),
        ("stats", stats),
        ("write_manifest", write_manifest),
        ("validate", validate),
        ("finalize", finalize),
    ]


def crash_if_requested(step_name: str) -> None:
    """Kill this process like a crash (no cleanup, no flush) if ``$W1_CRASH_AT`` names the step."""
    if os.environ.get(CRASH_ENV) == step_name:
        os._exit(CRASH_EXIT_CODE)


def run_steps(config: W1Config) -> Context:
    """Floor A: the steps alone, merging each step's output into the context."""
    context = initial_context(config)
    for _name, step in make_steps(config):
        context.update(step(context))
    return context


def array_bytes(value: Any) -> int:
    """Total ``nbytes`` of the numpy arrays inside ``value``."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, Mapping):
        return sum(array_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(array_bytes(v) for v in value)
    return 0


def context_digest(context: Mapping[str, Any]) -> str:
    """A hash of the context's exact content (arrays: dtype, shape and bytes)."""
    hasher = hashlib.blake2b(digest_size=16)

    def feed(value: Any) -> None:
        if isinstance(value, np.ndarray):
            hasher.update(f"nd:{value.dtype.str}:{value.shape}:".encode())
            hasher.update(np.ascontiguousarray(value).data)
        elif isinstance(value, Mapping):
            hasher.update(f"map:{len(value)}:".encode())
            for key in sorted(value):
                hasher.update(json.dumps(key).encode())
                feed(value[key])
        elif isinstance(value, list | tuple):
            hasher.update(f"seq:{len(value)}:".encode())
            for item in value:
                feed(item)
        else:
            hasher.update(f"{type(value).__name__}:{json.dumps(value)}".encode())

    feed(context)
    return hasher.hexdigest()
