"""The UI's source of in-process runs (ui._folder.FolderRuns) over each kind of store —
a folder, a Cloud Storage bucket (fake-gcs-server), memory — without the web layer: what
the runs list holds and how it filters, pages and refreshes; what a damaged, missing or
0.1.0 checkpoint shows; which requests are refused, each with its reason."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from resumable import Pipeline
from resumable.errors import RunControlError
from resumable.ui import _folder
from resumable.ui._folder import FolderRuns
from resumable.ui._models import RunFilter, RunKey
from tests.ui.pipelines import build, fetch

COMPAT = Path(__file__).parent.parent / "fixtures" / "compat-0.1.0" / "inprocess"
GALLERY = "tests/ui/pipelines.py:gallery"


def _runs(storage: str, workdir: Path) -> None:
    build(storage=storage, run_id="done-1").run({"workdir": str(workdir)})
    build(storage=storage, run_id="done-2").run({"workdir": str(workdir)})
    faults = {"render": {"fail": True}}
    build(storage=storage, run_id="failed-1").run({"workdir": str(workdir), "faults": faults})


def _fresh(source: FolderRuns) -> FolderRuns:
    source._refreshed = float("-inf")  # as if REFRESH_SECONDS had passed
    return source


def _ids(source: FolderRuns, wanted: RunFilter | None = None) -> list[str]:
    listed = _fresh(source).list_runs(wanted or RunFilter(), cursor=None, limit=50)
    return [row.key.run_id for row in listed.rows]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    _runs(str(store), tmp_path)
    return store


def test_the_list_filters_by_pipeline_status_and_id_prefix(folder: Path) -> None:
    shutil.copytree(COMPAT, folder, dirs_exist_ok=True)  # a run of another pipeline
    source = FolderRuns(str(folder))
    assert source.pipelines() == ["compat", "gallery"]
    everything = source.list_runs(RunFilter(), cursor=None, limit=50)
    assert {r.key.run_id for r in everything.rows} == {"done-1", "done-2", "failed-1", "compat-1"}
    gallery = source.list_runs(RunFilter(pipeline="gallery"), cursor=None, limit=50)
    assert gallery.counts["completed"] == 2 and gallery.counts["error"] == 1
    assert gallery.counts["running"] == 0
    assert _ids(source, RunFilter(pipeline="compat")) == ["compat-1"]
    assert sorted(_ids(source, RunFilter(status="completed"))) == ["done-1", "done-2"]
    assert _ids(source, RunFilter(search="done")) == ["done-1", "done-2"]  # by id
    assert _ids(source, RunFilter(search="done", status="error")) == []
    failed = next(r for r in everything.rows if r.key.run_id == "failed-1")
    assert failed.status == "error" and "render: the frame is corrupt" in (failed.error or "")
    assert failed.finished_at is not None and failed.steps_completed < failed.steps_total


def test_the_list_pages_newest_first(folder: Path) -> None:
    source = FolderRuns(str(folder))
    seen, cursor = [], None
    while True:
        page = source.list_runs(RunFilter(pipeline="gallery"), cursor=cursor, limit=2)
        seen += [r.key.run_id for r in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["failed-1", "done-2", "done-1"]  # the order they were created in, reversed
    assert len(page.rows) == 1


def test_a_damaged_checkpoint_is_a_row_saying_so_and_a_deleted_run_leaves_the_list(
    folder: Path,
) -> None:
    source = FolderRuns(str(folder))
    assert "done-2" in _ids(source)
    latest = folder / "runs" / "default" / "gallery" / "done-2" / ".checkpoint.json"
    latest.write_text("{ not json")
    row = next(r for r in _fresh(source).list_runs(RunFilter(), cursor=None, limit=9).rows
               if r.key.run_id == "done-2")  # fmt: skip
    assert row.status == "error" and "unreadable checkpoint" in (row.error or "")
    shutil.rmtree(latest.parent)
    assert "done-2" not in _ids(source)
    assert source.run(RunKey("default", "gallery", "done-2")) is None


def test_a_0_1_0_run_shows_its_steps_but_keeps_no_per_step_values(tmp_path: Path) -> None:
    shutil.copytree(COMPAT, tmp_path / "old")
    source = FolderRuns(str(tmp_path / "old"))
    key = RunKey("default", "compat", "compat-1")
    view = source.run(key)
    assert view is not None and view.status == "running"
    assert [s.name for s in view.steps] == ["load", "detect", "report"]
    assert [s.status for s in view.steps] == ["completed", "running", "not_started"]
    assert not view.graph_known
    assert any("stays running until it is resumed" in note for note in view.notes)
    with pytest.raises(RunControlError, match="written by an earlier release"):
        source.checkpoint(key, "load", "output")


def test_a_pipeline_whose_steps_do_not_match_the_run_draws_no_graph(folder: Path) -> None:
    source = FolderRuns(str(folder), [GALLERY])
    key = RunKey("default", "gallery", "done-1")
    view = source.run(key)
    assert view is not None and view.graph_known
    other = FolderRuns(str(folder), [GALLERY])
    # another version of the pipeline, without most of the run's completed steps
    other.specs["gallery"] = Pipeline(
        "gallery", {"fetch": {"function": fetch}}, storage="memory://unused"
    ).spec
    mismatched = other.run(key)
    assert mismatched is not None and not mismatched.graph_known
    assert all(step.dependencies == [] for step in mismatched.steps)


def test_the_checkpoint_browser_refuses_what_it_cannot_show_with_the_reason(
    folder: Path,
) -> None:
    source = FolderRuns(str(folder), [GALLERY])
    failed = RunKey("default", "gallery", "failed-1")
    with pytest.raises(RunControlError, match="step 'render' has no committed output"):
        source.checkpoint(failed, "render", "output")
    with pytest.raises(RunControlError, match="has no checkpoint"):
        source.checkpoint(RunKey("default", "gallery", "absent"), "fetch", "output")
    with pytest.raises(RunControlError, match="built from the step graph"):
        source.checkpoint(failed, "nosuchstep", "input")
    with pytest.raises(KeyError):
        source.value(RunKey("default", "gallery", "done-1"), "fetch", "output", "absent")
    assert source.value(RunKey("default", "gallery", "done-1"), "fetch", "output", "size") == [
        48,
        64,
    ]
    assert source.traceback(failed, "render") is None


def test_actions_on_in_process_runs_are_refused_saying_how_to_do_them(folder: Path) -> None:
    source = FolderRuns(str(folder))
    key = RunKey("default", "gallery", "failed-1")
    with pytest.raises(RunControlError, match="cancelled by the process running them"):
        source.cancel(key)
    with pytest.raises(RunControlError, match="resumable run --resume"):
        source.resume(key, None)
    with pytest.raises(RunControlError, match="started with `resumable run`"):
        source.start("gallery", {}, None)


def test_unreadable_times_are_no_times() -> None:
    assert _folder._epoch(None) is None and _folder._epoch("") is None
    assert _folder._epoch("yesterday") is None
    assert _folder._epoch("2026-01-01T00:00:00+00:00") == 1767225600.0


def test_runs_in_memory_storage_are_listed(tmp_path: Path) -> None:
    storage = f"memory://ui-{uuid.uuid4().hex[:8]}"
    _runs(storage, tmp_path)
    source = FolderRuns(storage)
    assert sorted(_ids(source)) == ["done-1", "done-2", "failed-1"]


def test_runs_in_a_bucket_are_listed_and_reread_only_when_they_change(
    gcs_bucket: str, tmp_path: Path
) -> None:
    storage = f"gs://{gcs_bucket}/inprocess"
    build(storage=storage, run_id="done-1").run({"workdir": str(tmp_path)})
    faults = {"render": {"fail_first": True}}
    build(storage=storage, run_id="retry-1").run({"workdir": str(tmp_path), "faults": faults})
    source = FolderRuns(storage)
    listed = source.list_runs(RunFilter(), cursor=None, limit=9).rows
    assert {(r.key.run_id, r.status) for r in listed} == {
        ("done-1", "completed"),
        ("retry-1", "error"),
    }
    generations = {k.run_id: g for k, (g, _row) in source._index.items()}
    assert all(isinstance(g, int) for g in generations.values())
    rows_before = {k.run_id: row for k, (_g, row) in source._index.items()}

    # resumed, retry-1 completes: its latest manifest is rewritten (a new generation)
    build(storage=storage, run_id="retry-1").run(
        {"workdir": str(tmp_path), "faults": faults}, resume_from_checkpoint=True
    )
    after = {
        r.key.run_id: r for r in _fresh(source).list_runs(RunFilter(), cursor=None, limit=9).rows
    }
    assert after["retry-1"].status == "completed"
    assert after["done-1"] is rows_before["done-1"]  # unchanged generation: not read again
