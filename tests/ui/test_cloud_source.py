"""The UI's source of serverless runs (ui._cloud.CloudRuns) over in-memory services,
without the web layer: what a run page says when the pipeline's code is not here or the
checkpoints are gone, progress saves per step, removed keys, and each refused request
with its reason."""

from __future__ import annotations

from typing import Any

import pytest

from resumable import Pipeline, save_progress
from resumable.errors import RunControlError
from resumable.serverless._engine import PipelineRegistry
from resumable.ui._cloud import CloudRuns
from resumable.ui._models import RunKey
from tests.serverless_fakes import drain, make_engine, start, state_of


def make(context: dict[str, Any]) -> dict[str, Any]:
    return {"a": 1, "items": []}


def collect(context: dict[str, Any]) -> dict[str, Any]:
    items = list(context.get("items", []))
    while len(items) < 3:
        items.append(len(items))
        save_progress({"items": items})
    return {"items": items}


def drop(context: dict[str, Any]) -> None:
    del context["a"]


def tidy() -> Pipeline:
    steps = {"make": make, "collect": collect, "drop": drop}
    return Pipeline(
        "tidy",
        {name: {"function": f} for name, f in steps.items()},
        storage="memory://unused",
        cleanup_on_success=False,
    )


KEY = RunKey("default", "tidy", "t-1")


@pytest.fixture
def source() -> CloudRuns:
    engine = make_engine(tidy())
    start(engine, "tidy", {}, run_id="t-1")
    drain(engine)
    assert state_of(engine, "tidy", "t-1").status == "completed"
    return CloudRuns(engine)


def test_a_run_page_counts_progress_saves_and_shows_removed_keys(source: CloudRuns) -> None:
    view = source.run(KEY)
    assert view is not None and view.graph_known and view.notes == []
    saves = {s.name: s.progress_saves for s in view.steps}
    assert saves == {"make": 0, "collect": 3, "drop": 0}
    dropped = source.checkpoint(KEY, "drop", "output")
    assert [(v.key, v.type, v.deleted) for v in dropped.values] == [("a", "(removed)", True)]


def test_a_pipeline_not_loadable_here_is_shown_without_its_graph(source: CloudRuns) -> None:
    source.engine.registry = PipelineRegistry()
    view = source.run(KEY)
    assert view is not None and not view.graph_known and not view.can_resume_from
    assert any("does not load here" in note for note in view.notes)
    assert [s.name for s in view.steps] == ["make", "collect", "drop"]


def test_a_run_whose_checkpoints_are_deleted_says_so_and_offers_no_resume(
    source: CloudRuns,
) -> None:
    engine = source.engine
    from resumable.serverless._run_state import Decision

    def deleted(state: Any) -> Decision[None]:
        new = state.model_copy(deep=True)
        new.files_deleted = True
        return Decision(None, new)

    engine.runs.mutate(engine.doc_id("default", "tidy", "t-1"), deleted)
    view = source.run(KEY)
    assert view is not None
    assert any("checkpoints were deleted" in note for note in view.notes)
    assert all(s.progress_saves is None and not s.has_output for s in view.steps)
    assert not view.can_resume and not view.can_resume_from


def test_requests_the_run_cannot_answer_are_refused_with_the_reason(source: CloudRuns) -> None:
    with pytest.raises(RunControlError, match="no run 'absent' of pipeline 'tidy'"):
        source.checkpoint(RunKey("default", "tidy", "absent"), "make", "output")
    with pytest.raises(RunControlError, match="run 't-1' has no step 'nope'"):
        source.checkpoint(KEY, "nope", "output")
    assert source.cancel(KEY) == "run t-1 is already completed; nothing to cancel"
    with pytest.raises(
        RunControlError, match="unknown pipeline 'other': this deployment serves tidy"
    ):
        source.start("other", {}, None)
    assert source.run(RunKey("default", "tidy", "absent")) is None
