"""The serverless protocol under thousands of seeded schedules (see ``tests/simulation``).

CI runs :data:`SEEDS` schedules in chunks; ``make sim SEEDS=100000`` runs more. A failing
schedule prints its seed and the command that replays it alone.
"""

from __future__ import annotations

import os

import pytest

from .invariants import check
from .mutations import first_failing_seed
from .world import simulate

SEEDS = int(os.environ.get("RESUMABLE_SIM_SEEDS", "2000"))
CHUNK = 250


@pytest.mark.parametrize("start", range(0, SEEDS, CHUNK))
def test_every_schedule_keeps_the_guarantees(start: int) -> None:
    failures = []
    for seed in range(start, min(start + CHUNK, SEEDS)):
        problems = check(simulate(seed))
        if problems:
            replay = f"python -m tests.simulation --start {seed} --seeds 1 --verbose"
            failures.append(f"seed {seed} ({replay}):\n  " + "\n  ".join(problems))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("mutation", "budget"),
    [
        ("no_lease_check_at_commit", 1000),
        ("cancel_hides_completion", 400),
        ("redrive_keeps_failed_count", 400),
        ("unfenced_item_finish", 400),
        ("entries_compared_by_equality", 400),
    ],
)
def test_the_simulation_finds_a_broken_guard(mutation: str, budget: int) -> None:
    """Keeps the simulation honest: with a guard removed, some schedule must fail."""
    seed, problems = first_failing_seed(mutation, budget)
    assert seed is not None, f"{mutation} survived {budget} schedules"
    assert problems
