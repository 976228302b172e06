"""README claims about the serverless commands on an in-memory deployment: ``resume``
refused (exit 2) for a running run and for a run of another pipeline version; exit 1 for
a damaged checkpoint and for a failed service; ``cleanup_on_success`` deleting a
completed run's objects."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core.exceptions import ServiceUnavailable

from resumable import Pipeline
from resumable.serverless._run_state import RunState
from resumable.status import RunStatus, StepStatus
from tests.cli import test_cli_cloud
from tests.cli.test_cli_cloud import (
    Deployment,
    cli,
    completed_run,
    failed_run,
    lin_pipeline,
)
from tests.serverless_fakes import (
    drain,
    make_engine,
    published,
    start,
    state_of,
    take_messages,
)

deployment = test_cli_cloud.deployment  # the fixture: an in-memory deployment of `lin`

# -- resume refused ------------------------------------------------------------------------


def test_resume_of_a_run_with_a_step_running_exits_2_and_changes_nothing(
    deployment: Deployment,
) -> None:
    seen: list[tuple[Any, RunState]] = []

    def resume_while_detect_runs() -> None:
        before = state_of(deployment.engine, "lin")
        seen.append((cli("resume", "run-1"), before))

    deployment.hooks["detect"] = resume_while_detect_runs
    start(deployment.engine, "lin", {"n": 3}, run_id="run-1")
    drain(deployment.engine, limit=2)  # load, then detect (which calls resume)

    [(result, before)] = seen
    assert result.exit_code == 2
    assert "run 'run-1' has a step running; cancel it first or wait" in result.stderr
    assert result.stdout == ""
    after = state_of(deployment.engine, "lin")
    assert after.steps["detect"].status == StepStatus.COMPLETED
    assert after.steps["detect"].attempt == before.steps["detect"].attempt == 1
    assert [m.step for m in published(deployment.engine)] == ["report"]  # only the run's own
    drain(deployment.engine)
    assert deployment.ran() == {"load": 1, "detect": 1, "report": 1}


def test_resume_by_another_version_of_the_pipeline_exits_2_and_changes_nothing(
    deployment: Deployment,
) -> None:
    failed_run(deployment)
    before = state_of(deployment.engine, "lin").model_dump()
    steps = lin_pipeline(deployment).step_definitions
    steps["detect"] = {**steps["detect"], "version": "2"}
    changed = Pipeline("lin", steps, storage="memory://unused")
    deployment.engine.registry.register(changed)

    result = cli("resume", "run-1")
    assert result.exit_code == 2
    assert "was started by another version of pipeline 'lin'" in result.stderr
    assert state_of(deployment.engine, "lin").model_dump() == before
    assert take_messages(deployment.engine) == []


# -- exit 1 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "damaged"),
    [
        (["checkpoint", "show", "run-1"], "params"),
        (["checkpoint", "show", "run-1", "--step", "report"], "detect"),
        (["replay", "run-1", "report"], "detect"),
    ],
)
def test_a_damaged_checkpoint_exits_1_saying_so(
    deployment: Deployment, command: list[str], damaged: str
) -> None:
    completed_run(deployment)
    state = state_of(deployment.engine, "lin")
    name = state.params_manifest if damaged == "params" else state.steps[damaged].manifest
    assert name is not None
    store: Any = deployment.engine.store
    store.corrupt(name, store.read(name)[:-20] + b"garbage")
    calls_before = list(deployment.calls)

    result = cli(*command)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: the run's checkpoint cannot be used: ")
    assert name.rsplit("/", 1)[-1] in result.stderr  # says which object
    assert deployment.calls == calls_before  # a replay does not run the step on damaged input


@pytest.mark.parametrize("command", [["status", "run-1"], ["cancel", "run-1"], ["list"]])
def test_a_failed_service_exits_1_saying_which_error(
    deployment: Deployment, command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    completed_run(deployment)

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise ServiceUnavailable("firestore is down")

    monkeypatch.setattr(deployment.engine.runs, "get", unavailable)
    monkeypatch.setattr(deployment.engine.runs, "query", unavailable)
    result = cli(*command)
    assert result.exit_code == 1
    assert "error: the cloud service failed: ServiceUnavailable: 503 firestore is down" in (
        result.stderr
    )


# -- cleanup_on_success ---------------------------------------------------------------------


def _cleaning(name: str, fail_in: str | None = None) -> Pipeline:
    def step(label: str) -> Any:
        def run(context: dict[str, Any]) -> dict[str, Any]:
            if label == fail_in:
                raise ValueError(f"{label} failed")
            return {label: list(range(2000))}  # big enough for a blob

        return run

    return Pipeline(
        name,
        {s: {"function": step(s), "retries": 0} for s in ("a", "b")},
        storage="memory://unused",
    )


def test_a_completed_serverless_run_deletes_its_objects() -> None:
    engine = make_engine(_cleaning("tidy"), _cleaning("broken", fail_in="b"))
    start(engine, "tidy", {"p": 1}, run_id="r-ok")
    start(engine, "broken", {"p": 1}, run_id="r-bad")
    drain(engine)

    done, failed = state_of(engine, "tidy", "r-ok"), state_of(engine, "broken", "r-bad")
    assert (done.status, failed.status) == (RunStatus.COMPLETED, RunStatus.ERROR)
    assert list(engine.store.list("runs/default/tidy/r-ok/")) == []
    kept = list(engine.store.list("runs/default/broken/r-bad/"))
    assert any("/blobs/" in n for n in kept) and any("/steps/a/" in n for n in kept)
    assert failed.params_manifest in kept
