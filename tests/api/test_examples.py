"""The examples: the quickstart pipeline is deterministic and resumable; the demo succeeds."""

from __future__ import annotations

import copy
import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
quickstart: Any = importlib.import_module("quickstart")

FAST = {"frames": 12, "seconds_per_frame": 0}


def _run(storage: str) -> dict[str, Any]:
    result: dict[str, Any] = quickstart.QuickstartPipeline(storage=storage).run(FAST)
    assert result["status"] == "completed", result["errors"]
    context: dict[str, Any] = result["context"]
    return context


def test_quickstart_builds_the_same_dataset_every_time() -> None:
    first, second = _run("memory://quickstart-1"), _run("memory://quickstart-2")

    assert first.keys() == second.keys()
    for key, value in first.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == second[key].dtype and np.array_equal(value, second[key]), key
        else:
            assert value == second[key], key
    summary = first["summary"]
    assert summary["frames"] == 12 and summary["blobs"] > 0
    assert summary["train_samples"] + summary["val_samples"] == len(first["samples"])
    assert first["train"].shape[1:] == (16, 16) and first["train"].dtype == np.float32


def test_quickstart_detect_continues_from_the_frames_it_saved() -> None:
    pipeline = quickstart.QuickstartPipeline(storage="memory://quickstart-3")
    frames = pipeline.synthesize(FAST)["frames"]
    context = {**FAST, "frames": frames}
    saved: list[dict[str, Any]] = []

    def save_progress(progress: dict[str, Any]) -> bool:
        saved.append(copy.deepcopy(progress))  # what the checkpoint holds from now on
        return True

    whole = pipeline.detect(context, save_progress=save_progress)
    partial = saved[0]  # as a resumed run gets it back from its checkpoint
    resumed = pipeline.detect(partial, save_progress=lambda c=None: True)

    assert 0 < len(partial["detections"]) < len(frames)
    assert resumed == whole


def test_demo_kills_a_run_resumes_it_and_finds_it_identical() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "SIGKILL sent" in done.stdout
    assert "step synthesize skipped" in done.stdout
    assert "identical: yes" in done.stdout
    # detect continued from the frames it had saved: the resumed run saved progress only
    # at the frames after them (every 5 frames, not after the last), not from frame 0 again.
    found = re.search(r"detect progress +(\d+) of (\d+) frames", done.stdout)
    assert found, done.stdout
    saved, total = int(found[1]), int(found[2])
    assert 0 < saved < total
    resumed = done.stdout.split("3. Resume the run in a new process", 1)[1]
    saves = [line for line in resumed.splitlines() if "step detect: progress checkpoint" in line]
    assert len(saves) == len(range(saved + 5, total, 5)), resumed
