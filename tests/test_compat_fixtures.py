"""Runs interrupted under release 0.1.0 resume under this one (``tests/fixtures/compat-0.1.0``,
written by ``tests/fixtures/make_compat_fixtures.py`` with that release)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from resumable.serverless._messages import parse_step
from resumable.serverless._run_state import RunState
from resumable.serverless._worker import handle_step
from resumable.storage import LocalStore
from tests.serverless_fakes import drain, make_engine, start, state_of
from tests.support import compat_pipelines as cp
from tests.support.exact import assert_exact

FIXTURES = Path(__file__).parent / "fixtures" / "compat-0.1.0"


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
