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

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from resumable import NonRetryableError, Pipeline, validate_id
from resumable.errors import InvalidIdError
from resumable.storage import ObjectStore, open_store

from . import dataset, vision
from .clip import (
    DEFAULT_PARAMS,
    Params,
    augment_crops,
    clean_crops,
    dataset_warnings,
    detect_frames,
    kept_frames,
    split_tracks,
    track_crops,
)
from .video import iter_frames, local_video, probe

__all__ = ["DEFAULT_PARAMS", "PIPELINE_NAME", "DataPrepPipeline", "Params", "build"]

PIPELINE_NAME = "dataprep"

# A child of the library's logger: the CLI and the functions show its warnings with theirs.
logger = logging.getLogger("resumable.examples.dataprep")

SaveProgress = Callable[..., bool]
Context = dict[str, Any]

P = TypeVar("P", bound=Pipeline)


def _video_guid(context: Mapping[str, Any]) -> str:
    guid = context.get("video_guid")
    if guid is None or isinstance(guid, bool):
        raise NonRetryableError("the context needs a 'video_guid' (a safe id for the dataset)")
    try:
        return validate_id(str(guid), "video_guid")
    except InvalidIdError as exc:
        raise NonRetryableError(str(exc)) from None


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
        for frame in kept_frames(path, params, start=start, kept=len(frames), decode=iter_frames):
            frames.append(frame.image)
            meta.append({"index": frame.index, "pts": frame.pts, "time": frame.time})
            next_index = frame.index + 1
            if len(frames) < limit and len(frames) % params.progress_every == 0:
                context.update(frames_data=frames, frame_meta=meta, frames_next_index=next_index)
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
        background, boxes, scores = detect_frames(context["frames_data"], params)
        return {"background": background, "detection_boxes": boxes, "detection_scores": scores}

    def crop(self, context: Context) -> Context:
        """``crops_in_memory`` (track → crops), ``crop_meta`` (track → frame, box, score)
        and ``crop_stats`` (frames, detections, tracks found and kept, longest track)."""
        params = Params.from_context(context)
        crops, records, stats = track_crops(
            context["frames_data"],
            context["frame_meta"],
            context["detection_boxes"],
            context["detection_scores"],
            params,
        )
        return {"crops_in_memory": crops, "crop_meta": records, "crop_stats": stats}

    def remove_background(self, context: Context) -> Context:
        """``modified_crops_in_memory``: crops with background pixels zeroed; ``track_labels``."""
        params = Params.from_context(context)
        modified, labels = clean_crops(
            context["crops_in_memory"], context["crop_meta"], context["background"], params
        )
        return {"modified_crops_in_memory": modified, "track_labels": labels}

    def augment(self, context: Context) -> Context:
        """``augmented_crops_in_memory``: ``augmentations`` seeded variants of each crop."""
        params = Params.from_context(context)
        augmented, records = augment_crops(context["modified_crops_in_memory"], params)
        return {"augmented_crops_in_memory": augmented, "augment_meta": records}

    def split(self, context: Context) -> Context:
        """``train_ids`` / ``val_ids``: disjoint, sorted track ids, drawn by ``seed``."""
        params = Params.from_context(context)
        train, val = split_tracks(list(context["modified_crops_in_memory"]), params)
        return {"train_ids": train, "val_ids": val}

    def write_dataset(self, context: Context) -> Context:
        """Write the dataset; returns ``dataset`` (its URL, manifest name and file counts)
        and ``dataset_warnings`` (also in the manifest, and logged): an empty dataset is
        never silent."""
        params = Params.from_context(context)
        guid = _video_guid(context)
        output = context.get("output")
        store: ObjectStore = open_store(output) if output else self.storage
        return write_clip_dataset(store, guid, context, params)

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


def write_clip_dataset(
    store: ObjectStore, guid: str, context: Mapping[str, Any], params: Params
) -> Context:
    """Write one clip's dataset under ``datasets/{guid}/`` in ``store`` from what the
    steps up to ``split`` put in ``context``; returns ``dataset`` (its URL, manifest name
    and file counts) and ``dataset_warnings`` (also in the manifest, and logged)."""
    files: list[dataset.DatasetFile] = []
    for split_name, tracks in (("train", context["train_ids"]), ("val", context["val_ids"])):
        for track in tracks:
            files.extend(DataPrepPipeline._track_files(context, params, split_name, track))
    counts = {name: sum(1 for f in files if f.record["split"] == name) for name in ("train", "val")}
    stats = context.get("crop_stats")
    if stats is None:  # a checkpoint saved before the crop step returned its statistics
        stats = track_crops(
            context["frames_data"],
            context["frame_meta"],
            context["detection_boxes"],
            context["detection_scores"],
            params,
        )[2]
    warnings = dataset_warnings(stats, len(files), params)
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
        "warnings": warnings,
    }
    written = dataset.write_dataset(store, guid, files, manifest, params.image_format)
    for warning in warnings:
        logger.warning("dataset %s: %s", guid, warning)
    return {
        "dataset": {
            "url": written.url,
            "manifest": written.manifest,
            "file_count": written.files,
            "train_files": counts["train"],
            "val_files": counts["val"],
        },
        "dataset_warnings": warnings,
    }


def factory(make: Callable[..., P], doc: str) -> Callable[..., P]:
    """A ``MODULE:ATTR`` factory for the CLI and deployments: ``make`` called with the
    settings the loader may give (named here, so that it passes them) and the defaults of
    the examples (one worker, checkpoints deleted once a run completes)."""

    def build(
        storage: Any = None,
        run_guid: str | None = None,
        *,
        tenant_id: str = "default",
        max_workers: int = 1,
        cleanup_on_success: bool = True,
        **options: Any,
    ) -> P:
        return make(
            storage=storage,
            run_guid=run_guid,
            tenant_id=tenant_id,
            max_workers=max_workers,
            cleanup_on_success=cleanup_on_success,
            **options,
        )

    build.__doc__ = doc
    return build


build = factory(
    DataPrepPipeline,
    "The data-prep pipeline (the ``MODULE:ATTR`` factory for the CLI and deployments).",
)
