"""The in-process runner under hundreds of seeded kill-and-resume schedules (see
``tests/simulation/inprocess.py``); ``make sim`` runs more."""

from __future__ import annotations

import os

import pytest

from .inprocess import schedule
from .mutations import first_failing_seed
from .world import quiet_library_logs

SCHEDULES = int(os.environ.get("RESUMABLE_SIM_INPROCESS", "600"))
CHUNK = 200


@pytest.mark.parametrize("start", range(0, SCHEDULES, CHUNK))
def test_every_kill_and_resume_schedule_ends_exact(start: int) -> None:
    failures = []
    for seed in range(start, min(start + CHUNK, SCHEDULES)):
        with quiet_library_logs():
            problems = schedule(seed)
        if problems:
            replay = f"python -m tests.simulation --inprocess --start {seed} --seeds 1"
            failures.append(f"seed {seed} ({replay}):\n  " + "\n  ".join(problems))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "mutation",
    [
        "retry_keeps_failed_changes",
        "new_version_keeps_old_progress",
        "entries_compared_by_equality_inprocess",
        "map_reruns_saved_items",
        "map_resume_skips_failed_items",
    ],
)
def test_the_in_process_simulation_finds_a_broken_guard(mutation: str) -> None:
    """Guards whose breach shows in sequential schedules (deterministic); the guards of
    parallel steps depend on thread timing, so ``make sim-mutations`` reports them."""
    seed, problems = first_failing_seed(mutation, 400)
    assert seed is not None, f"{mutation} survived 400 schedules"
    assert problems
