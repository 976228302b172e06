"""README claims about the in-process library that no other test pins: tenants, retry
backoff, ``StepError(retryable=False)``, ``compression_level``, the default storage
location, the error hierarchy, and ``run_guid=""``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import resumable
from resumable import InvalidIdError, Pipeline, ResumableError, RetryableError, StepError
from resumable.storage import MemoryStore

# -- tenants -----------------------------------------------------------------------------


def _tenant_pipeline(
    store: MemoryStore, tenant: str, calls: list[str], *, ready: bool = True
) -> Pipeline:
    def load(context: dict[str, Any]) -> dict[str, Any]:
        calls.append(f"{tenant}:load")
        return {"owner": context["owner"], "frames": np.full(4096, len(tenant), dtype=np.uint8)}

    def check(context: dict[str, Any]) -> dict[str, Any]:
        calls.append(f"{tenant}:check")
        if not ready:
            raise resumable.NonRetryableError(f"{tenant} is not ready")
        return {"checked": context["owner"]}

    return Pipeline(
        "shared",
        {"load": load, "check": check},
        storage=store,
        run_id="nightly",
        tenant_id=tenant,
        cleanup_on_success=False,
    )


def test_a_run_lives_under_runs_tenant_pipeline_run_id() -> None:
    store = MemoryStore("memory://layout")
    pipeline = _tenant_pipeline(store, "acme", [])
    assert pipeline.run({"owner": "acme"})["status"] == "completed"

    prefix = "runs/acme/shared/nightly/"
    assert pipeline.run_folder == "memory://layout/" + prefix.rstrip("/")
    names = list(store.list(""))
    assert names and all(name.startswith(prefix) for name in names)
    assert prefix + ".checkpoint.json" in names
    assert any(name.startswith(prefix + "checkpoints/") for name in names)
    assert any(name.startswith(prefix + "blobs/b3-") for name in names)
    default = Pipeline("shared", {"a": len}, storage=store, run_id="nightly")
    assert default.run_folder.endswith("/runs/default/shared/nightly")


def test_two_tenants_with_the_same_run_id_are_kept_apart() -> None:
    store = MemoryStore()
    calls: list[str] = []
    acme = _tenant_pipeline(store, "acme", calls, ready=False).run({"owner": "acme"})
    globex = _tenant_pipeline(store, "globex", calls).run({"owner": "globex"})
    assert (acme["status"], globex["status"]) == ("error", "completed")

    # acme's resume sees acme's checkpoint only: its own load, its own failure to fix.
    calls.clear()
    resumed = _tenant_pipeline(store, "acme", calls).run(resume_from_checkpoint=True)
    assert resumed["status"] == "completed"
    assert resumed["steps_skipped"] == ["load"] and calls == ["acme:check"]
    assert resumed["context"]["frames"].tolist() == [4] * 4096
    assert resumed["context"]["checked"] == "acme"
    untouched = _tenant_pipeline(store, "globex", []).load_checkpoint()
    assert untouched is not None and untouched.manifest.status == "completed"
    assert untouched.context["owner"] == "globex"
    assert untouched.context["frames"].tolist() == [6] * 4096


# -- retries -------------------------------------------------------------------------------


class RecordingStopEvent(threading.Event):
    """A stop event whose waits return at once, recording how long they would have been."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()


def _failing(times: int, error: Exception) -> tuple[Any, list[int]]:
    calls: list[int] = []

    def step(context: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return {"done": len(calls)}

    return step, calls


def _run_recording_waits(pipeline: Pipeline) -> tuple[dict[str, Any], list[float | None]]:
    stop = RecordingStopEvent()
    pipeline._stop = stop  # the runner waits out retry delays on the run's stop event
    return pipeline.run(), stop.waits


def test_retry_delays_start_at_retry_backoff_and_double_up_to_60_seconds() -> None:
    step, calls = _failing(8, RetryableError("busy"))
    pipeline = Pipeline(
        "p", {"s": {"function": step, "retries": 8}}, storage=MemoryStore(), retry_backoff=4
    )
    result, waits = _run_recording_waits(pipeline)
    assert result["status"] == "completed"
    assert len(calls) == 9
    assert waits == [4, 8, 16, 32, 60, 60, 60, 60]


def test_the_default_retry_backoff_is_one_second() -> None:
    step, _calls = _failing(3, ValueError("any exception is retryable"))
    pipeline = Pipeline("p", {"s": {"function": step, "retries": 3}}, storage=MemoryStore())
    result, waits = _run_recording_waits(pipeline)
    assert result["status"] == "completed"
    assert waits == [1, 2, 4]


def test_a_step_error_not_retryable_fails_the_step_and_the_run_at_once() -> None:
    step, calls = _failing(10, StepError("the input is unusable", retryable=False))
    after: list[str] = []
    pipeline = Pipeline(
        "p",
        {"s": {"function": step, "retries": 5}, "after": lambda c: after.append("ran")},
        storage=MemoryStore(),
    )
    result, waits = _run_recording_waits(pipeline)
    assert result["status"] == "error"
    assert len(calls) == 1 and waits == [] and after == []
    assert result["steps_failed"] == ["s"]
    assert result["steps"]["s"]["attempts"] == 1
    assert "StepError: the input is unusable" in result["errors"][0]


def test_a_step_error_is_retryable_by_default() -> None:
    step, calls = _failing(2, StepError("flaky"))
    pipeline = Pipeline("p", {"s": {"function": step, "retries": 2}}, storage=MemoryStore())
    result, waits = _run_recording_waits(pipeline)
    assert result["status"] == "completed"
    assert len(calls) == 3 and len(waits) == 2


# -- compression -----------------------------------------------------------------------------


def _blob_bytes(level: int) -> int:
    store = MemoryStore()
    frames = np.tile(np.arange(256, dtype=np.uint8), 4096)  # 1 MiB, very compressible
    Pipeline(
        "p",
        {"make": lambda c: {"frames": frames}},
        storage=store,
        cleanup_on_success=False,
        compression_level=level,
    ).run()
    return sum(len(store.read(name)) for name in store.list("") if "/blobs/" in name)


def test_compression_level_0_stores_values_raw_and_9_compresses_them() -> None:
    raw, compressed = _blob_bytes(0), _blob_bytes(9)
    assert raw >= 1024 * 1024
    assert compressed * 50 < raw


# -- the default storage location ----------------------------------------------------------


def _checkpoint_files(root: Path) -> list[Path]:
    return sorted(root.glob("runs/default/where/*/.checkpoint.json"))


def test_storage_defaults_to_dot_resumable_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESUMABLE_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    Pipeline("where", {"a": lambda c: {"a": 1}}, cleanup_on_success=False).run()
    assert len(_checkpoint_files(tmp_path / ".resumable")) == 1


def test_storage_defaults_to_resumable_storage_when_it_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESUMABLE_STORAGE", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    Pipeline("where", {"a": lambda c: {"a": 1}}, cleanup_on_success=False).run()
    assert len(_checkpoint_files(tmp_path / "elsewhere")) == 1
    assert not (tmp_path / ".resumable").exists()


# -- the error hierarchy -------------------------------------------------------------------

# Exception classes of the package that are not errors a caller can see, and why.
NOT_USER_ERRORS = {
    # Signals inside the decoders, caught where they are raised: a malformed value or
    # segment becomes a CorruptCheckpointError, a storage failure passes through as it was.
    "resumable.checkpoint._segments._MalformedSegment",
    "resumable.checkpoint._decoder._Malformed",
    "resumable.checkpoint._decoder._SourceFailure",
    # The runner's signal that a step yielded to a stop request, caught in the runner.
    "resumable.local._calls.StepStopped",
    # The web UI's refusal of a request (bad Host, cross-site POST): an HTTP answer, not
    # an error of the library.
    "resumable.ui._security.RequestRefused",
}


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    modules = [resumable.__name__]
    modules += [
        m.name
        for m in pkgutil.walk_packages(resumable.__path__, prefix=resumable.__name__ + ".")
        if not m.name.endswith(".__main__")  # running a command is not importing it
    ]
    for name in modules:
        module = importlib.import_module(name)
        for _attr, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                found[f"{name}.{value.__qualname__}"] = value
    return found


def test_every_library_error_derives_from_resumable_error() -> None:
    classes = _exception_classes()
    assert len(classes) >= 20  # the walk reached every module, subpackages included
    assert "resumable.errors.DeployError" in classes
    assert set(classes) >= NOT_USER_ERRORS  # the exemptions still name real classes
    outside = sorted(
        name
        for name, cls in classes.items()
        if name not in NOT_USER_ERRORS and not issubclass(cls, ResumableError)
    )
    assert outside == []


# -- run ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["run_guid", "run_id"])
def test_an_empty_run_id_is_refused_not_replaced_by_a_new_one(alias: str) -> None:
    with pytest.raises(InvalidIdError, match="not a safe id"):
        Pipeline("p", {"a": len}, storage=MemoryStore(), **{alias: ""})
