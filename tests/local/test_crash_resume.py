"""A run SIGKILLed mid-step resumes in a new process: finished steps never run again and
the final context equals an uninterrupted run's, numpy arrays bit-exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.crash_pipeline import CrashPipeline
from tests.support.exact import assert_exact

SCRIPT = Path(__file__).parents[1] / "support" / "crash_pipeline.py"
ROOT = Path(__file__).parents[2]


def _start(storage: str, run_id: str, workdir: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), storage, run_id, str(workdir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _wait_for(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def _finish(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()[-3000:]
    return dict(orjson.loads(out.splitlines()[-1]))


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _final_context(storage: str, run_id: str, workdir: Path) -> dict[str, Any]:
    loaded = CrashPipeline(storage, run_id, workdir, None, None).load_checkpoint()
    assert loaded is not None and loaded.manifest.status == "completed"
    return loaded.context


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.emulators)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    bucket = request.getfixturevalue("gcs_bucket")
    return f"gs://{bucket}/pipelines"


def test_sigkill_during_a_step_resumes_at_that_step_with_an_exact_context(
    storage: str, tmp_path: Path
) -> None:
    reference_dir, crash_dir = tmp_path / "reference", tmp_path / "crash"
    reference_dir.mkdir()
    crash_dir.mkdir()
    reference = _finish(_start(storage, "reference-run", reference_dir))
    assert reference["status"] == "completed"

    run_id = f"crash-{uuid.uuid4().hex[:8]}"
    first = _start(storage, run_id, crash_dir, "--hang-in", "crop")
    _wait_for((crash_dir / "started-crop").exists, "step crop to start")
    _kill(first)
    calls_before = Counter(_lines(crash_dir / "calls.log"))
    assert calls_before == {"make_frames": 1, "detect": 1, "process_items": 1, "crop": 1}

    resumed = _finish(_start(storage, run_id, crash_dir, "--resume"))
    assert resumed["resumed_from_checkpoint"] is True
    assert resumed["steps_skipped"] == ["make_frames", "detect", "process_items"]
    assert resumed["steps_completed"] == ["crop", "augment", "summarize"]
    calls = Counter(_lines(crash_dir / "calls.log"))
    assert calls == {
        "make_frames": 1,
        "detect": 1,
        "process_items": 1,
        "crop": 2,
        "augment": 1,
        "summarize": 1,
    }

    assert_exact(
        _final_context(storage, "reference-run", reference_dir),
        _final_context(storage, run_id, crash_dir),
    )


def test_a_step_killed_after_item_45_resumes_at_item_41(storage: str, tmp_path: Path) -> None:
    run_id = f"items-{uuid.uuid4().hex[:8]}"
    first = _start(storage, run_id, tmp_path, "--hang-after-item", "45")
    _wait_for(lambda: len(_lines(tmp_path / "items.log")) >= 45, "item 45")
    _kill(first)
    assert _lines(tmp_path / "items.log") == [str(i) for i in range(1, 46)]

    resumed = _finish(_start(storage, run_id, tmp_path, "--resume"))
    assert resumed["status"] == "completed"
    items = [int(i) for i in _lines(tmp_path / "items.log")]
    after_kill = items[45:]
    assert after_kill == list(range(41, 101)), "resumed at the last saved progress (item 40)"
    assert len(items) == 45 + 60
    context = _final_context(storage, run_id, tmp_path)
    assert context["item_totals"] == [i * 2 for i in range(1, 101)]
    assert Counter(_lines(tmp_path / "calls.log"))["make_frames"] == 1
