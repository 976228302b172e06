"""Checkpoints: incremental writes, validation outcomes and messages, migration."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import orjson
import pytest

from resumable import (
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    Pipeline,
)
from resumable.checkpoint._store import CheckpointStore
from resumable.errors import ConcurrentWriterError, StorageError
from resumable.storage import LocalStore, MemoryStore, ObjectStore

MB = 1024 * 1024


def _noop(context: dict[str, Any]) -> None:
    return None


def steps(*names: str, versions: dict[str, str] | None = None) -> dict[str, Any]:
    """Steps that record their calls in the context and return a marker each."""
    defs: dict[str, Any] = {}
    for name in names:

        def step(context: dict[str, Any], _name: str = name) -> dict[str, Any]:
            return {f"out_{_name}": _name.upper()}

        defs[name] = {"function": step, "version": (versions or {}).get(name, "1")}
    return defs


def kept_run(storage: Any, names: tuple[str, ...] = ("a", "b", "c"), **kw: Any) -> Pipeline:
    pipeline = Pipeline("pipe", steps(*names), storage=storage, cleanup_on_success=False, **kw)
    assert pipeline.run({"seed": 1})["status"] == "completed"
    return pipeline


# -- incremental writes -------------------------------------------------------------------


def test_replacing_one_1mb_value_in_a_60mb_context_writes_at_most_1_2mb() -> None:
    rng = np.random.default_rng(0)
    context = {f"chunk_{i:02d}": rng.integers(0, 255, MB, dtype=np.uint8) for i in range(60)}
    context["crops"] = {
        f"t{i}": [rng.integers(0, 255, (96, 48, 3), dtype=np.uint8)] for i in range(20)
    }
    store = MemoryStore()

    def replace_one(ctx: dict[str, Any]) -> dict[str, Any]:
        return {"chunk_07": rng.integers(0, 255, MB, dtype=np.uint8)}

    pipeline = Pipeline(
        "big",
        {"load": lambda ctx: context, "replace": replace_one, "after": _noop},
        storage=store,
        cleanup_on_success=False,
    )
    seen: list[tuple[str | None, int]] = []
    last_step: list[str | None] = [None]

    def track(event: Any) -> None:
        if event.kind == "step_completed":
            last_step[0] = event.step
        if event.kind == "checkpoint_saved":
            seen.append((last_step[0], event.bytes_written))

    before: dict[str, int] = {}

    def on_event(event: Any) -> None:
        if event.kind == "step_started" and event.step == "replace":
            before["bytes"] = store.stats.bytes_written
        if event.kind == "checkpoint_saved" and last_step[0] == "replace" and "after" not in before:
            before["after"] = store.stats.bytes_written
        track(event)

    result = pipeline.run({}, on_event=on_event)
    assert result["status"] == "completed"
    written = before["after"] - before["bytes"]
    assert written <= 1.2 * MB, f"checkpoint after replacing 1 MB wrote {written} bytes"
    assert written >= MB  # the new value really was written
    unchanged_step = next(b for step, b in seen if step == "after")
    assert unchanged_step == 0  # a step that changes nothing writes no blob


# -- validation outcomes ----------------------------------------------------------------


def test_corrupt_latest_manifest_falls_back_to_the_intact_history_copy() -> None:
    store = MemoryStore()
    pipeline = kept_run(store)
    latest = f"runs/default/pipe/{pipeline.run_guid}/.checkpoint.json"
    store.corrupt(latest, b'{"checkpoint_version": "2.0", "truncat')
    loaded = pipeline.load_checkpoint()
    assert loaded is not None and loaded.manifest.completed_steps == ["a", "b", "c"]


def test_corrupt_manifest_everywhere_starts_fresh_with_the_reason_or_raises_in_strict_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    pipeline = kept_run(store)
    prefix = f"runs/default/pipe/{pipeline.run_guid}/"
    for name in list(store.list(prefix)):
        if name.endswith(".json"):
            document = orjson.loads(store.read(name))
            document["status"] = "tampered"  # the integrity hash no longer matches
            store.corrupt(name, orjson.dumps(document))
    with pytest.raises(CorruptCheckpointError, match="integrity check"):
        Pipeline(
            "pipe", steps("a", "b", "c"), storage=store, run_guid=pipeline.run_guid, strict=True
        ).run(resume_from_checkpoint=True)
    with caplog.at_level(logging.WARNING, logger="resumable"):
        result = Pipeline(
            "pipe", steps("a", "b", "c"), storage=store, run_guid=pipeline.run_guid
        ).run({"seed": 1}, resume_from_checkpoint=True)
    assert result["status"] == "completed"
    assert result["resumed_from_checkpoint"] is False
    assert result["steps_completed"] == ["a", "b", "c"]
    assert any("fails its integrity check" in w for w in result["warnings"])
    assert "starting fresh" in caplog.text


def test_corrupt_blob_is_detected_by_its_hash() -> None:
    store = MemoryStore()
    big = np.arange(100_000, dtype=np.int64)
    pipeline = Pipeline(
        "pipe", {"a": lambda c: {"big": big}, "b": _noop}, storage=store, cleanup_on_success=False
    )
    pipeline.run()
    blob = next(n for n in store.list("") if "/blobs/" in n)
    data = bytearray(store.read(blob))
    data[-1] ^= 0xFF
    store.corrupt(blob, bytes(data))
    with pytest.raises(
        CorruptCheckpointError,
        match=r"blob b3-[0-9a-f]+ does not (match its hash|decompress) \(damaged\)",
    ):
        pipeline.load_checkpoint()
    strict = Pipeline(
        "pipe",
        {"a": lambda c: {"big": big}, "b": _noop},
        storage=store,
        run_guid=pipeline.run_guid,
        strict=True,
    )
    with pytest.raises(CorruptCheckpointError, match="damaged"):
        strict.run(resume_from_checkpoint=True)
    lenient = Pipeline(
        "pipe", {"a": lambda c: {"big": big}, "b": _noop}, storage=store, run_guid=pipeline.run_guid
    )
    result = lenient.run(resume_from_checkpoint=True)
    assert result["status"] == "completed" and result["steps_completed"] == ["a", "b"]
    assert any("damaged" in w for w in result["warnings"])


def test_missing_blob_names_the_blob() -> None:
    store = MemoryStore()
    pipeline = Pipeline(
        "pipe", {"a": lambda c: {"big": np.zeros(100_000)}}, storage=store, cleanup_on_success=False
    )
    pipeline.run()
    for name in list(store.list("")):
        if "/blobs/" in name:
            store.delete(name)
    with pytest.raises(CorruptCheckpointError, match=r"blob b3-[0-9a-f]+ is missing"):
        pipeline.load_checkpoint()


def test_checkpoint_of_another_pipeline_is_incompatible() -> None:
    store = MemoryStore()
    pipeline = kept_run(store)
    checkpoints = CheckpointStore(store, pipeline_name="pipe", run_id=pipeline.run_guid)
    loaded = checkpoints.load_latest()
    assert loaded is not None
    other = Pipeline("other", steps("a", "b", "c"), storage=store)
    with pytest.raises(
        IncompatibleCheckpointError, match="belongs to pipeline 'pipe', not 'other'"
    ):
        checkpoints.plan_resume(loaded.manifest, other.spec)


def test_checkpoint_of_another_run_is_incompatible() -> None:
    store = MemoryStore()
    pipeline = kept_run(store)
    loaded = pipeline.load_checkpoint()
    assert loaded is not None
    elsewhere = CheckpointStore(store, pipeline_name="pipe", run_id="another-run")
    with pytest.raises(
        IncompatibleCheckpointError, match=r"belongs to run '.*', not 'another-run'"
    ):
        elsewhere.plan_resume(loaded.manifest, pipeline.spec)


def test_a_copied_checkpoint_of_another_run_is_not_resumed() -> None:
    store = MemoryStore()
    pipeline = kept_run(store)
    source = f"runs/default/pipe/{pipeline.run_guid}/.checkpoint.json"
    store.write("runs/default/pipe/copy-run/.checkpoint.json", store.read(source))
    result = Pipeline("pipe", steps("a", "b", "c"), storage=store, run_guid="copy-run").run(
        {"seed": 1}, resume_from_checkpoint=True
    )
    assert result["resumed_from_checkpoint"] is False
    assert any(
        f"belongs to run '{pipeline.run_guid}', not 'copy-run'" in w for w in result["warnings"]
    )


def test_a_renamed_step_makes_the_checkpoint_incompatible() -> None:
    store = MemoryStore()
    first = Pipeline("pipe", steps("a", "b", "c"), storage=store, cleanup_on_success=False)
    first.run()
    renamed = steps("a", "b2", "c")
    with pytest.raises(IncompatibleCheckpointError, match="renamed or removed"):
        Pipeline("pipe", renamed, storage=store, run_guid=first.run_guid, strict=True).run(
            resume_from_checkpoint=True
        )
    result = Pipeline("pipe", renamed, storage=store, run_guid=first.run_guid).run(
        resume_from_checkpoint=True
    )
    assert result["status"] == "completed" and result["resumed_from_checkpoint"] is False
    (warning,) = result["warnings"]
    assert (
        "completed step(s) ['b'] no longer exist in pipeline 'pipe' (renamed or removed" in warning
    )


def test_a_changed_step_version_reruns_that_step_and_those_after_it() -> None:
    store = MemoryStore()
    calls: list[str] = []

    def make(version_b: str) -> dict[str, Any]:
        def step(name: str) -> Any:
            def run(context: dict[str, Any]) -> dict[str, Any]:
                calls.append(name)
                return {name: f"{name}-v{version_b if name == 'b' else '1'}"}

            return run

        return {
            "a": {"function": step("a")},
            "b": {"function": step("b"), "version": version_b},
            "c": {"function": step("c")},
            "d": {"function": step("d")},
        }

    first = Pipeline("pipe", make("1"), storage=store, cleanup_on_success=False)
    first.run()
    calls.clear()
    result = Pipeline("pipe", make("2"), storage=store, run_guid=first.run_guid).run(
        resume_from_checkpoint=True
    )
    assert calls == ["b", "c", "d"]
    assert result["steps_skipped"] == ["a"]
    assert result["context"]["b"] == "b-v2"
    assert any("step 'b' changed since the checkpoint" in w for w in result["warnings"])


def test_an_original_1_0_checkpoint_resumes() -> None:
    store = MemoryStore()
    legacy = {
        "pipeline_name": "pipe",
        "run_guid": "legacy-run",
        "run_folder": "process/pipe/run_legacy-run",
        "timestamp": "2025-09-08T12:00:00.000000",
        "completed_steps": ["a", "b"],
        "context": {"seed": 1, "out_a": "A", "out_b": "B", "nested": {"$r": "not a tag"}},
        "steps_summary": {},
        "checkpoint_version": "1.0",
    }
    store.write("process/pipe/run_legacy-run/.checkpoint.json", orjson.dumps(legacy))
    calls: list[str] = []
    defs = steps("a", "b", "c")
    inner = defs["c"]["function"]
    defs["c"]["function"] = lambda ctx: (calls.append("c"), inner(ctx))[1]
    defs["a"]["function"] = lambda ctx: calls.append("a")
    result = Pipeline(
        "pipe", defs, storage=store, run_guid="legacy-run", cleanup_on_success=False
    ).run(resume_from_checkpoint=True)
    assert result["status"] == "completed" and result["resumed_from_checkpoint"] is True
    assert calls == ["c"]
    assert result["context"]["nested"] == {"$r": "not a tag"}
    migrated = Pipeline("pipe", defs, storage=store, run_guid="legacy-run").load_checkpoint()
    assert migrated is not None and migrated.manifest.checkpoint_version == "2.0"
    assert migrated.context["nested"] == {"$r": "not a tag"}


def test_an_unknown_checkpoint_version_is_named() -> None:
    store = MemoryStore()
    store.write(
        "runs/default/pipe/r1/.checkpoint.json",
        orjson.dumps({"checkpoint_version": "9.9", "pipeline_name": "pipe"}),
    )
    with pytest.raises(CorruptCheckpointError, match=r"checkpoint_version '9\.9'"):
        Pipeline("pipe", steps("a"), storage=store, run_guid="r1").load_checkpoint()


def test_two_processes_writing_one_run_are_detected(tmp_path: Any) -> None:
    store = LocalStore(tmp_path)
    pipeline = kept_run(store)
    spec = pipeline.spec
    mine = CheckpointStore(store, pipeline_name="pipe", run_id=pipeline.run_guid)
    theirs = CheckpointStore(store, pipeline_name="pipe", run_id=pipeline.run_guid)
    mine.load_latest()
    theirs.load_latest()
    theirs.save({"x": 1}, spec=spec, completed_steps=["a"], steps_summary={})
    with pytest.raises(ConcurrentWriterError, match="two processes are running this run"):
        mine.save({"x": 2}, spec=spec, completed_steps=["a"], steps_summary={})


class LostResponses:
    """A store whose writes all arrive but whose answers are lost, so each write is sent
    again, as google-cloud-storage retries a conditional upload."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    def write(self, name: str, data: Any, *, if_generation_match: int | None = None) -> int:
        self.inner.write(name, data, if_generation_match=if_generation_match)
        return self.inner.write(name, data, if_generation_match=if_generation_match)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.inner, attribute)


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_a_checkpoint_write_whose_answer_was_lost_is_not_another_process(
    kind: str, tmp_path: Any
) -> None:
    inner: ObjectStore = MemoryStore() if kind == "memory" else LocalStore(tmp_path)
    kept_run(LostResponses(inner), run_id="r1", fail_on_checkpoint_error=True)
    loaded = Pipeline("pipe", steps("a", "b", "c"), storage=inner, run_id="r1").load_checkpoint()
    assert loaded is not None and loaded.manifest.completed_steps == ["a", "b", "c"]


def test_history_keeps_every_checkpoint_and_cleanup_removes_the_run(tmp_path: Any) -> None:
    pipeline = kept_run(LocalStore(tmp_path))
    checkpoints = CheckpointStore(
        LocalStore(tmp_path), pipeline_name="pipe", run_id=pipeline.run_guid
    )
    assert checkpoints.history() == [1, 2, 3, 4]
    assert checkpoints.load(2).manifest.completed_steps == ["a", "b"]
    done = Pipeline("pipe", steps("a"), storage=tmp_path).run()
    assert done["status"] == "completed"
    assert not (tmp_path / "runs" / "default" / "pipe" / done["run_id"]).exists()


def test_every_entry_lists_the_blobs_it_refers_to() -> None:
    from resumable.checkpoint._blobs import BlobStore
    from resumable.checkpoint._segments import encode_context, entry_addresses

    store = MemoryStore()
    frames = [np.full((300, 300), i, dtype=np.uint8) for i in range(3)]  # 90 kB: own blobs
    entries = encode_context({"frames": frames}, BlobStore(store, "b/"))
    assert "v" in entries["frames"]  # small enough to sit inline in the manifest
    assert sorted(entry_addresses(entries["frames"])) == sorted(
        "b3-" + name.split("b3-")[1] for name in store.list("b/")
    )


def test_a_folder_where_the_latest_manifest_belongs_is_a_storage_error(tmp_path: Any) -> None:
    (tmp_path / "runs/default/pipe/r1/.checkpoint.json").mkdir(parents=True)
    with pytest.raises(StorageError, match=r"is a folder where object .*\.checkpoint\.json"):
        Pipeline("pipe", steps("a"), storage=tmp_path, run_id="r1").run(resume_from_checkpoint=True)
