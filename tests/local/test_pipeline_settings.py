"""The in-process Pipeline's settings (local._pipeline): wrong ones are refused before
anything runs, replace() copies with new settings and the same steps, and run(run_guid=)
continues another run's checkpoint from the same object."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from resumable import Pipeline
from resumable._log import logger
from resumable.errors import InvalidIdError
from tests.support.faulty_stores import DeleteFailsOnce


def step(context: dict[str, Any]) -> dict[str, Any]:
    return {"n": context.get("n", 0) + 1}


def make(storage: Any, **settings: Any) -> Pipeline:
    return Pipeline("settings", {"a": {"function": step}}, storage=storage, **settings)


def test_max_workers_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_workers must be at least 1"):
        make(tmp_path, max_workers=0)
    with pytest.raises(ValueError, match="max_workers must be at least 1"):
        make(tmp_path).replace(max_workers=0)


def test_replace_refuses_unknown_settings_and_keeps_the_steps(tmp_path: Path) -> None:
    pipeline = make(tmp_path / "a", run_id="r-1")
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['colour'\]"):
        pipeline.replace(colour="blue")
    copy = pipeline.replace(
        storage=tmp_path / "b", run_id="r-2", tenant_id="acme", max_workers=2, verbose=False
    )
    assert copy.fingerprint == pipeline.fingerprint
    assert (copy.run_id, copy.tenant_id, copy.options.max_workers) == ("r-2", "acme", 2)
    assert (pipeline.run_id, pipeline.tenant_id, pipeline.options.max_workers) == (
        "r-1",
        "default",
        1,
    )
    assert copy.run_folder.endswith("runs/acme/settings/r-2")
    with pytest.raises(InvalidIdError):
        pipeline.replace(tenant_id="a/b")


def test_run_with_another_run_guid_continues_that_runs_checkpoint(tmp_path: Path) -> None:
    pipeline = make(tmp_path, run_id="first", cleanup_on_success=False)
    assert pipeline.run({"n": 1})["context"]["n"] == 2
    other = make(tmp_path, run_id="second", cleanup_on_success=False)
    assert other.run({"n": 10})["context"]["n"] == 11
    resumed = pipeline.run(resume_from_checkpoint=True, run_guid="second")
    assert pipeline.run_id == "second"
    assert resumed["steps_skipped"] == ["a"] and resumed["context"]["n"] == 11
    with pytest.raises(InvalidIdError):
        pipeline.run(run_guid="../escape")


def test_verbose_logs_at_debug_level(tmp_path: Path) -> None:
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    try:
        make(tmp_path, verbose=True)
        assert logger.level == logging.DEBUG
        assert any(getattr(h, "_resumable", False) for h in logger.handlers)
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_failed_cleanup_after_success_keeps_the_run_resumable_and_is_retried() -> None:
    store = DeleteFailsOnce()
    records = _Records()
    logger.addHandler(records)  # on the library's logger: whatever its propagation
    try:
        done = make(store, run_id="r-1").run({"n": 1})
    finally:
        logger.removeHandler(records)
    assert done["status"] == "completed" and done["context"]["n"] == 2
    assert any("cleanup of run r-1 failed: 503 backend error" in line for line in records.lines)
    assert list(store.list("runs/"))  # kept
    again = make(store, run_id="r-1").run(resume_from_checkpoint=True)
    assert again["status"] == "completed" and again["steps_skipped"] == ["a"]
    assert again["context"]["n"] == 2
    assert list(store.list("runs/")) == []  # the cleanup, retried, went through
