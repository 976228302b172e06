"""README claims about the local stack: a run started with the real ``gcloud pubsub topics
publish`` (the command ``dev up`` prints), and a foreground ``resumable dev up`` stopped
with Ctrl-C leaving no process and no state file behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from resumable.cli._dev import GCLOUD_TOKEN
from resumable.dev._stack import DevStack, down_detached
from resumable.serverless._engine import Engine
from tests.integration.test_cli_cloud import process_groups_alive
from tests.integration.test_serverless_faults import calls, commits, finished, wait_for

pytestmark = [pytest.mark.emulators, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_a_run_started_with_gcloud_pubsub_topics_publish_completes(
    stack: DevStack, engine: Engine, tmp_path: Path
) -> None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.skip("gcloud is not installed: the README's gcloud command cannot be run here")
    token = tmp_path / GCLOUD_TOKEN  # what `dev up` writes beside its state
    token.write_text("local-emulator\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    run_id = f"gcloud-{uuid.uuid4().hex[:8]}"
    body = {"pipeline": "faulty", "params": {"workdir": str(workdir)}, "run_id": run_id}
    env = {
        **os.environ,
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB": f"http://{os.environ['PUBSUB_EMULATOR_HOST']}/",
        "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud-config"),  # not the user's gcloud settings
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
    }
    published = subprocess.run(
        [
            gcloud, "pubsub", "topics", "publish", f"{stack.prefix}-start",
            f"--project={stack.project}", f"--message={json.dumps(body)}",
        ],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    assert "messageIds" in published.stdout

    state = wait_for(engine, run_id, "faulty", finished)
    assert state.status == "completed"
    assert commits(state) == {"a": 1, "b": 1, "c": 1}
    assert calls(workdir) == {"a": 1, "b": 1, "c": 1}


@pytest.fixture
def dev_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "dev"
    yield home
    down_detached(home)  # if the test failed half-way: stop what is left


def test_dev_up_in_the_foreground_stops_everything_on_ctrl_c(dev_home: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RESUMABLE_") and not k.endswith("_EMULATOR_HOST")
    }
    env.update({"RESUMABLE_DEV_HOME": str(dev_home), "PYTHONPATH": str(ROOT)})
    up = subprocess.Popen(
        [sys.executable, "-m", "resumable.cli", "dev", "up", "--pipeline",
         "tests.support.serverless_pipelines:faulty", "--lease-seconds", "3"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )  # fmt: skip
    try:
        assert up.stdout is not None
        lines = []
        for line in up.stdout:
            lines.append(line)
            if "Ctrl-C stops the stack." in line:
                break
        else:
            raise AssertionError("dev up never announced the stack:\n" + "".join(lines))
        state = json.loads((dev_home / "state.json").read_text())
        assert state["supervisor_pid"] == up.pid
        groups = [*state["emulators"].values(), *(f["pid"] for f in state["functions"].values())]
        assert set(state["emulators"]) == {"pubsub", "firestore", "storage"}
        assert len(process_groups_alive(groups)) >= len(groups)

        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground group
        _out, err = up.communicate(timeout=120)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=30)
    assert up.returncode == 0, err
    assert "local stack stopped" in err
    deadline = time.monotonic() + 30
    while process_groups_alive([*groups, up.pid]) and time.monotonic() < deadline:
        time.sleep(0.2)  # a killed group's last members may take a moment to be reaped
    assert process_groups_alive([*groups, up.pid]) == []
    assert not (dev_home / "state.json").exists()
