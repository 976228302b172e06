"""``resumable run`` as the README describes it: ``--keep`` and deletion after success,
``--tenant``, ``--workers``, ``--verbose``, exit 2 for a malformed ``--param``, and the
live table on a terminal (driven in tmux, read off the screen)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import PIPELINES, _cli, _steps_run

# Two steps that only finish when both run at the same time.
PARALLEL = """

import threading

_both = threading.Barrier(2, timeout=60)


def branch(context):
    _ran("branch")
    _both.wait()
    return {}


def other_branch(context):
    _ran("other_branch")
    _both.wait()
    return {}


parallel = Pipeline(
    "clitest-parallel",
    {"root": first, "left": {"function": branch, "dependencies": ["root"]},
     "right": {"function": other_branch, "dependencies": ["root"]}},
)
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "pipelines.py").write_text(PIPELINES + PARALLEL)
    return tmp_path


def _run_folder(workdir: Path, tenant: str, pipeline: str, run_id: str) -> Path:
    return workdir / "ckpt" / "runs" / tenant / pipeline / run_id


# -- --keep, and deletion after success ----------------------------------------------------


def test_a_completed_run_deletes_its_checkpoint(workdir: Path) -> None:
    done = _cli(workdir, "pipelines.py:instance", "--storage", "ckpt", "--run-id", "gone-1")
    assert done.returncode == 0, done.stderr
    assert _steps_run(workdir) == ["first", "wait_for_gate", "last"]
    assert not _run_folder(workdir, "default", "clitest", "gone-1").exists()
    assert "checkpoint kept" not in done.stdout


def test_keep_keeps_the_checkpoint_of_a_completed_run(workdir: Path) -> None:
    done = _cli(
        workdir, "pipelines.py:instance", "--storage", "ckpt", "--run-id", "kept-1", "--keep"
    )
    assert done.returncode == 0, done.stderr
    folder = _run_folder(workdir, "default", "clitest", "kept-1")
    manifest = json.loads((folder / ".checkpoint.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["completed_steps"] == ["first", "wait_for_gate", "last"]
    assert f"checkpoint kept in {folder.as_uri()}" in done.stdout


# -- --tenant ------------------------------------------------------------------------------


def test_tenant_puts_the_run_in_its_folder_and_resume_needs_the_same_tenant(
    workdir: Path,
) -> None:
    failing = ["pipelines.py:failing", "--storage", "ckpt", "--run-id", "same", "--json"]
    for tenant in ("acme", "globex"):
        done = _cli(workdir, *failing, "--tenant", tenant)
        assert done.returncode == 1, done.stderr
        assert json.loads(done.stdout)["tenant_id"] == tenant
        folder = _run_folder(workdir, tenant, "clitest-failing", "same")
        assert json.loads((folder / ".checkpoint.json").read_text())["status"] == "error"
    hint = _cli(workdir, *failing[:-1], "--tenant", "acme")  # without --json: the human output
    assert "--run-id same --resume --storage ckpt --tenant acme" in hint.stdout

    resumed = _cli(workdir, *failing, "--tenant", "acme", "--resume")
    assert json.loads(resumed.stdout)["steps_skipped"] == ["first"]
    elsewhere = _cli(workdir, *failing, "--resume")  # the default tenant has no such run
    assert json.loads(elsewhere.stdout)["steps_skipped"] == []
    assert "started from the beginning (no checkpoint to resume)" in elsewhere.stderr


# -- --workers -----------------------------------------------------------------------------


def test_workers_run_independent_steps_at_the_same_time(workdir: Path) -> None:
    done = _cli(workdir, "pipelines.py:parallel", "--storage", "ckpt", "--workers", "2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed", result["errors"]
    assert sorted(result["steps_completed"]) == ["left", "right", "root"]


def test_workers_below_one_is_a_usage_error(workdir: Path) -> None:
    done = _cli(workdir, "pipelines.py:parallel", "--storage", "ckpt", "--workers", "0")
    assert done.returncode == 2
    assert _steps_run(workdir) == []


# -- --verbose -----------------------------------------------------------------------------


def test_verbose_prints_debug_logs_that_are_quiet_otherwise(workdir: Path) -> None:
    quiet = _cli(workdir, "pipelines.py:instance", "--storage", "ckpt")
    loud = _cli(workdir, "pipelines.py:instance", "--storage", "ckpt", "--verbose")
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    logs = loud.stderr.splitlines()
    assert any(line.startswith("DEBUG") and "checkpoint #1 saved" in line for line in logs), logs
    assert any(line.startswith("INFO") and "step first completed" in line for line in logs), logs
    assert not [line for line in quiet.stderr.splitlines() if line.startswith(("DEBUG", "INFO"))]


# -- --param -------------------------------------------------------------------------------


@pytest.mark.parametrize("item", ["novalue", "=3"])
def test_a_malformed_param_exits_2_and_runs_nothing(workdir: Path, item: str) -> None:
    done = _cli(workdir, "pipelines.py:instance", "--storage", "ckpt", "--param", item, "--json")
    assert done.returncode == 2
    assert f"error: --param {item!r} is not KEY=VALUE" in done.stderr
    assert done.stdout == ""
    assert _steps_run(workdir) == []
    assert not (workdir / "ckpt").exists()


# -- the live table ------------------------------------------------------------------------


class Terminal:
    """A program running in a tmux window of a private tmux server; its screen as text."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-u", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout

    def start(self, command: str, env: dict[str, str]) -> None:
        script = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        script += f"{command}\necho EXIT=$?\nsleep 600\n"
        self.tmux("new-session", "-d", "-x", "140", "-y", "40", "-s", "run", "sh", "-c", script)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "run")

    def wait_for(self, what: str, ready: Callable[[str], bool], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if ready(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} never showed; the screen:\n{screen}")
            time.sleep(0.1)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed: the live table needs a terminal to be drawn on")
    term = Terminal(f"resumable-test-{uuid.uuid4().hex[:8]}")
    try:
        yield term
    finally:
        subprocess.run(["tmux", "-L", term.socket, "kill-server"], capture_output=True)


def _row(screen: str, step: str) -> str:
    rows = [line for line in screen.splitlines() if line.split()[:1] == [step]]
    return rows[0] if rows else ""


def test_on_a_terminal_run_shows_a_live_table_of_the_steps(
    workdir: Path, terminal: Terminal
) -> None:
    gate = workdir / "gate"
    command = (
        f"cd {shlex.quote(str(workdir))} && {shlex.quote(sys.executable)} -m resumable.cli run "
        f"pipelines.py:instance --storage ckpt --run-id live-1 --param gate={gate}"
    )
    env = {
        "STEP_LOG": str(workdir / "steps.log"),
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
    }
    terminal.start(command, env)

    running = terminal.wait_for(
        "the table with wait_for_gate running",
        lambda s: "running" in _row(s, "wait_for_gate") and "waiting" in _row(s, "last"),
    )
    assert "clitest · run live-1" in running
    header = next(line for line in running.splitlines() if "step" in line.split()[:1])
    assert header.split() == ["step", "status", "attempts", "duration", "checkpoint"]
    assert "✓ completed" in _row(running, "first")
    assert _row(running, "first").split()[3] == "1"  # attempts
    assert "· waiting" in _row(running, "last")

    gate.touch()
    done = terminal.wait_for("the end of the run", lambda s: "EXIT=" in s)
    assert "EXIT=0" in done
    for step in ("first", "wait_for_gate", "last"):
        assert "✓ completed" in _row(done, step), done
    assert "ran: first, wait_for_gate, last" in done
