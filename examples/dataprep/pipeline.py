"""The video data-prep pipeline: frames → detections → crops → background removal →
augmentation → train/val split → dataset on storage.

Load it by reference (``examples.dataprep.pipeline:build`` or
``examples.dataprep.pipeline:DataPrepPipeline``) or construct it::

    pipeline = build("/tmp/store")
    result = pipeline.run({"video_path": "clip.mp4", "video_guid": "clip-1"})
    result["context"]["dataset"]  # {"url": ..., "file_count": ...}

Input context: ``video_path`` (a local file or ``gs://`` URL), ``video_guid`` (a safe id
naming the dataset), optionally ``output`` (a storage URL for the dataset; default: the
pipeline's storage) and the parameters in :data:`DEFAULT_PARAMS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from resumable import NonRetryableError, Pipeline, validate_id
from resumable.errors import InvalidIdError
from resumable.storage import ObjectStore, open_store

from . import dataset, vision
from .video import iter_frames, local_video, probe

PIPELINE_NAME = "dataprep"

SaveProgress = Callable[..., bool]
Context = dict[str, Any]


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


def _video_guid(context: Mapping[str, Any]) -> str:
    guid = context.get("video_guid")
    if guid is None or isinstance(guid, bool):
        raise NonRetryableError("the context needs a 'video_guid' (a safe id for the dataset)")
    try:
        return validate_id(str(guid), "video_guid")
    except InvalidIdError as exc:
        raise NonRetryableError(str(exc)) from None


def _track_name(number: int) -> str:
    return f"track_{number:03d}"


class DataPrepPipeline(Pipeline):
    """Turns a video into a dataset of background-free object crops, split by track.

    Construction arguments are :class:`resumable.Pipeline`'s; the dataset goes to the
    context's ``output`` URL, or else to this pipeline's storage.
    """

    def __init__(
        self,
        storage: Any = None,
        run_guid: str | None = None,
        verbose: bool = False,
        *,
        tenant_id: str = "default",
        max_workers: int = 1,
        strict: bool = False,
        cleanup_on_success: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(
            pipeline_name=PIPELINE_NAME,
            step_definitions={
                "extract_frames": {
                    "function": self.extract_frames,
                    "description": "Decode the video with PyAV into RGB frames "
                    "(checkpoints every progress_every frames; resumes by frame index).",
                    "retries": 2,
                    "timeout": 540,
                    "memory": "2Gi",
                },
                "detect": {
                    "function": self.detect,
                    "description": "Model the background as the median frame; detect moving "
                    "objects as connected components of the foreground.",
                    "retries": 1,
                    "timeout": 300,
                    "memory": "2Gi",
                },
                "crop": {
                    "function": self.crop,
                    "description": "Link detections into tracks by IoU and cut each "
                    "tracked box out of its frame.",
                    "retries": 1,
                    "timeout": 300,
                    "memory": "1Gi",
                },
                "remove_background": {
                    "function": self.remove_background,
                    "description": "Zero the crop pixels that match the background model; "
                    "label each track by its dominant color.",
                    "retries": 1,
                    "timeout": 300,
                    "memory": "1Gi",
                },
                "augment": {
                    "function": self.augment,
                    "description": "Make seeded, deterministic flipped and brightened "
                    "copies of every crop.",
                    "retries": 1,
                    "timeout": 300,
                    "memory": "1Gi",
                },
                "split": {
                    "function": self.split,
                    "description": "Split the tracks into train and validation sets "
                    "(by seed; a track is never in both).",
                    "retries": 1,
                    "timeout": 60,
                    "memory": "512Mi",
                },
                "write_dataset": {
                    "function": self.write_dataset,
                    "description": "Write the images and manifest.json to "
                    "{output}/datasets/{video_guid}/ (idempotent).",
                    "retries": 3,
                    "timeout": 540,
                    "memory": "1Gi",
                },
            },
            storage=storage,
            run_guid=run_guid,
            verbose=verbose,
            tenant_id=tenant_id,
            max_workers=max_workers,
            strict=strict,
            cleanup_on_success=cleanup_on_success,
            **options,
        )

    # -- steps ------------------------------------------------------------------------------

    def extract_frames(self, context: Context, save_progress: SaveProgress) -> Context:
        """Decode kept frames into ``frames_data`` / ``frame_meta``, saving progress as it goes.

        ``frames_next_index`` is the index of the first decoded frame not handled yet: a
        resumed step starts decoding there, keeping the frames it already has.
        """
        params = Params.from_context(context)
        video_path = context.get("video_path")
        if not isinstance(video_path, str) or not video_path:
            raise NonRetryableError("the context needs a 'video_path' (a file or gs:// URL)")
        _video_guid(context)
        try:
            path = local_video(video_path)
        except (FileNotFoundError, ValueError) as exc:
            raise NonRetryableError(str(exc)) from None
        frames: list[vision.Image] = list(context.get("frames_data") or [])
        meta: list[dict[str, Any]] = list(context.get("frame_meta") or [])
        start = int(context.get("frames_next_index") or 0)
        limit = params.max_frames or math.inf
        next_index = start
        if len(frames) < limit:
            for frame in iter_frames(path, start=start, stride=params.frame_stride):
                frames.append(frame.image)
                meta.append({"index": frame.index, "pts": frame.pts, "time": frame.time})
                next_index = frame.index + 1
                if len(frames) >= limit:
                    break
                if len(frames) % params.progress_every == 0:
                    context.update(
                        frames_data=frames, frame_meta=meta, frames_next_index=next_index
                    )
                    save_progress(context)
                    frames, meta = list(frames), list(meta)  # the saved lists stay as saved
        if not frames:
            raise NonRetryableError(f"no frames decoded from {video_path!r}")
        return {
            "frames_data": frames,
            "frame_meta": meta,
            "frames_next_index": next_index,
            "video_info": probe(path).as_dict(),
        }

    def detect(self, context: Context) -> Context:
        """``background`` (median frame) and per-frame ``detection_boxes`` / ``_scores``."""
        params = Params.from_context(context)
        frames = context["frames_data"]
        background = vision.median_background(frames)
        boxes, scores = [], []
        for frame in frames:
            b, s = vision.detect_objects(
                frame, background, threshold=params.diff_threshold, min_area=params.min_area
            )
            boxes.append(b)
            scores.append(s)
        return {"background": background, "detection_boxes": boxes, "detection_scores": scores}

    def crop(self, context: Context) -> Context:
        """``crops_in_memory`` (track → crops) and ``crop_meta`` (track → frame, box, score)."""
        params = Params.from_context(context)
        frames, meta = context["frames_data"], context["frame_meta"]
        boxes, scores = context["detection_boxes"], context["detection_scores"]
        ids = vision.track_ids(boxes, iou_threshold=params.iou_threshold, max_gap=params.max_gap)
        crops: dict[str, list[vision.Image]] = {}
        crop_meta: dict[str, list[dict[str, Any]]] = {}
        for position, frame in enumerate(frames):
            for j, number in enumerate(ids[position]):
                box = vision.crop_box(boxes[position][j], frame.shape, params.crop_padding)
                track = _track_name(number)
                crops.setdefault(track, []).append(vision.crop(frame, box))
                crop_meta.setdefault(track, []).append(
                    {
                        "frame": meta[position]["index"],
                        "box": list(box),
                        "score": round(float(scores[position][j]), 4),
                    }
                )
        keep = sorted(t for t in crops if len(crops[t]) >= params.min_track_length)
        return {
            "crops_in_memory": {t: crops[t] for t in keep},
            "crop_meta": {t: crop_meta[t] for t in keep},
        }

    def remove_background(self, context: Context) -> Context:
        """``modified_crops_in_memory``: crops with background pixels zeroed; ``track_labels``."""
        params = Params.from_context(context)
        background = context["background"]
        modified: dict[str, list[vision.Image]] = {}
        labels: dict[str, str] = {}
        for track, crops in context["crops_in_memory"].items():
            out = []
            for image, info in zip(crops, context["crop_meta"][track], strict=True):
                behind = vision.crop(background, tuple(info["box"]))
                out.append(vision.remove_background(image, behind, params.diff_threshold))
            modified[track] = out
            labels[track] = vision.majority([vision.color_label(image) for image in out])
        return {"modified_crops_in_memory": modified, "track_labels": labels}

    def augment(self, context: Context) -> Context:
        """``augmented_crops_in_memory``: ``augmentations`` seeded variants of each crop."""
        params = Params.from_context(context)
        augmented: dict[str, list[vision.Image]] = {}
        augment_meta: dict[str, list[dict[str, Any]]] = {}
        for track, crops in context["modified_crops_in_memory"].items():
            rng = vision.track_rng(params.seed, track)
            images, records = [], []
            for source, image in enumerate(crops):
                for variant in range(params.augmentations):
                    out, record = vision.augment(image, rng)
                    images.append(out)
                    records.append({"source": source, "variant": variant, **record})
            augmented[track], augment_meta[track] = images, records
        return {"augmented_crops_in_memory": augmented, "augment_meta": augment_meta}

    def split(self, context: Context) -> Context:
        """``train_ids`` / ``val_ids``: disjoint, sorted track ids, drawn by ``seed``."""
        params = Params.from_context(context)
        tracks = sorted(context["modified_crops_in_memory"])
        order = np.random.default_rng(params.seed).permutation(len(tracks))
        n_val = 0
        if len(tracks) >= 2:
            n_val = min(len(tracks) - 1, max(1, round(len(tracks) * params.val_fraction)))
        val = sorted(tracks[int(i)] for i in order[:n_val])
        train = sorted(t for t in tracks if t not in val)
        return {"train_ids": train, "val_ids": val}

    def write_dataset(self, context: Context) -> Context:
        """Write the dataset; returns ``dataset``: its URL, manifest name and file count."""
        params = Params.from_context(context)
        guid = _video_guid(context)
        output = context.get("output")
        store: ObjectStore = open_store(output) if output else self.storage
        files: list[dataset.DatasetFile] = []
        for split_name, tracks in (("train", context["train_ids"]), ("val", context["val_ids"])):
            for track in tracks:
                files.extend(self._track_files(context, params, split_name, track))
        counts = {
            name: sum(1 for f in files if f.record["split"] == name) for name in ("train", "val")
        }
        manifest = {
            "video_guid": guid,
            "video": context.get("video_info"),
            "frames": len(context["frames_data"]),
            "params": params.as_dict(),
            "labels": dict(sorted(context["track_labels"].items())),
            "splits": {
                "train": {"tracks": list(context["train_ids"]), "files": counts["train"]},
                "val": {"tracks": list(context["val_ids"]), "files": counts["val"]},
            },
        }
        written = dataset.write_dataset(store, guid, files, manifest, params.image_format)
        return {
            "dataset": {
                "url": written.url,
                "manifest": written.manifest,
                "file_count": written.files,
                "train_files": counts["train"],
                "val_files": counts["val"],
            }
        }

    @staticmethod
    def _track_files(
        context: Mapping[str, Any], params: Params, split_name: str, track: str
    ) -> list[dataset.DatasetFile]:
        """One track's images: its crops, plus their augmented copies in the train split."""
        label = context["track_labels"][track]
        infos = context["crop_meta"][track]
        crops = context["modified_crops_in_memory"][track]
        ext = params.image_format
        files = []
        for info, image in zip(infos, crops, strict=True):
            stem = f"{split_name}/{track}/{info['frame']:05d}"
            record = {"split": split_name, "track": track, "label": label, **info}
            record["augmented"] = False
            files.append(dataset.DatasetFile(f"{stem}.{ext}", image, record))
        if split_name == "train":
            augmented = context["augmented_crops_in_memory"][track]
            for record, image in zip(context["augment_meta"][track], augmented, strict=True):
                info = infos[record["source"]]
                name = f"{split_name}/{track}/{info['frame']:05d}_aug{record['variant']}.{ext}"
                full = {"split": split_name, "track": track, "label": label, **info}
                full.update(augmented=True, flip=record["flip"], brightness=record["brightness"])
                files.append(dataset.DatasetFile(name, image, full))
        return files


def build(
    storage: Any = None,
    run_guid: str | None = None,
    *,
    tenant_id: str = "default",
    max_workers: int = 1,
    cleanup_on_success: bool = True,
    **options: Any,
) -> DataPrepPipeline:
    """The data-prep pipeline (the ``MODULE:ATTR`` factory for the CLI and deployments)."""
    return DataPrepPipeline(
        storage,
        run_guid,
        tenant_id=tenant_id,
        max_workers=max_workers,
        cleanup_on_success=cleanup_on_success,
        **options,
    )
