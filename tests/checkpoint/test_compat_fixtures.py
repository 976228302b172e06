"""Runs interrupted under release 0.1.0 resume under this one (``tests/fixtures/compat-0.1.0``,
written by ``tests/fixtures/make_compat_fixtures.py`` with that release)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from resumable import Pipeline
from resumable.checkpoint._manifest import integrity_of
from resumable.serverless._messages import parse_step
from resumable.serverless._run_state import RunState
from resumable.serverless._worker import handle_step
from resumable.storage import LocalStore
from tests.serverless_fakes import drain, make_engine, start, state_of
from tests.support import compat_pipelines as cp
from tests.support.exact import assert_exact

FIXTURES = Path(__file__).parents[1] / "fixtures" / "compat-0.1.0"


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    cp.calls.clear()


def test_an_inprocess_checkpoint_of_0_1_0_resumes_from_its_saved_progress(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "inprocess", tmp_path / "old")
    result = cp.inprocess(LocalStore(tmp_path / "old"), "compat-1").run(resume_from_checkpoint=True)
    assert result["status"] == "completed", result["errors"]
    assert result["steps_skipped"] == ["load"]
    assert cp.calls == [f"detect@{cp.CRASH_AFTER}", "report"]

    cp.calls.clear()
    reference = cp.inprocess(LocalStore(tmp_path / "new"), "ref").run({"seed": 5})
    assert_exact(reference["context"], result["context"])


def test_a_serverless_run_stopped_half_way_under_0_1_0_resumes(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "serverless" / "objects", tmp_path / "objects")
    pipeline = cp.serverless()
    engine = make_engine(pipeline)
    engine.store = LocalStore(tmp_path / "objects")
    document = json.loads((FIXTURES / "serverless" / "run.json").read_text())
    doc_id = engine.doc_id("default", "compatsl", "compat-sl-1")
    assert engine.runs.create(doc_id, RunState.model_validate(document))

    # The message in flight when the worker died is redelivered (its lease has expired).
    for raw in json.loads((FIXTURES / "serverless" / "messages.json").read_text()):
        outcome = handle_step(engine, parse_step(json.dumps(raw).encode()))
        assert outcome.ack, outcome.reason
    drain(engine)

    state = engine.runs.get(doc_id)
    assert state is not None and state.status == "completed", state
    assert cp.calls == [f"detect@{cp.CRASH_AFTER}", "report"]
    assert {name: step.commits for name, step in state.steps.items()} == dict.fromkeys(
        ("load", "detect", "side", "report"), 1
    )
    final = engine.files(state).final_context(state, pipeline.spec)

    cp.calls.clear()
    fresh = make_engine(cp.serverless())
    start(fresh, "compatsl", {"seed": 5}, run_id="reference")
    drain(fresh)
    done = state_of(fresh, "compatsl", "reference")
    assert done.status == "completed"
    assert_exact(fresh.files(done).final_context(done, pipeline.spec), final)


def _versioned(storage: LocalStore, run_id: str, changed: str) -> Pipeline:
    """``cp.inprocess`` with step ``changed`` at version 2."""
    steps: dict[str, dict[str, Any]] = {
        "load": {"function": cp.load},
        "detect": {"function": cp.make_detect(), "retries": 1},
        "report": {"function": cp.report},
    }
    steps[changed]["version"] = 2
    return Pipeline("compat", steps, storage=storage, run_id=run_id, cleanup_on_success=False)


def _reference_context() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="compat-ref-") as folder:
        reference = cp.inprocess(LocalStore(folder), "ref").run({"seed": 5})
    cp.calls.clear()
    return reference["context"]


def _forge_detect_completed(run_folder: Path) -> None:
    """A checkpoint #9 in release 0.1.0's format as if ``detect`` had completed after #8
    (0.1.0 wrote no ``kind``, ``base`` or ``outputs``)."""
    document = json.loads((run_folder / "checkpoints" / "0000000008.json").read_text())
    assert "kind" not in document and "base" not in document
    document["sequence"] = 9
    document["completed_steps"] = ["load", "detect"]
    document["steps_summary"]["detect"]["status"] = "completed"
    document["integrity"] = integrity_of(document)
    data = json.dumps(document)
    (run_folder / "checkpoints" / "0000000009.json").write_text(data)
    (run_folder / ".checkpoint.json").write_text(data)


def test_a_0_1_0_checkpoint_rolls_back_to_the_last_commit_before_a_changed_step(
    tmp_path: Path,
) -> None:
    shutil.copytree(FIXTURES / "inprocess", tmp_path / "old")
    _forge_detect_completed(tmp_path / "old" / "runs" / "default" / "compat" / "compat-1")
    expected = _reference_context()

    result = _versioned(LocalStore(tmp_path / "old"), "compat-1", "detect").run(
        resume_from_checkpoint=True
    )
    assert result["status"] == "completed", result["errors"]
    assert any("step 'detect' changed since the checkpoint" in w for w in result["warnings"])
    # rolled back past #9 (detect completed) and #2..#8 (progress saves of detect) to #1,
    # taken when load committed: load stays done, detect starts over from item 0
    assert result["steps_skipped"] == ["load"]
    assert cp.calls == ["detect@0", "report"]
    assert_exact(expected, result["context"])


def test_a_0_1_0_checkpoint_with_nothing_left_to_roll_back_to_starts_fresh(
    tmp_path: Path,
) -> None:
    shutil.copytree(FIXTURES / "inprocess", tmp_path / "old")
    expected = _reference_context()

    result = _versioned(LocalStore(tmp_path / "old"), "compat-1", "load").run(
        {"seed": 5}, resume_from_checkpoint=True
    )
    assert result["status"] == "completed", result["errors"]
    assert "no earlier checkpoint to roll back to: starting fresh" in result["warnings"]
    assert result["steps_skipped"] == []
    assert cp.calls == ["load", "detect@0", "report"]
    assert_exact(expected, result["context"])
