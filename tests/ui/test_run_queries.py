"""The UI's queries of run documents (ui._data), on Firestore (the emulator, through the
official client) and on the in-memory store, held to the same answers: pages newest
first with a cursor, filters by status and pipeline, run id search, counts per status;
and the UI's other doors into the library, each with what it answers when something is
missing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from resumable.errors import RunControlError
from resumable.serverless._engine import Engine, PipelineRegistry
from resumable.serverless._firestore import FirestoreRunStateStore, make_firestore_client
from resumable.serverless._run_state import RunState, StepState, document_id
from resumable.ui import _data
from tests.serverless_fakes import drain, make_engine, start, state_of
from tests.ui.pipelines import build

STATUSES = ("running", "completed", "error", "cancelled")
# (run id, pipeline, status, created at)
RUNS = [
    ("a-1", "alpha", "completed", 100.0),
    ("a-2", "alpha", "error", 200.0),
    ("a-3", "alpha", "running", 300.0),
    ("b-1", "beta", "completed", 150.0),
    ("b-2", "beta", "running", 250.0),
    ("ab-1", "beta", "completed", 250.0),  # same instant as b-2: the document name decides
]


def _document(run_id: str, pipeline: str, status: str, created_at: float) -> RunState:
    return RunState(
        run_id=run_id,
        pipeline=pipeline,
        status=status,
        fingerprint="f",
        params_manifest="m",
        params_hash="h",
        created_at=created_at,
        updated_at=created_at,
        steps={"only": StepState(status=status if status != "error" else "error")},
    )


@pytest.fixture(params=["memory", pytest.param("firestore", marks=pytest.mark.emulators)])
def engine(request: pytest.FixtureRequest) -> Engine:
    engine = make_engine()
    if request.param == "firestore":
        request.getfixturevalue("local_cloud")
        engine.runs = FirestoreRunStateStore(
            make_firestore_client("resumable-ui-queries"), f"runs_{uuid.uuid4().hex[:8]}"
        )
    for run_id, pipeline, status, created in RUNS:
        engine.runs.create(
            document_id("default", pipeline, run_id), _document(run_id, pipeline, status, created)
        )
    return engine


def _page(engine: Engine, **filters: Any) -> tuple[list[str], str | None]:
    wanted: dict[str, Any] = {"pipeline": None, "status": None, "search": None, "cursor": None}
    wanted.update(filters)
    limit = wanted.pop("limit", 10)
    runs, cursor = _data.query_runs(engine, limit=limit, **wanted)
    return [r["run_id"] for r in runs], cursor


def test_pages_run_newest_first_and_the_cursor_continues_where_a_page_ended(
    engine: Engine,
) -> None:
    seen, cursor = [], None
    for _ in range(10):
        ids, cursor = _page(engine, limit=4, cursor=cursor)
        seen += ids
        if cursor is None:
            break
    assert seen == ["a-3", "b-2", "ab-1", "a-2", "b-1", "a-1"]
    first, _ = _page(engine, limit=4)
    assert first == seen[:4]
    # a cursor that is not one of ours is the first page, not an error
    assert _page(engine, limit=2, cursor="not-a-cursor")[0] == ["a-3", "b-2"]


def test_filters_by_status_and_pipeline(engine: Engine) -> None:
    assert _page(engine, status="completed") == (["ab-1", "b-1", "a-1"], None)
    assert _page(engine, pipeline="alpha") == (["a-3", "a-2", "a-1"], None)
    assert _page(engine, pipeline="beta", status="running") == (["b-2"], None)
    ids, cursor = _page(engine, pipeline="beta", limit=1)
    assert ids == ["b-2"] and cursor is not None
    assert _page(engine, pipeline="beta", limit=1, cursor=cursor)[0] == ["ab-1"]


def test_search_finds_run_ids_by_their_start_in_id_order(engine: Engine) -> None:
    assert _page(engine, search="a") == (["a-1", "a-2", "a-3", "ab-1"], None)
    assert _page(engine, search="a-", limit=2) == (["a-1", "a-2"], None)
    assert _page(engine, search="a", pipeline="beta") == (["ab-1"], None)
    assert _page(engine, search="a", status="error") == (["a-2"], None)
    assert _page(engine, search="zzz") == ([], None)


def test_counts_per_status_of_all_runs_or_of_one_pipeline(engine: Engine) -> None:
    assert _data.count_runs(engine, STATUSES, pipeline=None) == {
        "running": 2,
        "completed": 3,
        "error": 1,
        "cancelled": 0,
    }
    runs, cursor, counts = _data.page_of_runs(
        engine, STATUSES, pipeline="beta", status=None, search=None, cursor=None, limit=1
    )
    assert [r["run_id"] for r in runs] == ["b-2"] and cursor is not None
    assert counts == {"running": 1, "completed": 2, "error": 0, "cancelled": 0}


def test_a_page_carries_each_runs_step_counts_without_reading_its_steps(engine: Engine) -> None:
    runs, _cursor = _data.query_runs(
        engine, pipeline="alpha", status=None, search=None, cursor=None, limit=10
    )
    counts = {r["run_id"]: r["step_counts"] for r in runs}
    assert counts == {
        "a-3": {"completed": 0, "total": 1},
        "a-2": {"completed": 0, "total": 1},
        "a-1": {"completed": 1, "total": 1},
    }
    assert "steps" not in runs[0]  # the projection leaves the step records out


@pytest.mark.emulators
def test_documents_written_before_step_counts_are_counted_from_their_steps(
    local_cloud: object,
) -> None:
    engine = make_engine()
    store = FirestoreRunStateStore(
        make_firestore_client("resumable-ui-queries"), f"runs_{uuid.uuid4().hex[:8]}"
    )
    engine.runs = store
    older = _document("old-1", "alpha", "running", 10.0).model_dump()
    older["steps"]["done"] = StepState(status="completed").model_dump()
    del older["step_counts"]  # as an earlier release wrote it
    store.collection.document(document_id("default", "alpha", "old-1")).set(older)
    engine.runs.create(
        document_id("default", "alpha", "new-1"), _document("new-1", "alpha", "completed", 20.0)
    )
    for search in (None, "old"):
        runs, _cursor = _data.query_runs(
            engine, pipeline=None, status=None, search=search, cursor=None, limit=10
        )
        by_id = {r["run_id"]: r["step_counts"] for r in runs}
        assert by_id["old-1"] == {"completed": 1, "total": 2}
        if search is None:
            assert by_id["new-1"] == {"completed": 1, "total": 1}


def test_step_counts_are_derived_on_every_write_and_never_read_back() -> None:
    state = _document("r", "alpha", "running", 1.0)
    assert state.model_dump()["step_counts"] == {"completed": 0, "total": 1}
    stale = {**state.model_dump(), "step_counts": {"completed": 9, "total": 9}}
    reread = RunState.model_validate(stale)
    assert "step_counts" not in (reread.model_extra or {})
    assert reread.model_dump()["step_counts"] == {"completed": 0, "total": 1}


# -- the other doors ----------------------------------------------------------------------------


def test_the_local_stacks_logs_only_for_the_stack_the_engine_talks_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine()
    monkeypatch.setenv("RESUMABLE_DEV_HOME", str(tmp_path))
    assert _data.local_logs_dir(engine) is None  # no stack
    state = tmp_path / "state.json"
    state.write_text("{ damaged")
    assert _data.local_logs_dir(engine) is None
    logs = tmp_path / "logs"
    state.write_text(json.dumps({"env": {"RESUMABLE_PROJECT": "test-project"}, "logs": str(logs)}))
    assert _data.local_logs_dir(engine) == logs
    state.write_text(json.dumps({"env": {"RESUMABLE_PROJECT": "other"}, "logs": str(logs)}))
    assert _data.local_logs_dir(engine) is None
    state.write_text(json.dumps({"env": {"RESUMABLE_PROJECT": "test-project"}}))
    assert _data.local_logs_dir(engine) is None


def test_the_trace_link_points_at_cloud_trace_except_on_the_emulators(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = make_engine()
    state = _document("r-1", "alpha", "running", 1.0)
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    trace_id, link = _data.trace_of(engine, state)
    assert len(trace_id) == 32
    assert link == (
        f"https://console.cloud.google.com/traces/list?project=test-project&tid={trace_id}"
    )
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:1")
    assert _data.trace_of(engine, state) == (trace_id, None)


def test_pipelines_whose_code_does_not_load_here_are_shown_without_their_graph() -> None:
    engine = make_engine()
    engine.registry = PipelineRegistry(["tests.ui.no_such_module:gallery"])
    assert _data.served_pipelines(engine) == []
    assert _data.served_spec(engine, "gallery") is None
    assert _data.describe_deployment(engine) == "project test-project · memory://"


def test_a_serverless_checkpoint_request_that_cannot_be_answered_says_why(
    tmp_path: Path,
) -> None:
    engine = make_engine(build())
    start(engine, "gallery", {"workdir": str(tmp_path)}, "run-1")
    state = state_of(engine, "gallery", "run-1")  # started: nothing has run yet
    with pytest.raises(RunControlError, match="step 'fetch' has no committed output"):
        _data.serverless_entries(engine, state, None, "fetch", "output")
    with pytest.raises(RunControlError, match="does not load here"):
        _data.serverless_entries(engine, state, None, "decode", "input")
    drain(engine)
    done = state_of(engine, "gallery", "run-1")
    assert _data.attempt_objects(engine, done)  # the steps' manifests
    done.files_deleted = True
    assert _data.attempt_objects(engine, done) == []


def test_resume_of_a_run_whose_checkpoints_are_gone_is_refused(tmp_path: Path) -> None:
    engine = make_engine(build())
    start(engine, "gallery", {"workdir": str(tmp_path)}, "run-1")
    state = state_of(engine, "gallery", "run-1")
    engine.store.delete(state.params_manifest)
    with pytest.raises(RunControlError, match="has no stored checkpoints left"):
        _data.resume(engine, state, None)


def test_the_latest_manifest_of_a_run_without_one_is_none(tmp_path: Path) -> None:
    store = _data.open_folder(str(tmp_path))
    assert _data.peek_latest_manifest(store, "default", "gallery", "absent") is None
    assert _data.run_folder_prefix("t", "p", "r") == "runs/t/p/r/"


def test_a_folder_scan_skips_stray_files_and_runs_without_a_checkpoint(tmp_path: Path) -> None:
    build(storage=str(tmp_path), run_id="done-1").run({"workdir": str(tmp_path)})
    runs = tmp_path / "runs"
    (runs / "stray-file").write_text("not a tenant")
    (runs / "default" / "gallery" / "half-made").mkdir()  # no checkpoint yet
    found = [
        (t, p, r) for t, p, r, _gen in _data.latest_manifests(_data.open_folder(str(tmp_path)))
    ]
    assert found == [("default", "gallery", "done-1")]
    assert list(_data.latest_manifests(_data.open_folder(str(tmp_path / "empty")))) == []
