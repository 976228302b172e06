"""``make demo``: the serverless demo script, run as users run it, starts its own local
stack, kills one step's instance mid-step, sees the run resume and finish, then kills a map
item's instance, and exits 0 only when every check it prints holds (one commit per step,
an identical dataset, only the killed item claimed again)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.emulators, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_the_serverless_demo_resumes_a_killed_step_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "serverless_demo.py"), "--plain"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # a guard against a hang; how long it takes is not what this checks
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "SIGKILL to the process group" in output
    assert "restarting it (restart #1)" in output
    assert "identical: yes" in output
    assert "run completed" in output
    # The map over a folder of clips: the killed item alone ran again.
    assert "SIGKILL pid" in output and "the instance processing clip-long" in output
    assert "claims per item: {0: 1, 1: 1, 2: 1, 3: 2}" in output
