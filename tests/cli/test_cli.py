"""``resumable run``: results, parameters, pipeline references, exit codes, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from resumable import Pipeline
from resumable.checkpoint._summary import summarize
from resumable.cli._app import parse_params
from resumable.definition._loader import load_pipeline
from resumable.errors import PipelineLoadError

PIPELINES = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path

    import numpy as np

    from resumable import NonRetryableError, Pipeline


    def _ran(step):
        # Every call of a step is logged, so tests can tell which steps ran again.
        with open(os.environ["STEP_LOG"], "a") as log:
            log.write(step + "\\n")


    def first(context):
        _ran("first")
        return {"array": np.arange(6, dtype=np.int16).reshape(2, 3), "n": context.get("n", 1) + 1}


    def wait_for_gate(context):
        _ran("wait_for_gate")
        gate = context.get("gate")
        # Only a guard against a test that never opens the gate: tests that never do abort
        # the step first, and a loaded machine can take long to get there.
        deadline = time.monotonic() + 600
        while gate and not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return {"waited": True}


    def last(context):
        _ran("last")
        return {"total": context["n"] * 10}


    def boom(context):
        raise NonRetryableError("the input is bad")


    STEPS = {"first": first, "wait_for_gate": wait_for_gate, "last": last}

    instance = Pipeline("clitest", STEPS)


    class ClassPipeline(Pipeline):
        def __init__(self, storage=None, run_guid=None):
            super().__init__("clitest", STEPS, storage=storage, run_guid=run_guid)


    def make_pipeline(storage=None, run_id=None):
        return Pipeline("clitest", STEPS, storage=storage, run_id=run_id, max_workers=1)


    failing = Pipeline("clitest-failing", {"first": first, "boom": boom})
    not_a_pipeline = 42
    """
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "pipelines.py").write_text(PIPELINES)
    return tmp_path


def _env(workdir: Path) -> dict[str, str]:
    return {**os.environ, "STEP_LOG": str(workdir / "steps.log"), "PYTHONUNBUFFERED": "1"}


def _cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resumable.cli", "run", *args],
        cwd=workdir,
        env=_env(workdir),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _start(workdir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "resumable.cli", "run", *args],
        cwd=workdir,
        env=_env(workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_line(process: subprocess.Popen[str], needle: str) -> list[str]:
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} never printed; output: {''.join(seen)}")


def _steps_run(workdir: Path) -> list[str]:
    log = workdir / "steps.log"
    return log.read_text().split() if log.exists() else []


def _wait_until_running(workdir: Path, step: str) -> None:
    """The "started" event comes just before the step's code: wait for the code itself."""
    deadline = time.monotonic() + 60
    while _steps_run(workdir)[-1:] != [step]:
        assert time.monotonic() < deadline, f"step {step} never ran: {_steps_run(workdir)}"
        time.sleep(0.01)


def test_json_prints_exactly_one_result_object_with_summarised_arrays(workdir: Path) -> None:
    done = _cli(workdir, "pipelines.py:instance", "--storage", "ckpt", "--json", "-p", "n=4")

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    assert result["steps_completed"] == ["first", "wait_for_gate", "last"]
    assert result["context"]["total"] == 50
    assert result["context"]["array"] == {"type": "ndarray", "dtype": "int16", "shape": [2, 3]}
    assert "step first started" in done.stderr  # progress goes to stderr with --json


def test_params_become_the_initial_context_parsed_as_json_when_they_parse(workdir: Path) -> None:
    done = _cli(
        workdir,
        "pipelines.py:ClassPipeline",
        "--storage=ckpt",
        "--json",
        "--param",
        "n=2",
        "--param",
        "tags=[1, 2.5, true]",
        "--param",
        "name=clip-7",
        "--param",
        'quoted="42"',
        "--param",
        "empty=",
    )

    context = json.loads(done.stdout)["context"]
    assert (context["n"], context["total"]) == (3, 30)
    assert context["tags"] == [1, 2.5, True]
    assert context["name"] == "clip-7"
    assert context["quoted"] == "42"
    assert context["empty"] == ""


def test_param_parsing_keeps_unparseable_values_as_text_and_rejects_missing_equals() -> None:
    assert parse_params(["a=1", "b=false", "c=null", "d={not json}", "e=x=y", "a=2"]) == {
        "a": 2,
        "b": False,
        "c": None,
        "d": "{not json}",
        "e": "x=y",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_params(["novalue"])


def test_human_output_is_one_line_per_event_when_stdout_is_not_a_terminal(workdir: Path) -> None:
    done = _cli(workdir, "pipelines.py:make_pipeline", "--storage", "ckpt")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "step first started (attempt 1)" in lines
    assert any(line.startswith("step last completed in") for line in lines)
    assert lines[-1] == "ran: first, wait_for_gate, last"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:pipeline", "cannot import module 'no_such_module_xyz'"),
        ("pipelines.py:nope", "has no attribute 'nope'; it defines ClassPipeline, failing"),
        ("pipelines:not_a_pipeline", "is a int (42), not a Pipeline"),
        ("missing/file.py:pipeline", "no such file"),
        ("pipelines.py", "is not a MODULE:ATTR reference"),
    ],
)
def test_a_bad_pipeline_reference_is_a_clear_error_with_exit_code_2(
    workdir: Path, target: str, message: str
) -> None:
    done = _cli(workdir, target, "--json")

    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run-id", ""], "run id '' is not a safe id"),
        (["--storage", "file://rel/x"], "does not name an absolute folder"),
        (["--storage", "file:relative"], "does not name an absolute folder"),
    ],
    ids=["empty-run-id", "file-url-with-a-host", "relative-file-url"],
)
def test_an_ambiguous_run_id_or_storage_is_a_usage_error_and_nothing_runs(
    workdir: Path, args: list[str], message: str
) -> None:
    done = _cli(workdir, "pipelines.py:make_pipeline", *args)
    assert done.returncode == 2
    assert message in done.stderr and done.stdout == ""
    assert not (workdir / "steps.log").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Missing argument 'MODULE:ATTR'. (see '"),
        (["pipelines.py:instance", "--workers", "0"], "Invalid value for '--workers'"),
        (["pipelines.py:instance", "--no-such-option"], "No such option: --no-such-option"),
    ],
    ids=["missing-argument", "invalid-value", "unknown-option"],
)
def test_usage_errors_are_one_line_with_exit_code_2(
    workdir: Path, args: list[str], message: str
) -> None:
    done = _cli(workdir, *args)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {message}")
    assert done.stderr.count("\n") == 1 and done.stdout == ""


def test_a_failed_step_exits_1_and_keeps_the_checkpoint(workdir: Path) -> None:
    done = _cli(workdir, "pipelines.py:failing", "--storage", "ckpt", "--json")

    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["status"] == "error"
    assert "the input is bad" in result["errors"][0]
    assert (workdir / "ckpt" / "runs" / "default" / "clitest-failing").is_dir()


def test_a_run_killed_with_sigkill_resumes_without_rerunning_completed_steps(
    workdir: Path,
) -> None:
    gate = workdir / "gate"
    target = ["pipelines.py:ClassPipeline", "--storage", "ckpt", "--run-id", "killed-1"]
    process = _start(workdir, *target, "--param", f"gate={gate}")
    _wait_for_line(process, "step wait_for_gate started")
    _wait_until_running(workdir, "wait_for_gate")
    process.kill()
    process.communicate(timeout=10)
    assert _steps_run(workdir) == ["first", "wait_for_gate"]

    gate.touch()
    done = _cli(workdir, *target, "--resume", "--json")

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    assert result["steps_skipped"] == ["first"]
    assert result["steps_completed"] == ["wait_for_gate", "last"]
    assert result["context"]["total"] == 20
    assert _steps_run(workdir) == ["first", "wait_for_gate", "wait_for_gate", "last"]


def test_ctrl_c_cancels_after_the_current_step_with_exit_130_and_the_run_resumes(
    workdir: Path,
) -> None:
    gate = workdir / "gate"
    target = ["pipelines.py:instance", "--storage", "ckpt", "--run-id", "interrupted-1"]
    process = _start(workdir, *target, "--param", f"gate={gate}")
    _wait_for_line(process, "step wait_for_gate started")
    process.send_signal(signal.SIGINT)
    _wait_for_line(process, "stop requested")
    gate.touch()
    rest, _ = process.communicate(timeout=30)

    assert process.returncode == 130
    assert "step wait_for_gate completed" in rest
    assert "--run-id interrupted-1 --resume" in rest
    done = _cli(workdir, *target, "--resume", "--json")
    assert json.loads(done.stdout)["steps_completed"] == ["last"]
    assert _steps_run(workdir) == ["first", "wait_for_gate", "last"]


def test_a_second_ctrl_c_aborts_the_running_step_and_the_run_resumes_from_it(
    workdir: Path,
) -> None:
    gate = workdir / "gate"
    target = ["pipelines.py:instance", "--storage", "ckpt", "--run-id", "aborted-1", "--json"]
    process = _start(workdir, *target, "--param", f"gate={gate}")
    assert process.stderr is not None
    for line in process.stderr:
        if "step wait_for_gate started" in line:
            break
    _wait_until_running(workdir, "wait_for_gate")
    process.send_signal(signal.SIGINT)
    for line in process.stderr:  # the first Ctrl-C is handled: the second one aborts
        if "stop requested" in line:
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)

    assert process.returncode == 130, err
    aborted = json.loads(out)
    assert aborted["status"] == "cancelled"
    assert "aborted by a second interrupt" in aborted["errors"][0]
    assert "step wait_for_gate completed" not in err  # aborted, not finished
    assert _steps_run(workdir) == ["first", "wait_for_gate"]

    gate.touch()
    done = _cli(workdir, *target, "--resume")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    assert result["steps_skipped"] == ["first"]
    assert result["steps_completed"] == ["wait_for_gate", "last"]
    # first never ran again; the aborted step ran again from the start.
    assert _steps_run(workdir) == ["first", "wait_for_gate", "wait_for_gate", "last"]


def test_storage_and_run_id_override_an_instance_without_changing_its_steps(
    tmp_path: Path,
) -> None:
    module = tmp_path / "instance_module.py"
    module.write_text(
        "from resumable import Pipeline\n"
        "pipeline = Pipeline('overridden', {'a': lambda c: {'x': 1}}, storage='memory://orig',"
        " strict=True, retry_backoff=0.5)\n"
    )

    pipeline = load_pipeline(
        f"{module}:pipeline", storage=tmp_path / "ckpt", run_id="run-7", max_workers=3
    )

    assert isinstance(pipeline, Pipeline)
    assert pipeline.run_id == "run-7"
    assert pipeline.run_folder == (tmp_path / "ckpt").as_uri() + "/runs/default/overridden/run-7"
    assert (pipeline.options.max_workers, pipeline.options.strict) == (3, True)
    assert pipeline.options.retry_backoff == 0.5
    assert list(pipeline.spec.order) == ["a"]


def test_a_factory_gets_storage_and_run_id_through_its_parameters(workdir: Path) -> None:
    pipeline = load_pipeline(
        f"{workdir / 'pipelines.py'}:make_pipeline", storage="memory://f", run_id="r-1"
    )

    assert pipeline.run_id == "r-1"
    assert pipeline.storage.url == "memory://f"


def test_a_class_needing_arguments_is_refused_with_what_it_needs(tmp_path: Path) -> None:
    module = tmp_path / "needs_args.py"
    module.write_text(
        "from resumable import Pipeline\n"
        "class Needy(Pipeline):\n"
        "    def __init__(self, source):\n"
        "        super().__init__('needy', {'a': lambda c: None})\n"
    )

    with pytest.raises(PipelineLoadError, match="requires argument"):
        load_pipeline(f"{module}:Needy")


def test_json_summaries_name_types_and_shapes_instead_of_values() -> None:
    import datetime as dt

    summary = summarize(
        {
            "frames": np.zeros((2, 3), dtype=np.float32),
            "scalar": np.int64(3),
            "raw": b"abc",
            "when": dt.date(2024, 5, 1),
            "pair": (1, "a"),
            "tags": {"b", "a"},
            "nan": float("nan"),
        }
    )

    assert summary == {
        "frames": {"type": "ndarray", "dtype": "float32", "shape": [2, 3]},
        "scalar": 3,
        "raw": {"type": "bytes", "size": 3},
        "when": "2024-05-01",
        "pair": [1, "a"],
        "tags": ["a", "b"],
        "nan": {"type": "float", "value": "nan"},
    }
    json.dumps(summary, allow_nan=False)
