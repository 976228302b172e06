"""The serverless commands as a user runs them: ``resumable`` processes against the local
stack (official emulators, fake-gcs-server, one function process per step), configured
only through the stack's environment variables. The last test starts and stops a stack
of its own with ``resumable dev up --detach`` / ``dev down``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable.dev._stack import DevStack, down_detached

pytestmark = [pytest.mark.emulators, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def resumable(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resumable.cli", *args],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def stack_env(stack: DevStack) -> dict[str, str]:
    return {**os.environ, **stack.client_env}


def start(env: dict[str, str], workdir: Path, **faults: Any) -> str:
    params = {"workdir": str(workdir), "faults": faults}
    run_id = f"cli-{uuid.uuid4().hex[:10]}"
    started = resumable(
        env, "start", "faulty", "--run-id", run_id, "--param", f"workdir={workdir}",
        "--param", f"faults={json.dumps(params['faults'])}",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert started.stdout.splitlines()[0] == run_id
    return run_id


def calls(workdir: Path) -> Counter[str]:
    return Counter((workdir / "calls.log").read_text().split())


def wait_file(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_start_then_watch_follows_the_run_until_it_completes(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    run_id = start(stack_env, tmp_path)
    watched = resumable(stack_env, "watch", run_id, "--interval", "0.2")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert watched.stdout.splitlines()[-1].startswith(f"run {run_id} completed after ")
    assert "step c completed (attempt 1" in watched.stdout
    status = json.loads(resumable(stack_env, "status", run_id, "--json").stdout)
    assert status["run_id"] == run_id
    assert status["pipeline"] == "faulty"
    assert status["status"] == "completed" and status["error"] is None
    assert list(status["steps"]) == ["a", "b", "c"]
    for step in status["steps"].values():
        assert step["status"] == "completed" and step["attempt"] == 1
        assert step["started_at"] and step["finished_at"] and step["checkpoint_bytes"] > 0
    assert calls(tmp_path) == {"a": 1, "b": 1, "c": 1}


def test_status_of_an_unknown_run_exits_2(stack_env: dict[str, str]) -> None:
    result = resumable(stack_env, "status", "no-such-run")
    assert result.returncode == 2
    assert "no run 'no-such-run'" in result.stderr


def test_cancel_during_a_step_ends_the_run_cancelled_before_the_next_step(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    release = tmp_path / "release"
    run_id = start(stack_env, tmp_path, b={"wait_for": str(release)})
    wait_file(tmp_path / "started-b")
    cancelled = resumable(stack_env, "cancel", run_id)
    release.touch()  # b finishes only once the cancel is in
    assert cancelled.returncode == 0, cancelled.stderr
    assert "b is running and finishes first" in cancelled.stdout
    watched = resumable(stack_env, "watch", run_id, "--interval", "0.2", "--json")
    assert watched.returncode == 130, watched.stderr
    final = json.loads(watched.stdout)
    assert final["status"] == "cancelled"
    assert final["steps"]["b"]["status"] == "completed"  # a running step finishes
    assert final["steps"]["c"]["status"] == "cancelled"
    assert calls(tmp_path) == {"a": 1, "b": 1}


def test_resume_from_a_step_reruns_it_and_the_steps_after_it(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    run_id = start(stack_env, tmp_path)
    assert resumable(stack_env, "watch", run_id, "--interval", "0.2").returncode == 0
    resumed = resumable(stack_env, "resume", run_id, "--from-step", "b", "--json")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["rolled_back"] == ["b", "c"]
    assert list(report["published"]) == ["b"]
    watched = resumable(stack_env, "watch", run_id, "--interval", "0.2", "--json")
    assert watched.returncode == 0, watched.stderr
    final = json.loads(watched.stdout)
    assert [final["steps"][s]["attempt"] for s in "abc"] == [1, 2, 2]
    assert calls(tmp_path) == {"a": 1, "b": 2, "c": 2}
    shown = json.loads(resumable(stack_env, "checkpoint", "show", run_id, "--json").stdout)
    assert shown["steps"]["b"]["manifest"].endswith("steps/b/attempt-0002.json")


def test_replay_reruns_a_step_locally_from_the_stored_checkpoint(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    run_id = start(stack_env, workdir)
    assert resumable(stack_env, "watch", run_id, "--interval", "0.2").returncode == 0
    before = resumable(stack_env, "status", run_id, "--json").stdout
    replayed = resumable(
        stack_env, "replay", run_id, "b", "--json", "--output", str(tmp_path / "out")
    )
    assert replayed.returncode == 0, replayed.stderr
    report = json.loads(replayed.stdout)
    assert report["changed"] == {"b": {"type": "ndarray", "dtype": "uint8", "shape": [64, 48, 3]}}
    assert report["inputs_from"] == ["a"]
    assert calls(workdir) == {"a": 1, "b": 2, "c": 1}  # the replay ran here, once
    after = resumable(stack_env, "status", run_id, "--json").stdout
    assert json.loads(after) == json.loads(before)


# -- dev up / dev down ------------------------------------------------------------------


def process_groups_alive(groups: list[int]) -> list[str]:
    """Processes (any member of the given process groups) still alive, as "pid cmd"."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            state, pgid = fields[0], int(fields[2])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if pgid in groups and state != "Z":
            alive.append(f"{entry.name} {command[:120]}")
    return alive


def test_dev_up_detached_then_dev_down_leaves_no_process(tmp_path: Path) -> None:
    home = tmp_path / "dev"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RESUMABLE_") and not k.endswith("_EMULATOR_HOST")
    }
    env["RESUMABLE_DEV_HOME"] = str(home)
    up = resumable(
        env, "dev", "up", "--detach", "--json", "--pipeline",
        "tests.support.serverless_pipelines:faulty", "--lease-seconds", "3", timeout=180,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)  # exactly one JSON object
    groups = [info["supervisor_pid"], *info["emulators"].values()]
    groups += [f["pid"] for f in info["functions"].values()]
    try:
        assert set(info["functions"]) == {"start_run", "dead_letter", "watchdog", "a", "b", "c"}
        assert set(info["step_topics"]) == {"a", "b", "c"}
        assert info["start_topic"].endswith("/topics/resumable-start")
        assert info["env"]["RESUMABLE_PROJECT"] == info["project"]
        assert set(info["emulators"]) == {"pubsub", "firestore", "storage"}
        assert len(process_groups_alive(groups)) >= len(groups)
        # No settings but the stack's home: the commands find the stack by its state file.
        workdir = tmp_path / "work"
        workdir.mkdir()
        run_id = start(env, workdir)
        watched = resumable(env, "watch", run_id, "--interval", "0.2")
        assert watched.returncode == 0, watched.stdout + watched.stderr
    finally:
        down = resumable(env, "dev", "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert process_groups_alive(groups) == []
    assert not (home / "state.json").exists()
    again = resumable(env, "dev", "down")
    assert again.returncode == 0 and "no local stack running" in again.stdout


@pytest.fixture(autouse=True)
def _no_leftover_stack(tmp_path: Path) -> Iterator[None]:
    """If a test fails half-way, stop what its detached stack left running."""
    yield
    down_detached(tmp_path / "dev")
