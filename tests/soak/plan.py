"""What a soak does, drawn from its seed before it starts: the runs, and for each run the
user operations on it (duplicate start and step messages, cancel, resume, resume after
cancel, resume ``--from-step``) at times relative to the soak's start.

The same seed gives the same plan; the schedule the stack then plays out depends on
timing and is not reproducible — that is the point of a soak.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

from . import pipeline

STEPS = tuple(pipeline.STEPS)


@dataclass(frozen=True)
class SoakConfig:
    runs: int = 100
    kills: int = 50
    seed: int = 0
    item_seconds: float = 0.15  # the pause per frame of ``scan``: kills land mid-step
    storage_fault_rate: float = 0.03  # of the functions' Cloud Storage requests
    lease_seconds: float = 5.0
    kill_gap_seconds: float = 2.0  # mean time between two kills
    start_window_seconds: float | None = None  # default: 0.4 s per run
    end_timeout_seconds: float = 300.0  # for every run to end once the chaos stopped

    @classmethod
    def from_env(cls, **overrides: Any) -> SoakConfig:
        """``SOAK_RUNS``, ``SOAK_KILLS``, ``SOAK_SEED`` (and ``SOAK_STORAGE_FAULTS``, the
        fault rate), then ``overrides``."""
        values: dict[str, Any] = {}
        for name, variable, kind in (
            ("runs", "SOAK_RUNS", int),
            ("kills", "SOAK_KILLS", int),
            ("seed", "SOAK_SEED", int),
            ("storage_fault_rate", "SOAK_STORAGE_FAULTS", float),
        ):
            if os.environ.get(variable):
                values[name] = kind(os.environ[variable])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def start_window(self) -> float:
        if self.start_window_seconds is not None:
            return self.start_window_seconds
        return 0.4 * self.runs


@dataclass
class RunPlan:
    index: int
    run_id: str
    params: dict[str, Any]
    start_at: float
    fail: bool = False
    cancel_at: float | None = None
    resume_after_cancel: bool = False
    resume_at: float | None = None  # a plain resume at a random moment (often refused)
    from_step: str | None = None  # once completed, resume --from-step this step
    duplicate_starts: list[float] = field(default_factory=list)
    duplicate_steps: list[tuple[float, str]] = field(default_factory=list)


def _some(rng: random.Random, indexes: list[int], share: float) -> set[int]:
    """``share`` of ``indexes`` (at least one), drawn at random."""
    return set(rng.sample(indexes, max(1, min(len(indexes), round(share * len(indexes))))))


def make_plan(config: SoakConfig, *, token: str) -> list[RunPlan]:
    """The runs of a soak; run ids are ``soak-{token}-{n}`` so soaks never share a run."""
    rng = random.Random(config.seed)
    indexes = list(range(config.runs))
    failing = _some(rng, indexes, 0.05)
    others = [i for i in indexes if i not in failing]
    cancelled = _some(rng, others, 0.15)
    resumed_after_cancel = _some(rng, sorted(cancelled), 2 / 3)
    resumed = _some(rng, others, 0.10)
    rolled_back = _some(rng, [i for i in others if i not in cancelled], 0.05)
    duplicated = _some(rng, indexes, 0.5)
    plans = []
    for i in indexes:
        run_id = f"soak-{token}-{i:04d}"
        start = rng.uniform(0, config.start_window)
        plan = RunPlan(
            index=i,
            run_id=run_id,
            params=pipeline.params(run_id, i, fail=i in failing),
            start_at=start,
            fail=i in failing,
        )
        if i in cancelled:
            plan.cancel_at = start + rng.uniform(0.5, 12.0)
            plan.resume_after_cancel = i in resumed_after_cancel
        if i in resumed:
            plan.resume_at = start + rng.uniform(1.0, 15.0)
        if i in rolled_back:
            plan.from_step = rng.choice(STEPS)
        if i in duplicated:
            plan.duplicate_starts.append(start + rng.uniform(0.0, 20.0))
        for _ in range(rng.choice((0, 1, 1, 2))):
            plan.duplicate_steps.append((start + rng.uniform(0.5, 15.0), rng.choice(STEPS)))
        plans.append(plan)
    return plans
