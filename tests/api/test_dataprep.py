"""The video data-prep example: a real clip decoded with PyAV becomes a dataset on storage.

One short synthetic clip (three colored rectangles moving over a textured background) is
encoded once per module; the pipeline must find the three rectangles, track them, write
a deterministic dataset, and resume to the very same bytes after a failed step or a
SIGKILL in the middle of ``extract_frames``. The last test reads the video from and writes
the dataset to a fake-gcs-server bucket (marked ``emulators``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from examples.dataprep import clip as per_clip
from examples.dataprep import pipeline as dataprep
from examples.dataprep import vision
from examples.dataprep.dataset import (
    MANIFEST,
    decode_png,
    encode_npy,
    encode_png,
    read_dataset,
)
from examples.dataprep.video import (
    DecodedFrame,
    iter_frames,
    make_test_clip,
    probe,
    sprite_boxes,
)
from resumable.definition._loader import load_pipeline
from resumable.storage import open_store
from tests.serverless_fakes import drain, make_engine, start, state_of

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 36
GUID = "clip-1"
STEPS = [
    "extract_frames",
    "detect",
    "crop",
    "remove_background",
    "augment",
    "split",
    "write_dataset",
]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_clip(tmp_path_factory.mktemp("video") / "clip.mp4", FRAMES, (160, 120))


def _context(clip: Path, output: Path | None = None, **params: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"video_path": str(clip), "video_guid": GUID, **params}
    if output is not None:
        context["output"] = str(output)
    return context


def _run(storage: Path, context: dict[str, Any], **kw: Any) -> dict[str, Any]:
    result = dataprep.build(str(storage), retry_backoff=0.0, **kw).run(context)
    assert result["status"] == "completed", result["errors"]
    return result


@pytest.fixture(scope="module")
def reference(
    clip: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path, dict[str, bytes]]:
    """One uninterrupted run: its result, its output folder and its dataset's bytes."""
    root = tmp_path_factory.mktemp("reference")
    result = _run(root / "store", _context(clip, root / "out"))
    return result, root / "out", read_dataset(root / "out", GUID)


# -- the dataset --------------------------------------------------------------------------


def test_the_clip_is_a_real_video(clip: Path) -> None:
    info = probe(clip)
    assert (info.width, info.height, info.fps) == (160, 120, 12.0)
    assert info.codec in ("h264", "mpeg4")


def test_every_moving_rectangle_becomes_a_track_of_background_free_crops(
    reference: tuple[dict[str, Any], Path, dict[str, bytes]],
) -> None:
    result, out, files = reference
    context = result["context"]
    assert result["steps_completed"] == STEPS

    assert len(context["frames_data"]) == FRAMES
    assert all(f.dtype == np.uint8 and f.shape == (120, 160, 3) for f in context["frames_data"])
    assert [m["index"] for m in context["frame_meta"]] == list(range(FRAMES))
    assert all(len(b) == 3 and b.dtype == np.float32 for b in context["detection_boxes"])
    assert all(s.dtype == np.float32 and (s > 0.3).all() for s in context["detection_scores"])

    tracks = sorted(context["crops_in_memory"])
    assert len(tracks) == 3
    assert sorted(context["track_labels"].values()) == ["blue", "green", "red"]
    for track in tracks:
        crops = context["modified_crops_in_memory"][track]
        assert len(crops) == FRAMES == len(context["crops_in_memory"][track])
        assert len(context["augmented_crops_in_memory"][track]) == 2 * FRAMES
        for crop in crops:  # the padding around each box is background: zeroed
            assert crop.dtype == np.uint8 and crop.ndim == 3
            assert not crop[0].any() and not crop[:, 0].any() and crop.any()

    train, val = context["train_ids"], context["val_ids"]
    assert train and val and not set(train) & set(val) and sorted(train + val) == tracks

    manifest = read_dataset(out, GUID, decode=True)[MANIFEST]
    listed = {record["file"] for record in manifest["files"]}
    assert set(files) == listed | {MANIFEST}
    assert context["dataset"] == {
        "url": f"{out.as_uri()}/datasets/{GUID}/",
        "manifest": f"datasets/{GUID}/{MANIFEST}",
        "file_count": len(listed),
        "train_files": len(train) * FRAMES * 3,  # each crop and two augmented copies
        "val_files": len(val) * FRAMES,
    }
    for record in manifest["files"]:
        assert record["file"].startswith(f"{record['split']}/{record['track']}/")
        assert record["track"] in (train if record["split"] == "train" else val)
        assert record["label"] == context["track_labels"][record["track"]]
        assert record["augmented"] is (record["split"] == "train" and "_aug" in record["file"])
        image = decode_png(files[record["file"]])
        assert list(image.shape) == record["shape"]
    assert manifest["splits"]["train"]["tracks"] == train
    assert manifest["splits"]["val"]["files"] == len(val) * FRAMES
    assert manifest["warnings"] == context["dataset_warnings"] == []


def test_the_same_video_gives_the_same_dataset_byte_for_byte(
    clip: Path, reference: tuple[dict[str, Any], Path, dict[str, bytes]], tmp_path: Path
) -> None:
    # No output given: the dataset goes under the pipeline's own storage.
    result = _run(tmp_path / "store", _context(clip))

    assert (
        result["context"]["dataset"]["url"] == f"{(tmp_path / 'store').as_uri()}/datasets/{GUID}/"
    )
    assert read_dataset(tmp_path / "store", GUID) == reference[2]


def test_writing_again_overwrites_the_same_objects_and_drops_stale_ones(
    reference: tuple[dict[str, Any], Path, dict[str, bytes]], tmp_path: Path
) -> None:
    result, _, files = reference
    out = tmp_path / "out"
    stale = f"datasets/{GUID}/train/track_009/00001.png"
    open_store(str(out)).write(stale, b"left by an earlier, different run")
    pipeline = dataprep.build(str(tmp_path / "store"))
    context = {**result["context"], "output": str(out)}

    first = pipeline.write_dataset(context)
    assert read_dataset(out, GUID) == files
    second = pipeline.write_dataset(context)
    assert read_dataset(out, GUID) == files
    assert first["dataset"]["file_count"] == second["dataset"]["file_count"] == len(files) - 1


def test_parameters_change_the_dataset_as_asked(clip: Path, tmp_path: Path) -> None:
    context = _context(clip, frame_stride=3, max_frames=8, image_format="npy", seed=1)
    result = _run(tmp_path / "store", context)

    ctx = result["context"]
    assert [m["index"] for m in ctx["frame_meta"]] == [0, 3, 6, 9, 12, 15, 18, 21]
    files = read_dataset(tmp_path / "store", GUID, decode=True)
    images = [name for name in files if name != MANIFEST]
    assert images and all(name.endswith(".npy") for name in images)
    assert all(files[name].dtype == np.uint8 for name in images)


def test_a_bad_parameter_fails_at_once_without_retries(clip: Path, tmp_path: Path) -> None:
    pipeline = dataprep.build(str(tmp_path / "store"), retry_backoff=0.0)
    result = pipeline.run(_context(clip, frame_stride=0))

    assert result["status"] == "error"
    assert "frame_stride" in result["errors"][0]
    assert result["steps"]["extract_frames"]["attempts"] == 1


def test_the_pipeline_loads_by_reference(tmp_path: Path) -> None:
    for target in (
        "examples.dataprep.pipeline:build",
        "examples.dataprep.pipeline:DataPrepPipeline",
    ):
        pipeline = load_pipeline(target, storage=str(tmp_path), run_id="run-1")
        assert isinstance(pipeline, dataprep.DataPrepPipeline)
        assert pipeline.run_id == "run-1" and pipeline.storage.url == tmp_path.as_uri()
        assert list(pipeline.spec.order) == STEPS
        assert all(s.description and s.timeout and s.memory for s in pipeline.spec.steps.values())


# -- frame sizes and empty results ------------------------------------------------------

# 24 frames, every 3rd kept: 8 frames to process, and the rectangles move as far between
# them as they do over 3 frames (IoU tracking must still follow them).
SIZE_FRAMES, SIZE_STRIDE = 24, 3


@pytest.mark.parametrize(
    "size", [(320, 240), (640, 360), (1280, 720), (1920, 1080)], ids=lambda s: f"{s[0]}x{s[1]}"
)
def test_the_three_rectangles_are_found_and_tracked_at_every_frame_size(
    size: tuple[int, int], tmp_path: Path
) -> None:
    video = make_test_clip(tmp_path / "clip.mp4", SIZE_FRAMES, size)
    result = _run(tmp_path / "store", _context(video, frame_stride=SIZE_STRIDE))
    context = result["context"]

    kept = SIZE_FRAMES // SIZE_STRIDE
    assert len(context["frames_data"]) == kept
    for meta, boxes in zip(context["frame_meta"], context["detection_boxes"], strict=True):
        truth = [box for _, box in sprite_boxes(meta["index"], size)]
        assert len(truth) == len(boxes) == 3, (meta, boxes)
        overlap = vision.iou_matrix(np.array(truth), boxes)
        assert (overlap.max(axis=1) > 0.8).all(), (meta, boxes, truth)  # each one found
    assert sorted(context["track_labels"].values()) == ["blue", "green", "red"]
    assert all(len(crops) == kept for crops in context["crops_in_memory"].values())
    train, val = context["train_ids"], context["val_ids"]
    assert context["dataset"]["file_count"] == kept * (3 * len(train) + len(val)) > 0
    assert context["dataset_warnings"] == []


def test_a_clip_without_moving_objects_gives_an_empty_dataset_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    video = make_test_clip(tmp_path / "blank.mp4", 12, (160, 120), objects=0)
    result = _run(tmp_path / "store", _context(video, tmp_path / "out"))

    context = result["context"]
    assert context["dataset"]["file_count"] == 0
    (warning,) = context["dataset_warnings"]
    assert warning.startswith("the dataset is empty: no moving object detected in 12 frames")
    manifest = read_dataset(tmp_path / "out", GUID, decode=True)[MANIFEST]
    assert manifest["files"] == [] and manifest["warnings"] == [warning]
    assert any(r.levelname == "WARNING" and warning in r.getMessage() for r in caplog.records)


def test_an_empty_dataset_warns_the_same_way_in_a_serverless_run(tmp_path: Path) -> None:
    """On the serverless engine (in-memory services), the warning reaches the final context
    and the manifest, identical to the in-process run's."""
    video = make_test_clip(tmp_path / "blank.mp4", 12, (160, 120), objects=0)
    local = _run(tmp_path / "store", _context(video, tmp_path / "local"))["context"]

    pipeline = dataprep.build("memory://unused", cleanup_on_success=False)
    engine = make_engine(pipeline)
    start(engine, dataprep.PIPELINE_NAME, _context(video, tmp_path / "served"))
    drain(engine)
    state = state_of(engine, dataprep.PIPELINE_NAME)
    assert state.status == "completed", state.error
    final = engine.files(state).final_context(state, pipeline.spec)

    assert final["dataset_warnings"] == local["dataset_warnings"] != []
    assert read_dataset(tmp_path / "served", GUID) == read_dataset(tmp_path / "local", GUID)


def test_tracks_too_short_or_too_few_are_warned_about(
    reference: tuple[dict[str, Any], Path, dict[str, bytes]],
) -> None:
    context = reference[0]["context"]
    strict = per_clip.Params(min_track_length=FRAMES + 1)
    crops, _, stats = per_clip.track_crops(
        context["frames_data"],
        context["frame_meta"],
        context["detection_boxes"],
        context["detection_scores"],
        strict,
    )
    assert crops == {}
    assert stats == {
        "frames": FRAMES,
        "detections": 3 * FRAMES,
        "tracks": 3,
        "tracks_kept": 0,
        "longest_track": FRAMES,
    }
    (warning,) = per_clip.dataset_warnings(stats, 0, strict)
    assert "dataset is empty" in warning and f"min_track_length={FRAMES + 1}" in warning
    assert f"the longest: {FRAMES}" in warning

    one = {"frames": 4, "detections": 4, "tracks": 1, "tracks_kept": 1, "longest_track": 4}
    assert per_clip.dataset_warnings(one, 12, per_clip.Params()) == [
        "only one track was found: the validation split is empty"
    ]
    assert per_clip.dataset_warnings(context["crop_stats"], 5, per_clip.Params()) == []


def test_process_clip_gives_what_the_steps_give(
    clip: Path, reference: tuple[dict[str, Any], Path, dict[str, bytes]]
) -> None:
    steps = reference[0]["context"]
    alone = per_clip.process_clip(clip)

    for key, value in alone.items():
        expected = steps[key]
        if key in ("frames_data", "detection_boxes", "detection_scores"):
            assert all(np.array_equal(a, b) for a, b in zip(value, expected, strict=True)), key
        elif key == "background":
            assert np.array_equal(value, expected)
        elif key.endswith("crops_in_memory"):
            assert value.keys() == expected.keys(), key
            for track, images in value.items():
                pairs = zip(images, expected[track], strict=True)
                assert all(np.array_equal(a, b) for a, b in pairs), (key, track)
        else:
            assert value == expected, key


# -- interruptions ------------------------------------------------------------------------


def test_a_failed_step_resumes_to_the_same_dataset(
    clip: Path,
    reference: tuple[dict[str, Any], Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kw: Any) -> Any:
        raise OSError("disk on fire")

    storage, out = tmp_path / "store", tmp_path / "out"
    monkeypatch.setattr(vision, "augment", broken)
    failed = dataprep.build(str(storage), retry_backoff=0.0).run(_context(clip, out))
    assert failed["status"] == "error" and failed["steps"]["augment"]["attempts"] == 2
    assert failed["steps_completed"] == STEPS[:4]

    monkeypatch.undo()
    resumed = dataprep.build(str(storage), failed["run_guid"]).run(resume_from_checkpoint=True)

    assert resumed["status"] == "completed", resumed["errors"]
    assert resumed["steps_skipped"] == STEPS[:4] and resumed["steps_completed"] == STEPS[4:]
    assert read_dataset(out, GUID) == reference[2]


_CHILD = """
import sys, time
from pathlib import Path
from examples.dataprep import pipeline as dataprep

storage, run_id, clip, out, marker, hang_at, guid = sys.argv[1:8]
real = dataprep.iter_frames

def hanging(path, **kw):
    for frame in real(path, **kw):
        if frame.index == int(hang_at):
            Path(marker).touch()
            time.sleep(600)  # the test SIGKILLs us here
        yield frame

dataprep.iter_frames = hanging
dataprep.build(storage, run_id).run({"video_path": clip, "video_guid": guid, "output": out})
"""


def _wait_for(path: Path, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"child exited early: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.02)


def test_sigkill_in_extract_frames_resumes_from_the_last_saved_frame(
    clip: Path,
    reference: tuple[dict[str, Any], Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage, out, marker = tmp_path / "store", tmp_path / "out", tmp_path / "hanging"
    args = [str(storage), "run-kill", str(clip), str(out), str(marker), "21", GUID]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, *args], env=env, stderr=subprocess.PIPE)
    try:
        _wait_for(marker, child)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    # Progress was saved after 8 and 16 frames (progress_every=8); frames 16-20 are lost.
    saved = dataprep.build(str(storage), "run-kill").load_checkpoint()
    assert saved is not None and saved.manifest.completed_steps == []
    assert saved.context["frames_next_index"] == 16 and len(saved.context["frames_data"]) == 16

    starts: list[int] = []

    def recording(path: Any, **kw: Any) -> Iterator[DecodedFrame]:
        starts.append(kw.get("start", 0))
        yield from iter_frames(path, **kw)

    monkeypatch.setattr(dataprep, "iter_frames", recording)
    resumed = dataprep.build(str(storage), "run-kill").run(resume_from_checkpoint=True)

    assert resumed["status"] == "completed", resumed["errors"]
    assert resumed["resumed_from_checkpoint"] and resumed["steps_completed"] == STEPS
    assert starts == [16]
    for mine, theirs in zip(
        resumed["context"]["frames_data"], reference[0]["context"]["frames_data"], strict=True
    ):
        assert np.array_equal(mine, theirs)
    assert read_dataset(out, GUID) == reference[2]


# -- the building blocks ------------------------------------------------------------------


def test_png_and_npy_round_trip_exactly() -> None:
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (7, 5, 3), (1, 1, 4)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(decode_png(encode_png(image)), image)
    assert encode_png(image) == encode_png(image.copy())
    assert encode_npy(image).startswith(b"\x93NUMPY")


def test_connected_components_join_diagonals_and_split_separate_blobs() -> None:
    mask = np.zeros((6, 8), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # a diagonal line: one component
    mask[0:2, 5:8] = True
    mask[4:6, 0:8] = True
    found = vision.connected_components(mask)
    assert [(c.box, c.area) for c in found] == [
        ((0, 0, 3, 3), 3),
        ((5, 0, 8, 2), 6),
        ((0, 4, 8, 6), 16),
    ]


def test_tracking_follows_overlapping_boxes_and_starts_new_tracks() -> None:
    frames = [
        np.array([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float32),
        np.array([[52, 50, 62, 60], [2, 0, 12, 10]], dtype=np.float32),
        np.array([[100, 100, 110, 110]], dtype=np.float32),
    ]
    assert vision.track_ids(frames) == [[0, 1], [1, 0], [2]]


# -- Cloud Storage (fake-gcs-server) ------------------------------------------------------


def test_a_gs_video_becomes_a_dataset_in_a_bucket(
    clip: Path, reference: tuple[dict[str, Any], Path, dict[str, bytes]], gcs_bucket: str
) -> None:
    from resumable.storage.gcs import make_storage_client

    client = make_storage_client()
    client.bucket(gcs_bucket).blob("videos/clip.mp4").upload_from_filename(str(clip))
    context = {
        "video_path": f"gs://{gcs_bucket}/videos/clip.mp4",
        "video_guid": GUID,
        "output": f"gs://{gcs_bucket}/out",
    }
    result = dataprep.build(f"gs://{gcs_bucket}/pipelines").run(context)

    assert result["status"] == "completed", result["errors"]
    assert result["context"]["dataset"]["url"] == f"gs://{gcs_bucket}/out/datasets/{GUID}/"
    assert read_dataset(f"gs://{gcs_bucket}/out", GUID) == reference[2]
