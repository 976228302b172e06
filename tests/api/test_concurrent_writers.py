"""Two processes running one run id on Cloud Storage (fake-gcs-server): the generation
preconditions detect the second writer instead of letting the two overwrite each other.
``Pipeline.run`` raises :class:`ConcurrentWriterError`; ``resumable run`` ends the run
``error`` with exit 1 and says why; the other process's checkpoint stays intact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from resumable import Pipeline
from resumable.errors import ConcurrentWriterError
from tests.cli.test_cli import PIPELINES, _cli, _start, _steps_run, _wait_until_running


def _pipeline(storage: str, calls: list[str], second: Any = None) -> Pipeline:
    def step(name: str) -> Any:
        def run(context: dict[str, Any]) -> dict[str, Any]:
            calls.append(name)
            return {name: f"{context['who']}:{name}"}

        return run

    return Pipeline(
        "dup",
        {"a": step("a"), "b": second or step("b"), "c": step("c")},
        storage=storage,
        run_id="dup-1",
        cleanup_on_success=False,
    )


def test_run_raises_concurrent_writer_error_when_another_process_wrote_the_run(
    gcs_bucket: str,
) -> None:
    storage = f"gs://{gcs_bucket}/pipelines"
    calls: list[str] = []
    other: dict[str, Any] = {}

    def b_while_another_process_runs_the_run(context: dict[str, Any]) -> dict[str, Any]:
        calls.append("b")
        # Meanwhile another process (its own Pipeline and checkpoint store) starts the
        # same run id from scratch and completes it.
        other.update(_pipeline(storage, []).run({"who": "other"}))
        return {"b": "owner:b"}

    owner = _pipeline(storage, calls, second=b_while_another_process_runs_the_run)
    with pytest.raises(ConcurrentWriterError, match="two processes are running this run"):
        owner.run({"who": "owner"})

    assert other["status"] == "completed"
    assert calls == ["a", "b"]  # nothing ran after the conflict was detected
    kept = _pipeline(storage, []).load_checkpoint()
    assert kept is not None and kept.manifest.status == "completed"
    assert {k: kept.context[k] for k in "abc"} == {"a": "other:a", "b": "other:b", "c": "other:c"}


def test_resumable_run_reports_a_second_process_on_its_run_with_exit_1(
    gcs_bucket: str, tmp_path: Path
) -> None:
    (tmp_path / "pipelines.py").write_text(PIPELINES)
    storage = f"gs://{gcs_bucket}/cli"
    gate = tmp_path / "gate"
    run = ["pipelines.py:instance", "--storage", storage, "--run-id", "dup-2", "--json"]
    owner = _start(tmp_path, *run, "--param", f"gate={gate}")
    _wait_until_running(tmp_path, "wait_for_gate")

    other = _cli(tmp_path, *run, "--keep")  # no gate: runs straight through
    assert other.returncode == 0, other.stderr
    gate.touch()
    out, err = owner.communicate(timeout=60)

    assert owner.returncode == 1, err
    result = json.loads(out)
    assert result["status"] == "error"
    assert "ConcurrentWriterError" in result["errors"][0]
    assert "two processes are running this run" in result["errors"][0]
    assert _steps_run(tmp_path) == ["first", "wait_for_gate", "first", "wait_for_gate", "last"]
    kept = json.loads(_cli(tmp_path, *run, "--resume").stdout)  # the other's checkpoint
    assert kept["resumed_from_checkpoint"] is True
    assert kept["steps_skipped"] == ["first", "wait_for_gate", "last"]
