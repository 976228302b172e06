"""The video data-prep example, event-driven on the local stack: a run started with the
official Pub/Sub client (one functions-framework process per step, the emulators and
fake-gcs-server) writes the same dataset, file by file, as the same pipeline run
in-process on the same clip."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from examples.dataprep import pipeline as dataprep
from examples.dataprep.dataset import MANIFEST, read_dataset
from examples.dataprep.video import make_test_clip
from resumable.dev._stack import DevStack
from resumable.serverless._engine import Engine

from .test_serverless_faults import commits, finished, publish_start, wait_for

pytestmark = [pytest.mark.emulators, pytest.mark.slow]

FRAMES = 24
SIZE = (160, 120)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short synthetic clip on the local disk (the function processes share it)."""
    return make_test_clip(tmp_path_factory.mktemp("video") / "clip.mp4", FRAMES, SIZE)


def test_dataprep_run_event_driven_writes_the_same_dataset_as_in_process(
    stack: DevStack, engine: Engine, clip: Path, tmp_path: Path
) -> None:
    run_id = f"dp-{uuid.uuid4().hex[:10]}"
    guid = f"clip-{run_id}"
    serverless_out = f"gs://{stack.bucket}/out-{run_id}"
    params = {
        "video_path": str(clip),
        "video_guid": guid,
        "output": serverless_out,
        "progress_every": 8,  # extract_frames saves progress mid-step twice on 24 frames
    }
    publish_start(stack, dataprep.PIPELINE_NAME, params, run_id)
    state = wait_for(engine, run_id, dataprep.PIPELINE_NAME, finished, timeout=120)
    assert state.status == "completed", state.error
    assert commits(state) == {name: 1 for name in state.steps}
    assert all(step.attempt == 1 for step in state.steps.values())

    in_process_out = f"gs://{stack.bucket}/in-process-{run_id}"
    result = dataprep.build(str(tmp_path / "store"), retry_backoff=0.0).run(
        {**params, "output": in_process_out}
    )
    assert result["status"] == "completed", result["errors"]

    served = read_dataset(serverless_out, guid)
    expected = read_dataset(in_process_out, guid)
    assert MANIFEST in served and len(served) > 1
    assert sorted(served) == sorted(expected)
    for name, data in expected.items():
        assert served[name] == data, f"{name} differs"
    assert len(served) - 1 == result["context"]["dataset"]["file_count"]
    manifest = read_dataset(serverless_out, guid, decode=True)[MANIFEST]
    assert manifest["warnings"] == result["context"]["dataset_warnings"] == []
