"""``resumable dev up`` when the stack cannot start, or one is already there: each way it
fails says why, exits with its code, and leaves no supervisor behind. The stack itself is
a fake here (the real one: tests/integration/test_cli_cloud.py, test_readme_stack.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from resumable.cli import _dev
from resumable.cli._app import app
from resumable.dev import _stack as devstack


def dev(*args: str) -> Any:
    return CliRunner().invoke(app, ["dev", *args])


def _fake_python(tmp_path: Path, body: str) -> Path:
    """An executable standing in for the supervisor's interpreter."""
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _use_interpreter(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """The supervisor's interpreter, for the command only (never the process's own
    ``sys.executable``, which other threads use)."""
    monkeypatch.setattr(
        _dev, "sys", SimpleNamespace(executable=str(path), stdout=sys.stdout, stderr=sys.stderr)
    )


def _gone(pid: int) -> bool:
    return not devstack.process_alive(pid)


def test_a_second_stack_in_the_same_home_is_refused(tmp_path: Path) -> None:
    devstack.state_path(tmp_path).write_text(json.dumps({"supervisor_pid": os.getpid()}))
    result = dev("up", "--home", str(tmp_path), "--detach")
    assert result.exit_code == 2
    assert f"a local stack is already running in {tmp_path} (pid {os.getpid()})" in result.output
    assert devstack.state_path(tmp_path).exists()  # the running stack's state is kept


def test_what_a_crashed_stack_left_is_cleared_before_starting(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    devstack.state_path(tmp_path).write_text(json.dumps({"supervisor_pid": dead.pid}))
    _dev._refuse_a_second_stack(tmp_path)
    assert not devstack.state_path(tmp_path).exists()
    devstack.state_path(tmp_path).write_text('{"supervisor_pid": 12')  # half written
    _dev._refuse_a_second_stack(tmp_path)  # its writer is starting or died: no refusal


def test_a_supervisor_that_exits_while_starting_is_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _fake_python(tmp_path, 'echo "cannot import module tests.nothing"\nexit 3\n')
    _use_interpreter(monkeypatch, fake)
    home = tmp_path / "home"
    result = dev("up", "--home", str(home), "--detach", "-p", "tests.nothing:build")
    assert result.exit_code == 1
    assert "the local stack exited with code 3 while starting" in result.output
    assert "cannot import module tests.nothing" in result.output
    assert not devstack.state_path(home).exists()


def test_a_supervisor_that_never_gets_ready_is_stopped_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "pid"
    fake = _fake_python(tmp_path, f'echo $$ > "{pid_file}"\nexec sleep 300\n')
    _use_interpreter(monkeypatch, fake)
    monkeypatch.setattr(_dev, "START_TIMEOUT", 1.0)
    result = dev("up", "--home", str(tmp_path / "home"), "--detach")
    assert result.exit_code == 1
    assert "the local stack did not start within 1s" in result.output
    assert _gone(int(pid_file.read_text()))


def test_ctrl_c_while_a_detached_stack_starts_stops_its_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "pid"
    fake = _fake_python(tmp_path, f'echo $$ > "{pid_file}"\nexec sleep 300\n')
    _use_interpreter(monkeypatch, fake)

    def interrupted(_seconds: float) -> None:
        if pid_file.exists() and pid_file.read_text().strip():
            raise KeyboardInterrupt

    monkeypatch.setattr(_dev, "time", SimpleNamespace(monotonic=time.monotonic, sleep=interrupted))
    result = dev("up", "--home", str(tmp_path / "home"), "--detach")
    assert result.exit_code == 130
    assert _gone(int(pid_file.read_text()))


class _Stack:
    """A stand-in for DevStack whose ``up`` raises ``error``."""

    error: BaseException = RuntimeError("java is not installed")

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def up(self) -> dict[str, Any]:
        raise self.error


def test_a_foreground_stack_that_cannot_start_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_dev.devstack, "DevStack", _Stack)
    result = dev("up", "--home", str(tmp_path))
    assert result.exit_code == 1
    assert "the local stack did not start: RuntimeError: java is not installed" in result.output


def test_ctrl_c_while_a_foreground_stack_starts_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Interrupted(_Stack):
        error = KeyboardInterrupt()

    monkeypatch.setattr(_dev.devstack, "DevStack", Interrupted)
    assert dev("up", "--home", str(tmp_path)).exit_code == 130


def test_the_log_tail_of_a_missing_log() -> None:
    assert _dev._tail(Path("/nonexistent/stack.log")) == "(no log)"
