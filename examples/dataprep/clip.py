"""One clip's processing, free of the pipeline: plain functions of a clip's data.

Each step of :class:`~examples.dataprep.pipeline.DataPrepPipeline` reads its inputs from
the context, calls one function here and returns its result; :func:`process_clip` chains
the same functions for one clip in memory (no checkpoints), from a video path to its
augmented crops and their statistics. Nothing here depends on another clip, so a map step
over a folder of clips can call them per item.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from resumable import NonRetryableError

from . import dataset, vision
from .video import DecodedFrame, iter_frames, probe

Crops = dict[str, list[vision.Image]]
Records = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class Params:
    """The tunable parameters, read from the context (defaults below)."""

    frame_stride: int = 1  # keep every n-th decoded frame
    max_frames: int | None = None  # stop after keeping this many frames
    progress_every: int = 8  # extract_frames checkpoints after this many kept frames
    seed: int = 0  # augmentation and split
    diff_threshold: int = 30  # foreground: channel difference to the background above this
    min_area: int = 40  # smallest detection, in pixels
    iou_threshold: float = 0.3  # tracking: least overlap to continue a track
    max_gap: int = 2  # tracking: frames a track may go unseen
    crop_padding: int = 2  # pixels added around each box
    min_track_length: int = 3  # shorter tracks are dropped as noise
    augmentations: int = 2  # augmented copies per training crop
    val_fraction: float = 0.25  # share of tracks in the validation split
    image_format: str = "png"  # "png" or "npy"

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> Params:
        values = {f.name: context[f.name] for f in fields(cls) if context.get(f.name) is not None}
        try:
            params = cls(**values)
            params.validate()
        except (TypeError, ValueError) as exc:
            raise NonRetryableError(f"invalid parameter: {exc}") from None
        return params

    def validate(self) -> None:
        for name in ("frame_stride", "progress_every", "min_area", "min_track_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("seed", "diff_threshold", "max_gap", "crop_padding", "augmentations"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.max_frames is not None and (
            not isinstance(self.max_frames, int) or self.max_frames < 1
        ):
            raise ValueError(f"max_frames must be an integer >= 1, got {self.max_frames!r}")
        if not 0 <= self.iou_threshold <= 1 or not 0 <= self.val_fraction < 1:
            raise ValueError("iou_threshold must be in [0, 1] and val_fraction in [0, 1)")
        if self.image_format not in dataset.IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {dataset.IMAGE_FORMATS}")

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


DEFAULT_PARAMS: dict[str, Any] = Params().as_dict()


def track_name(number: int) -> str:
    return f"track_{number:03d}"


# -- the stages of one clip ---------------------------------------------------------------


def kept_frames(
    path: str | os.PathLike[str],
    params: Params,
    *,
    start: int = 0,
    kept: int = 0,
    decode: Callable[..., Iterator[DecodedFrame]] = iter_frames,
) -> Iterator[DecodedFrame]:
    """The frames to keep (every ``frame_stride``-th, up to ``max_frames`` in all),
    decoding from frame ``start`` when ``kept`` frames are kept already."""
    limit = params.max_frames or math.inf
    if kept >= limit:
        return
    for frame in decode(path, start=start, stride=params.frame_stride):
        yield frame
        kept += 1
        if kept >= limit:
            return


def detect_frames(
    frames: Sequence[vision.Image], params: Params
) -> tuple[vision.Image, list[vision.Boxes], list[Any]]:
    """The background (median frame) and every frame's detection boxes and scores."""
    background = vision.median_background(frames)
    boxes, scores = [], []
    for frame in frames:
        b, s = vision.detect_objects(
            frame, background, threshold=params.diff_threshold, min_area=params.min_area
        )
        boxes.append(b)
        scores.append(s)
    return background, boxes, scores


def track_crops(
    frames: Sequence[vision.Image],
    frame_meta: Sequence[Mapping[str, Any]],
    boxes: Sequence[Any],
    scores: Sequence[Any],
    params: Params,
) -> tuple[Crops, Records, dict[str, int]]:
    """Crops and their records per kept track (at least ``min_track_length`` long), and
    the statistics: ``frames``, ``detections``, ``tracks`` (all), ``tracks_kept`` and
    ``longest_track`` (in frames)."""
    ids = vision.track_ids(boxes, iou_threshold=params.iou_threshold, max_gap=params.max_gap)
    crops: Crops = {}
    records: Records = {}
    for position, frame in enumerate(frames):
        for j, number in enumerate(ids[position]):
            box = vision.crop_box(boxes[position][j], frame.shape, params.crop_padding)
            track = track_name(number)
            crops.setdefault(track, []).append(vision.crop(frame, box))
            records.setdefault(track, []).append(
                {
                    "frame": frame_meta[position]["index"],
                    "box": list(box),
                    "score": round(float(scores[position][j]), 4),
                }
            )
    keep = sorted(t for t in crops if len(crops[t]) >= params.min_track_length)
    stats = {
        "frames": len(frames),
        "detections": sum(len(b) for b in boxes),
        "tracks": len(crops),
        "tracks_kept": len(keep),
        "longest_track": max((len(c) for c in crops.values()), default=0),
    }
    return {t: crops[t] for t in keep}, {t: records[t] for t in keep}, stats


def clean_crops(
    crops: Mapping[str, Sequence[vision.Image]],
    records: Mapping[str, Sequence[Mapping[str, Any]]],
    background: vision.Image,
    params: Params,
) -> tuple[Crops, dict[str, str]]:
    """The crops with their background pixels zeroed, and each track's color label."""
    modified: Crops = {}
    labels: dict[str, str] = {}
    for track, images in crops.items():
        out = []
        for image, info in zip(images, records[track], strict=True):
            behind = vision.crop(background, tuple(info["box"]))
            out.append(vision.remove_background(image, behind, params.diff_threshold))
        modified[track] = out
        labels[track] = vision.majority([vision.color_label(image) for image in out])
    return modified, labels


def augment_crops(
    crops: Mapping[str, Sequence[vision.Image]], params: Params
) -> tuple[Crops, Records]:
    """``augmentations`` seeded variants of every crop, and what was done to each."""
    augmented: Crops = {}
    records: Records = {}
    for track, images in crops.items():
        rng = vision.track_rng(params.seed, track)
        out, done = [], []
        for source, image in enumerate(images):
            for variant in range(params.augmentations):
                variant_image, record = vision.augment(image, rng)
                out.append(variant_image)
                done.append({"source": source, "variant": variant, **record})
        augmented[track], records[track] = out, done
    return augmented, records


def split_tracks(tracks: Sequence[str], params: Params) -> tuple[list[str], list[str]]:
    """Disjoint sorted train and validation track ids, drawn by ``seed``."""
    tracks = sorted(tracks)
    order = np.random.default_rng(params.seed).permutation(len(tracks))
    n_val = 0
    if len(tracks) >= 2:
        n_val = min(len(tracks) - 1, max(1, round(len(tracks) * params.val_fraction)))
    val = sorted(tracks[int(i)] for i in order[:n_val])
    train = sorted(t for t in tracks if t not in val)
    return train, val


def dataset_warnings(stats: Mapping[str, int], files: int, params: Params) -> list[str]:
    """What a user must hear about a dataset of ``files`` images made with ``stats``
    (see :func:`track_crops`): an empty dataset and why, or an empty validation split."""
    frames, detections = stats.get("frames", 0), stats.get("detections", 0)
    tracks, kept = stats.get("tracks", 0), stats.get("tracks_kept", 0)
    warnings = []
    if frames and not detections:
        warnings.append(
            f"the dataset is empty: no moving object detected in {frames} frames "
            f"(diff_threshold={params.diff_threshold}, min_area={params.min_area}); the "
            "detector needs a static camera and objects that differ from the background"
        )
    elif detections and not kept:
        warnings.append(
            f"the dataset is empty: {detections} detections in {frames} frames made "
            f"{tracks} tracks, none of them min_track_length={params.min_track_length} "
            f"frames long (the longest: {stats.get('longest_track', 0)}); objects that move "
            "more than about half their size between kept frames break IoU tracking: "
            "lower frame_stride or iou_threshold"
        )
    elif not files:
        warnings.append(f"the dataset is empty ({frames} frames, {detections} detections)")
    elif kept == 1:
        warnings.append("only one track was found: the validation split is empty")
    return warnings


def process_clip(
    video_path: str | os.PathLike[str], params: Params | None = None
) -> dict[str, Any]:
    """One local clip, processed in memory up to its augmented crops.

    Returns what the steps from ``extract_frames`` to ``augment`` add to the context
    (the same keys and values), plus ``train_ids`` / ``val_ids``.
    """
    params = params or Params()
    decoded = list(kept_frames(video_path, params))
    if not decoded:
        raise NonRetryableError(f"no frames decoded from {os.fspath(video_path)!r}")
    frames = [frame.image for frame in decoded]
    meta = [{"index": f.index, "pts": f.pts, "time": f.time} for f in decoded]
    background, boxes, scores = detect_frames(frames, params)
    crops, records, stats = track_crops(frames, meta, boxes, scores, params)
    modified, labels = clean_crops(crops, records, background, params)
    augmented, augment_meta = augment_crops(modified, params)
    train, val = split_tracks(list(modified), params)
    return {
        "frames_data": frames,
        "frame_meta": meta,
        "frames_next_index": decoded[-1].index + 1,
        "video_info": probe(video_path).as_dict(),
        "background": background,
        "detection_boxes": boxes,
        "detection_scores": scores,
        "crops_in_memory": crops,
        "crop_meta": records,
        "crop_stats": stats,
        "modified_crops_in_memory": modified,
        "track_labels": labels,
        "augmented_crops_in_memory": augmented,
        "augment_meta": augment_meta,
        "train_ids": train,
        "val_ids": val,
    }
