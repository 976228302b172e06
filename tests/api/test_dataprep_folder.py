"""The folder pipeline of examples/dataprep: a map step over a folder of clips writes, per
clip, the dataset the single-clip pipeline writes; a broken clip is listed, and a resume
after fixing it processes that clip only."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("av")

from examples.dataprep import folder
from examples.dataprep.dataset import read_dataset
from examples.dataprep.pipeline import build as build_single
from examples.dataprep.video import make_test_clip
from tests.serverless_fakes import drain, make_engine, start, state_of

CLIPS = {"a-clip": 0, "b-clip": 1, "c-clip": 2}  # name -> background seed


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("clips")
    for name, seed in CLIPS.items():
        make_test_clip(where / f"{name}.mp4", 24, (160, 120), seed=seed)
    (where / "notes.txt").write_text("not a clip: the glob is *.mp4")
    return where


def test_a_folder_run_in_process_writes_each_clips_dataset_as_the_single_clip_pipeline(
    clips: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    result = folder.build(tmp_path / "checkpoints", max_workers=2).run(
        {"clips": str(clips), "output": str(output)}
    )
    assert result["status"] == "completed", result["errors"]
    context = result["context"]
    assert [r["clip"] for r in context["process_clips"]] == [
        f"file://{clips}/{name}.mp4" for name in CLIPS
    ]
    assert context["process_clips_failed"] == []
    summary = context["summary"]
    assert summary["datasets"] == 3 and summary["files"] > 0

    single_output = tmp_path / "single"
    single = build_single(tmp_path / "single-checkpoints").run(
        {
            "video_path": str(clips / "b-clip.mp4"),
            "video_guid": "b-clip",
            "output": str(single_output),
        }
    )
    assert single["status"] == "completed"
    mapped = read_dataset(f"file://{output}", "b-clip")
    alone = read_dataset(f"file://{single_output}", "b-clip")
    assert "manifest.json" in mapped and len(mapped) > 1
    assert mapped == alone  # the same files, byte for byte


def test_a_broken_clip_fails_the_map_listed_and_a_resume_processes_only_that_clip(
    clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    processed: list[str] = []
    original = folder.process_clip

    def counted(path: Any, params: Any) -> Any:
        processed.append(Path(path).name)
        return original(path, params)

    monkeypatch.setattr(folder, "process_clip", counted)
    folder_copy = tmp_path / "clips"
    shutil.copytree(clips, folder_copy)
    (folder_copy / "d-broken.mp4").write_bytes(b"not a video")
    output = tmp_path / "out"
    params = {"clips": str(folder_copy), "output": str(output)}
    engine = make_engine(folder.build(cleanup_on_success=False))
    start(engine, folder.PIPELINE_NAME, params)
    drain(engine, limit=100)
    state = state_of(engine, folder.PIPELINE_NAME)
    assert state.status == "error"
    error = state.steps["process_clips"].error or ""
    assert "1 of 4 items failed" in error and "#3 " in error

    assert sorted(processed) == ["a-clip.mp4", "b-clip.mp4", "c-clip.mp4", "d-broken.mp4"]

    make_test_clip(folder_copy / "d-broken.mp4", 24, (160, 120), seed=3)  # fixed
    processed.clear()
    from resumable.serverless._control import resume_run

    resume_run(engine, state)
    drain(engine, limit=100)
    state = state_of(engine, folder.PIPELINE_NAME)
    assert state.status == "completed", state.error
    assert processed == ["d-broken.mp4"]  # the fixed clip only
    assert len(list(output.rglob("manifest.json"))) == 4
    spec = engine.registry.get(folder.PIPELINE_NAME).spec
    final = engine.files(state).final_context(state, spec)
    assert final["summary"]["datasets"] == 4
    assert [r["clip"].rsplit("/", 1)[1] for r in final["process_clips"]] == [
        "a-clip.mp4",
        "b-clip.mp4",
        "c-clip.mp4",
        "d-broken.mp4",
    ]
