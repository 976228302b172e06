"""The serverless commands (``start``, ``status``, ``watch``, ``list``, ``cancel``,
``resume``, ``checkpoint show``, ``replay``, ``dev down``) on an in-memory deployment:
``engine_from_env`` is replaced by an engine on in-memory services, whose published step
messages the tests deliver with ``drain``."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

from resumable import NonRetryableError, Pipeline
from resumable.cli import _deployment as cli_cloud
from resumable.cli import _watch as cli_watch
from resumable.cli._app import app
from resumable.cli._dev import describe_stack
from resumable.cli._views import STATUS_LOOK
from resumable.errors import RunControlError
from resumable.serverless._control import start_run
from resumable.serverless._engine import Engine
from resumable.serverless._messages import parse_start
from resumable.serverless._publisher import MemoryPublisher
from resumable.serverless._replay import load_outputs
from resumable.serverless._run_state import Decision
from resumable.serverless._settings import Settings
from resumable.status import RunStatus, StepStatus
from tests.serverless_fakes import drain, make_engine, start, state_of, take_messages

STEPS = ("load", "detect", "report")  # graph order; not alphabetical on purpose


@dataclass
class Deployment:
    """An in-memory deployment of the pipeline ``lin`` that the CLI talks to."""

    engine: Engine
    calls: list[str] = field(default_factory=list)
    failures: dict[str, Exception] = field(default_factory=dict)  # raised once each
    hooks: dict[str, Callable[[], None]] = field(default_factory=dict)  # run inside a step

    def ran(self) -> Counter[str]:
        return Counter(self.calls)

    @property
    def messages(self) -> MemoryPublisher:
        assert isinstance(self.engine.publisher, MemoryPublisher)
        return self.engine.publisher


def lin_pipeline(deployment: Deployment) -> Pipeline:
    def step(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def run(context: dict[str, Any]) -> dict[str, Any]:
            deployment.calls.append(name)
            if name in deployment.hooks:
                deployment.hooks[name]()
            if name in deployment.failures:
                raise deployment.failures.pop(name)
            count = len(deployment.calls)
            return {name: np.full(4, count, dtype=np.int16), "last": name}

        run.__name__ = name
        return run

    return Pipeline(
        "lin",
        {name: {"function": step(name)} for name in STEPS},
        storage="memory://unused",
        cleanup_on_success=False,
    )


@pytest.fixture
def deployment(monkeypatch: pytest.MonkeyPatch) -> Deployment:
    deployment = Deployment(engine=make_engine())
    deployment.engine.registry.register(lin_pipeline(deployment))
    monkeypatch.setattr(cli_cloud, "engine_from_env", lambda: deployment.engine)
    return deployment


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def completed_run(deployment: Deployment, run_id: str = "run-1", **params: Any) -> None:
    start(deployment.engine, "lin", {"n": 3, **params}, run_id=run_id)
    drain(deployment.engine)
    assert state_of(deployment.engine, "lin", run_id).status == RunStatus.COMPLETED


def failed_run(deployment: Deployment, step: str = "detect", run_id: str = "run-1") -> None:
    deployment.failures[step] = NonRetryableError(f"{step}: the input is invalid")
    start(deployment.engine, "lin", {"n": 3}, run_id=run_id)
    drain(deployment.engine)
    assert state_of(deployment.engine, "lin", run_id).status == RunStatus.ERROR


def reorder_run_document(engine: Engine, run_id: str = "run-1") -> None:
    """Store the steps sorted by name, as a document store may hand back a map."""

    def sort(state: Any) -> Decision[None]:
        new = state.model_copy(deep=True)
        new.steps = dict(sorted(new.steps.items()))
        return Decision(None, new)

    engine.runs.mutate(engine.doc_id("default", "lin", run_id), sort)


# -- start -----------------------------------------------------------------------------


def test_start_publishes_the_start_message_a_start_function_runs(deployment: Deployment) -> None:
    report = as_json(cli("start", "lin", "--run-id", "r1", "--param", "n=3", "--json"))
    assert report["run_id"] == "r1"
    assert report["topic"] == "projects/test-project/topics/resumable-start"
    [published] = deployment.messages.messages
    deployment.messages.messages.clear()
    assert published.topic == "resumable-start"
    message = parse_start(published.data)
    assert (message.pipeline, message.params, message.run_id) == ("lin", {"n": 3}, "r1")
    # What the deployed start function does with it:
    start_run(deployment.engine, message, message_id=report["message_id"])
    drain(deployment.engine)
    assert state_of(deployment.engine, "lin", "r1").status == RunStatus.COMPLETED


def test_start_without_a_run_id_chooses_one_and_prints_it(deployment: Deployment) -> None:
    result = cli("start", "lin", "-p", "tags=[1, 2]", "-p", "name=clip")
    assert result.exit_code == 0, result.output
    run_id = result.stdout.splitlines()[0]
    uuid.UUID(run_id)
    message = parse_start(deployment.messages.messages[0].data)
    assert message.run_id == run_id
    assert message.params == {"tags": [1, 2], "name": "clip"}
    assert f"resumable watch {run_id}" in result.stdout


def test_start_with_watch_prints_the_run_id_then_follows_the_run(
    deployment: Deployment,
) -> None:
    def run_the_start_function() -> None:
        deadline = time.monotonic() + 60
        while not deployment.messages.messages and time.monotonic() < deadline:
            time.sleep(0.01)
        start_run(deployment.engine, parse_start(deployment.messages.messages.pop().data))
        drain(deployment.engine)

    threading.Thread(target=run_the_start_function, daemon=True).start()
    result = cli("start", "lin", "--run-id", "r1", "--watch")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "r1"
    assert lines[-1].startswith("run r1 completed after ")


def test_start_refuses_a_pipeline_the_deployment_does_not_serve(deployment: Deployment) -> None:
    result = cli("start", "nope")
    assert result.exit_code == 2
    assert "unknown pipeline 'nope': this deployment serves lin" in result.stderr
    assert deployment.messages.messages == []


@pytest.mark.parametrize(
    "args", [["--param", "novalue"], ["--run-id", "../escape"], ["--run-id", ""]]
)
def test_start_refuses_a_wrong_command_line(deployment: Deployment, args: list[str]) -> None:
    result = cli("start", "lin", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert deployment.messages.messages == []


def test_start_of_an_existing_run_id_says_it_starts_nothing_new(deployment: Deployment) -> None:
    completed_run(deployment, "r1")
    result = cli("start", "lin", "--run-id", "r1", "-p", "n=3")
    assert result.exit_code == 0
    assert "run r1 already exists (completed)" in result.stderr


# -- status and list -------------------------------------------------------------------


def test_status_json_describes_the_run_and_its_steps_in_graph_order(
    deployment: Deployment,
) -> None:
    completed_run(deployment)
    reorder_run_document(deployment.engine)
    report = as_json(cli("status", "run-1", "--json"))
    assert report["run_id"] == "run-1"
    assert report["pipeline"] == "lin"
    assert report["status"] == "completed"
    assert report["error"] is None
    assert list(report["steps"]) == list(STEPS)
    for step in report["steps"].values():
        assert step["status"] == "completed"
        assert step["attempt"] == 1
        assert step["started_at"] and step["finished_at"]
        assert step["checkpoint_bytes"] > 0


def test_status_shows_a_table_in_graph_order(deployment: Deployment) -> None:
    completed_run(deployment)
    reorder_run_document(deployment.engine)
    result = cli("status", "run-1")
    assert result.exit_code == 0, result.output
    rows = [line.split()[0] for line in result.stdout.splitlines() if "completed" in line]
    assert rows[-3:] == list(STEPS)
    assert "lin · run run-1 · ✓ completed" in result.stdout


def test_status_of_a_failed_run_shows_the_error_and_how_to_resume(
    deployment: Deployment,
) -> None:
    failed_run(deployment)
    result = cli("status", "run-1", "--pipeline", "lin")
    assert result.exit_code == 0
    assert "detect: the input is invalid" in result.stdout
    assert "resume with: resumable resume run-1 --pipeline lin" in result.stdout
    report = as_json(cli("status", "run-1", "--json"))
    assert report["status"] == "error"
    assert report["steps"]["detect"]["status"] == "error"
    assert report["steps"]["report"]["status"] == "not_started"


@pytest.mark.parametrize(
    "args", [["status", "nope"], ["status", "nope", "--pipeline", "lin"], ["cancel", "nope"]]
)
def test_an_unknown_run_exits_2_with_a_message(deployment: Deployment, args: list[str]) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert "no run 'nope'" in result.stderr
    assert result.stdout == ""


def test_an_unconfigured_deployment_exits_2_saying_what_to_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("RESUMABLE_PROJECT", "RESUMABLE_STORAGE", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GCLOUD_PROJECT", raising=False)
    monkeypatch.setenv("RESUMABLE_DEV_HOME", str(tmp_path))  # no local stack there
    result = cli("status", "run-1")
    assert result.exit_code == 2
    assert "RESUMABLE_PROJECT" in result.stderr and "resumable dev up" in result.stderr


def test_list_shows_runs_newest_first_and_filters_by_status(deployment: Deployment) -> None:
    completed_run(deployment, "r-ok")
    time.sleep(0.01)
    failed_run(deployment, run_id="r-bad")
    runs = as_json(cli("list", "--json"))["runs"]
    assert [r["run_id"] for r in runs] == ["r-bad", "r-ok"]
    assert runs[1]["steps_completed"] == runs[1]["steps_total"] == 3
    errors = as_json(cli("list", "--status", "error", "--json"))["runs"]
    assert [r["run_id"] for r in errors] == ["r-bad"]
    table = cli("list", "--limit", "1")
    assert "r-bad" in table.stdout and "r-ok" not in table.stdout
    wrong = cli("list", "--status", "done")
    assert wrong.exit_code == 2 and "not_started, running, completed" in wrong.stderr


# -- watch -----------------------------------------------------------------------------


def deliver_slowly(engine: Engine, delay: float = 0.05) -> threading.Thread:
    """Deliver the published messages in the background, as push subscriptions do."""

    def loop() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(delay)
            drain(engine, limit=1)
            state = engine.runs.query(limit=1)
            if state and state[0].finished:
                return

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_watch_prints_each_change_until_the_run_completes(deployment: Deployment) -> None:
    start(deployment.engine, "lin", {"n": 3}, run_id="run-1")
    deliver_slowly(deployment.engine)
    result = cli("watch", "run-1", "--interval", "0.02")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "run run-1 of lin: running"
    assert lines[-1].startswith("run run-1 completed after ")
    completions = [line.split()[1] for line in lines if " completed (attempt 1" in line]
    assert completions == list(STEPS)


def test_watch_exits_1_when_the_run_fails(deployment: Deployment) -> None:
    deployment.failures["detect"] = NonRetryableError("bad input")
    start(deployment.engine, "lin", {"n": 3}, run_id="run-1")
    deliver_slowly(deployment.engine)
    result = cli("watch", "run-1", "--interval", "0.02", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "error"
    assert "step detect error (attempt 1)" in result.stderr


def test_watch_exits_130_when_the_run_is_cancelled(deployment: Deployment) -> None:
    start(deployment.engine, "lin", {"n": 3}, run_id="run-1")
    assert cli("cancel", "run-1").exit_code == 0
    result = cli("watch", "run-1")
    assert result.exit_code == 130
    assert "run run-1 cancelled" in result.stdout


def test_watch_waits_for_a_run_that_is_being_started(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    missed: list[str] = []
    real_find_run = cli_cloud.find_run

    def find_run(*args: Any, **kwargs: Any) -> Any:
        try:
            return real_find_run(*args, **kwargs)
        except RunControlError:
            missed.append("run-1")
            raise

    def start_once_watched() -> None:
        deadline = time.monotonic() + 60
        while not missed and time.monotonic() < deadline:  # the watch looked, found none
            time.sleep(0.01)
        start(deployment.engine, "lin", {"n": 3}, run_id="run-1")
        drain(deployment.engine)

    monkeypatch.setattr(cli_watch, "find_run", find_run)
    threading.Thread(target=start_once_watched, daemon=True).start()
    assert cli("watch", "run-1", "--interval", "0.05", "--wait", "120").exit_code == 0
    assert missed  # it waited for the run
    missing = cli("watch", "other", "--wait", "0")
    assert missing.exit_code == 2 and "no run 'other'" in missing.stderr


# -- cancel and resume -----------------------------------------------------------------


def test_cancel_before_any_step_runs_cancels_at_once(deployment: Deployment) -> None:
    start(deployment.engine, "lin", {"n": 3}, run_id="run-1")
    result = cli("cancel", "run-1")
    assert result.exit_code == 0
    assert "run run-1 cancelled" in result.stdout
    assert "steps that will not run: load, detect, report" in result.stdout
    drain(deployment.engine)  # the queued message of load arrives after the cancel
    state = state_of(deployment.engine, "lin")
    assert state.status == RunStatus.CANCELLED
    assert deployment.calls == []


def test_cancel_while_a_step_runs_lets_it_finish_and_runs_nothing_after(
    deployment: Deployment,
) -> None:
    outputs: list[Result] = []
    deployment.hooks["detect"] = lambda: outputs.append(cli("cancel", "run-1", "--json"))
    start(deployment.engine, "lin", {"n": 3}, run_id="run-1")
    drain(deployment.engine)
    report = json.loads(outputs[0].stdout)
    assert report["status"] == "running" and report["cancel_requested"] is True
    assert report["running"] == ["detect"] and report["cancelled_steps"] == ["report"]
    assert report["published"] == []
    state = state_of(deployment.engine, "lin")
    assert state.status == RunStatus.CANCELLED
    assert state.steps["detect"].status == StepStatus.COMPLETED  # its output is kept
    assert state.steps["report"].status == StepStatus.CANCELLED
    assert deployment.ran() == {"load": 1, "detect": 1}
    again = cli("cancel", "run-1")
    assert again.exit_code == 0 and "already cancelled; nothing to cancel" in again.stdout


def test_resume_after_a_failure_runs_only_the_unfinished_steps(deployment: Deployment) -> None:
    failed_run(deployment)
    result = cli("resume", "run-1")
    assert result.exit_code == 0, result.output
    assert "published step detect to projects/test-project/topics/resumable-lin-detect" in (
        result.stdout
    )
    assert [m.topic for m in deployment.messages.messages] == ["resumable-lin-detect"]
    drain(deployment.engine)
    assert state_of(deployment.engine, "lin").status == RunStatus.COMPLETED
    assert deployment.ran() == {"load": 1, "detect": 2, "report": 1}


def test_resume_from_a_step_reruns_it_and_every_step_after_it(deployment: Deployment) -> None:
    completed_run(deployment)
    report = as_json(cli("resume", "run-1", "--from-step", "detect", "--json"))
    assert report["rolled_back"] == ["detect", "report"]
    assert report["published"] == {"detect": "projects/test-project/topics/resumable-lin-detect"}
    drain(deployment.engine)
    assert state_of(deployment.engine, "lin").status == RunStatus.COMPLETED
    assert deployment.ran() == {"load": 1, "detect": 2, "report": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from-step", "nope"], "pipeline 'lin' has no step 'nope'"),
        ([], "is completed; use --from-step"),
    ],
)
def test_resume_refuses_what_does_not_apply(
    deployment: Deployment, args: list[str], message: str
) -> None:
    completed_run(deployment)
    take_messages(deployment.engine)
    result = cli("resume", "run-1", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert take_messages(deployment.engine) == []


def test_a_run_whose_checkpoints_were_deleted_cannot_be_rolled_back(
    deployment: Deployment,
) -> None:
    completed_run(deployment)
    state = state_of(deployment.engine, "lin")
    deployment.engine.files(state).delete()  # what cleanup_on_success does
    take_messages(deployment.engine)
    result = cli("resume", "run-1", "--from-step", "detect")
    assert result.exit_code == 2
    assert "no stored checkpoints left" in result.stderr
    assert take_messages(deployment.engine) == []
    shown = cli("checkpoint", "show", "run-1")
    assert shown.exit_code == 1 and "a checkpoint of the run is gone" in shown.stderr


# -- checkpoint show and replay ---------------------------------------------------------


def test_checkpoint_show_lists_params_and_each_steps_committed_output(
    deployment: Deployment,
) -> None:
    completed_run(deployment)
    report = as_json(cli("checkpoint", "show", "run-1", "--json"))
    assert report["params"]["values"] == {"n": {"type": "int", "value": 3}}
    assert report["params"]["manifest"].endswith(".json")
    assert list(report["steps"]) == list(STEPS)
    detect = report["steps"]["detect"]
    assert detect["manifest"].endswith("steps/detect/attempt-0001.json")
    assert detect["output_keys"] == ["detect", "last"]
    assert detect["checkpoint_bytes"] > 0
    human = cli("checkpoint", "show", "run-1")
    assert "steps/detect/attempt-0001.json" in human.stdout


def test_checkpoint_show_of_a_step_summarizes_its_input_context(deployment: Deployment) -> None:
    completed_run(deployment)
    report = as_json(cli("checkpoint", "show", "run-1", "--step", "report", "--json"))
    assert report["input"]["from_steps"] == ["load", "detect"]
    keys = report["input"]["keys"]
    assert set(keys) == {"n", "load", "detect", "last"}
    assert keys["detect"] == {"type": "ndarray", "dtype": "int16", "shape": [4]}
    assert keys["last"] == {"type": "str", "value": "detect", "len": 6}
    human = cli("checkpoint", "show", "run-1", "--step", "report")
    assert "int16 (4,)" in human.stdout
    wrong = cli("checkpoint", "show", "run-1", "--step", "nope")
    assert wrong.exit_code == 2 and "has no step 'nope'" in wrong.stderr


def test_replay_reruns_a_step_here_without_touching_the_run(
    deployment: Deployment, tmp_path: Path
) -> None:
    completed_run(deployment)
    engine = deployment.engine
    document = state_of(engine, "lin").model_dump()
    objects = sorted(engine.store.list(""))
    report = as_json(cli("replay", "run-1", "detect", "--json", "--output", str(tmp_path)))
    assert report["inputs_from"] == ["load"]
    assert report["changed"] == {
        "detect": {"type": "ndarray", "dtype": "int16", "shape": [4]},
        "last": {"type": "str", "value": "detect", "len": 6},
    }
    assert report["removed"] == []
    assert deployment.ran() == {"load": 1, "detect": 2, "report": 1}
    assert state_of(engine, "lin").model_dump() == document
    assert sorted(engine.store.list("")) == objects
    assert take_messages(engine) == []
    saved = load_outputs(tmp_path)
    assert saved["last"] == "detect"
    assert saved["detect"].dtype == np.int16 and saved["detect"].tolist() == [4] * 4


def test_replay_of_a_step_that_raises_exits_1_with_its_traceback(
    deployment: Deployment,
) -> None:
    failed_run(deployment)
    deployment.failures["detect"] = NonRetryableError("detect: still invalid")
    result = cli("replay", "run-1", "detect")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert "step detect raised NonRetryableError: detect: still invalid" in result.stderr
    assert state_of(deployment.engine, "lin").steps["detect"].attempt == 1


def test_replay_refuses_a_step_whose_input_is_not_committed(deployment: Deployment) -> None:
    failed_run(deployment)
    result = cli("replay", "run-1", "report")
    assert result.exit_code == 2
    assert "its dependencies have not completed (detect is error)" in result.stderr
    assert deployment.ran() == {"load": 1, "detect": 1}


# -- where the deployment is found -----------------------------------------------------


@pytest.fixture
def stack_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    for name in ("RESUMABLE_PROJECT", "RESUMABLE_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RESUMABLE_DEV_HOME", str(tmp_path))
    yield tmp_path


def write_stack_state(home: Path, pid: int) -> None:
    env = {"RESUMABLE_PROJECT": "stack-project", "RESUMABLE_STORAGE": "gs://stack/resumable"}
    (home / "state.json").write_text(json.dumps({"env": env, "supervisor_pid": pid}))


def test_a_running_local_stack_is_used_when_nothing_is_configured(
    stack_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_stack_state(stack_home, os.getpid())
    seen: list[Settings] = []
    monkeypatch.setattr(Engine, "from_settings", classmethod(lambda cls, s: seen.append(s)))
    cli_cloud.engine_from_env()
    assert (seen[0].project, seen[0].storage) == ("stack-project", "gs://stack/resumable")


def test_configured_settings_win_over_a_local_stack(
    stack_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_stack_state(stack_home, os.getpid())
    monkeypatch.setenv("RESUMABLE_PROJECT", "mine")
    monkeypatch.setenv("RESUMABLE_STORAGE", "gs://mine")
    seen: list[Settings] = []
    monkeypatch.setattr(Engine, "from_settings", classmethod(lambda cls, s: seen.append(s)))
    cli_cloud.engine_from_env()
    assert seen[0].project == "mine"


def test_the_state_file_of_a_stack_that_is_gone_is_ignored(
    stack_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_stack_state(stack_home, gone.pid)
    with pytest.raises(cli_cloud.NotConfiguredError):
        cli_cloud.engine_from_env()
    assert "is gone" in capsys.readouterr().err


# -- dev -------------------------------------------------------------------------------


def test_dev_down_without_a_stack_says_so_and_exits_0(tmp_path: Path) -> None:
    result = cli("dev", "down", "--home", str(tmp_path))
    assert result.exit_code == 0
    assert "no local stack running" in result.stdout
    assert as_json(cli("dev", "down", "--home", str(tmp_path), "--json"))["stopped"] is False


def test_dev_up_tells_how_to_start_a_run_three_ways(tmp_path: Path) -> None:
    info = {
        "project": "resumable-local",
        "storage": "gs://resumable-local/resumable",
        "start_topic": "projects/resumable-local/topics/resumable-start",
        "pipelines": {"dataprep": {}},
        "functions": {},
        "env": {"PUBSUB_EMULATOR_HOST": "127.0.0.1:8123", "RESUMABLE_PROJECT": "resumable-local"},
        "logs": ".resumable-dev/logs",
    }
    text = "\n".join(describe_stack(info, tmp_path, detached=True))
    assert "resumable start dataprep --param video_path=/path/to/clip.mp4 --param" in text
    assert "CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB=http://127.0.0.1:8123/" in text
    assert f"CLOUDSDK_AUTH_ACCESS_TOKEN_FILE={tmp_path}/gcloud-token" in text
    assert "gcloud pubsub topics publish resumable-start --project=resumable-local" in text
    assert "export PUBSUB_EMULATOR_HOST=127.0.0.1:8123" in text
    assert "resumable dev down" in text


def test_every_status_word_has_a_look() -> None:
    assert set(StepStatus) <= set(STATUS_LOOK)
    assert {s.value for s in RunStatus} <= {s.value for s in StepStatus}


class _FlakyReads:
    """The run store, whose ``get`` raises ``errors`` (one per read, in order) once
    ``after`` reads went through."""

    def __init__(self, runs: Any, errors: list[BaseException], after: int = 1) -> None:
        self._runs, self.errors, self.after, self.reads = runs, errors, after, 0

    def get(self, doc_id: str) -> Any:
        self.reads += 1
        if self.reads > self.after and self.errors:
            raise self.errors.pop(0)
        return self._runs.get(doc_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runs, name)


def test_watch_rides_out_a_service_blip(deployment: Deployment) -> None:
    from google.api_core.exceptions import ServiceUnavailable

    engine = deployment.engine
    start(engine, "lin", {"n": 3}, run_id="run-1")
    flaky = _FlakyReads(engine.runs, [ServiceUnavailable("blip"), ServiceUnavailable("blip")])
    engine.runs = flaky  # type: ignore[assignment]
    deliver_slowly(engine)
    result = cli("watch", "run-1", "--interval", "0.02")
    assert result.exit_code == 0, result.output
    assert flaky.errors == []  # both failed reads happened, and were retried
    assert result.stdout.splitlines()[-1].startswith("run run-1 completed after ")


def test_watch_reports_a_service_down_for_longer_than_a_minute(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.api_core.exceptions import ServiceUnavailable

    engine = deployment.engine
    start(engine, "lin", {"n": 3}, run_id="run-1")
    flaky = _FlakyReads(engine.runs, [ServiceUnavailable("down")] * 3)
    engine.runs = flaky  # type: ignore[assignment]
    clock = iter(range(0, 10_000, 40))  # each look at the clock: 40 s later
    monkeypatch.setattr(  # the command's clock only, not the process's
        cli_watch,
        "time",
        SimpleNamespace(monotonic=lambda: float(next(clock)), sleep=lambda _seconds: None),
    )
    result = cli("watch", "run-1")
    assert result.exit_code == 1
    assert "error: the cloud service failed: ServiceUnavailable" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    flaky.errors.clear()  # the service is back
    assert state_of(engine, "lin", "run-1").status == RunStatus.RUNNING  # nothing changed


def test_ctrl_c_stops_watching_and_leaves_the_run_going(deployment: Deployment) -> None:
    engine = deployment.engine
    start(engine, "lin", {"n": 3}, run_id="run-1")
    engine.runs = _FlakyReads(engine.runs, [KeyboardInterrupt()])  # type: ignore[assignment]
    result = cli("watch", "run-1", "--interval", "0.01")
    assert result.exit_code == 130
    assert "stopped watching; run run-1 goes on (resumable watch run-1)" in result.stderr
    drain(engine)
    assert state_of(engine, "lin", "run-1").status == RunStatus.COMPLETED


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_watch_on_a_terminal_shows_a_live_table_until_the_run_ends(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = deployment.engine
    start(engine, "lin", {"n": 3}, run_id="run-1")
    terminal = _Terminal()
    for module in (cli_watch, cli_cloud):  # their stdout only, not the process's
        monkeypatch.setattr(module, "sys", SimpleNamespace(stdout=terminal, stderr=sys.stderr))
    deliver_slowly(engine)
    assert cli_watch.follow(engine, "run-1", None, "default", interval=0.02) == 0
    screen = terminal.getvalue()
    assert "\x1b[" in screen  # drawn with terminal control sequences, redrawn live
    for step in STEPS:
        assert step in screen
    assert "completed" in screen
    assert state_of(engine, "lin", "run-1").status == RunStatus.COMPLETED


def _tidy(deployment: Deployment) -> None:
    """Register and complete run ``t-1`` of ``tidy``: make → drop (deletes ``a``) →
    same (returns what is there) → count (returns a number, not a dict)."""

    def make(context: dict[str, Any]) -> dict[str, Any]:
        return {"a": 1, "b": [1, 2]}

    def drop(context: dict[str, Any]) -> None:
        del context["a"]

    def same(context: dict[str, Any]) -> dict[str, Any]:
        return {"b": [1, 2]}

    def count(context: dict[str, Any]) -> int:
        return len(context["b"])

    steps = {"make": make, "drop": drop, "same": same, "count": count}
    deployment.engine.registry.register(
        Pipeline(
            "tidy",
            {name: {"function": f} for name, f in steps.items()},
            storage="memory://unused",
            cleanup_on_success=False,
        )
    )
    start(deployment.engine, "tidy", {}, run_id="t-1")
    drain(deployment.engine)
    assert state_of(deployment.engine, "tidy", "t-1").status == RunStatus.COMPLETED


def test_replay_says_what_the_step_changed_removed_and_stored(
    deployment: Deployment, tmp_path: Path
) -> None:
    _tidy(deployment)
    dropped = cli("replay", "t-1", "drop", "--output", str(tmp_path / "out"))
    assert dropped.exit_code == 0, dropped.output
    text = " ".join(dropped.stdout.split())
    assert "replayed step drop of run t-1 (tidy) here in" in text
    assert "on its checkpointed input (params + outputs of make); nothing was written" in text
    assert "changed: nothing" in text and "removed: a" in text
    assert f"outputs stored exactly in {tmp_path / 'out'}" in text

    same = cli("replay", "t-1", "same")
    assert same.exit_code == 0 and "changed: nothing" in same.stdout
    assert "removed:" not in same.stdout and "outputs stored" not in same.stdout

    counted = cli("replay", "t-1", "count")
    assert counted.exit_code == 0
    assert "changed:" in counted.stdout and "count_result" in counted.stdout

    first = cli("replay", "t-1", "make")
    assert "on its checkpointed input (params); nothing was written" in " ".join(
        first.stdout.split()
    )


def test_a_steps_input_needs_the_pipeline_loadable_here(deployment: Deployment) -> None:
    from resumable.serverless._engine import PipelineRegistry

    _tidy(deployment)
    deployment.engine.registry = PipelineRegistry()  # the pipeline's code is not here
    result = cli("checkpoint", "show", "t-1", "--pipeline", "tidy", "--step", "drop")
    assert result.exit_code == 2
    assert "pipeline 'tidy' is not loadable here" in result.stderr
    shown = cli("checkpoint", "show", "t-1", "--pipeline", "tidy", "--json")
    assert shown.exit_code == 0 and list(json.loads(shown.stdout)["steps"]) == [
        "make",
        "drop",
        "same",
        "count",
    ]
