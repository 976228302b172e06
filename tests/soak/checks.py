"""The guarantees of design.md, checked on every run of a soak once it is over.

- every run ended: ``completed``, ``error`` or ``cancelled``, with its steps agreeing;
- a completed run's final context equals an uninterrupted in-process run's;
- each step committed once per run generation in which it was (re)run: exactly once for
  a completed step of a run never rolled back with ``--from-step``, and the committed
  output is the one of the attempt the run document names (never a stale worker's);
- a run ended ``error`` only for a reason: the step configured to fail, or a step given
  up after repeated kills or storage faults while it ran (reported apart);
- a run ended ``cancelled`` only after a cancel, and a cancel not followed by a resume
  ended the run ``cancelled`` (or ``completed``, when every step had completed).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from resumable.serverless._engine import Engine
from resumable.serverless._run_state import RunState
from resumable.status import RunStatus, StepStatus

from .ledger import Ledger, Operation
from .pipeline import FAILURE, PIPELINE_NAME
from .plan import RunPlan

FINISHED = {RunStatus.COMPLETED, RunStatus.ERROR, RunStatus.CANCELLED}
GIVEN_UP = re.compile(r"gave up after \d+ attempts|exhausted its delivery attempts")


@dataclass
class Verdict:
    statuses: Counter[str] = field(default_factory=Counter)
    failed_as_configured: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)  # "run: step (kills, faults): error"
    failures: list[str] = field(default_factory=list)


def check_runs(
    engine: Engine,
    plans: list[RunPlan],
    ledger: Ledger,
    *,
    reference: Callable[[dict[str, Any]], dict[str, Any]],
    faults_by_run: Counter[str],
) -> Verdict:
    verdict = Verdict()
    spec = engine.registry.get(PIPELINE_NAME).spec
    for plan in plans:
        state = engine.runs.get(engine.doc_id("default", PIPELINE_NAME, plan.run_id))
        if state is None:
            verdict.failures.append(f"{plan.run_id}: never started")
            continue
        verdict.statuses[state.status] += 1
        if state.status not in FINISHED:
            steps = {n: str(r.status) for n, r in state.steps.items()}
            verdict.failures.append(f"{plan.run_id}: did not end: {state.status}, steps {steps}")
            continue
        operations = ledger.of(plan.run_id)
        problems = _consistent(state) + _commits(state, operations) + _cancel(state, operations)
        if state.status == RunStatus.COMPLETED:
            if plan.fail:
                problems.append("completed although its params ask it to fail")
            else:
                final = engine.files(state).final_context(state, spec)
                problems += _same_context(final, reference(plan.params))
        if state.status == RunStatus.ERROR:
            problems += _explain_error(plan, state, ledger, faults_by_run, verdict)
        verdict.failures += [f"{plan.run_id}: {p}" for p in problems]
    return verdict


def _consistent(state: RunState) -> list[str]:
    statuses = {r.status for r in state.steps.values()}
    agrees = {
        RunStatus.COMPLETED: statuses == {StepStatus.COMPLETED},
        RunStatus.CANCELLED: statuses != {StepStatus.COMPLETED},
        RunStatus.ERROR: StepStatus.ERROR in statuses,
    }[RunStatus(state.status)]
    return [] if agrees else [f"ended {state.status} with steps {sorted(statuses)}"]


def _commits(state: RunState, operations: list[Operation]) -> list[str]:
    """One commit per generation in which the step was (re)run: a step runs again only
    after a ``--from-step`` resume rolled it back (a plain resume keeps what completed)."""
    problems = []
    for name, step in state.steps.items():
        rolled = [op for op in operations if op.kind == "from_step" and name in op.steps]
        certain = sum(1 for op in rolled if op.applied)
        possible = sum(1 for op in rolled if op.applied is not False)
        completed = step.status == StepStatus.COMPLETED
        low = 1 if completed else 0
        high = possible + low
        if not low <= step.commits <= high:
            problems.append(
                f"step {name} ({step.status}) committed {step.commits} times; "
                f"{certain} roll-back(s) of it were applied, so expected {low}..{high}"
            )
        expected = f"attempt-{step.attempt:04d}.json"
        if completed and not (step.manifest or "").endswith(expected):
            problems.append(
                f"step {name} points at {step.manifest}, not the output of its attempt "
                f"{step.attempt} (a stale worker's output was committed)"
            )
    return problems


def _cancel(state: RunState, operations: list[Operation]) -> list[str]:
    requests = [op for op in operations if op.kind in ("cancel", "resume", "from_step")]
    requests = [op for op in requests if op.applied is not False]
    cancels = [op for op in requests if op.kind == "cancel"]
    if state.status == RunStatus.CANCELLED and not cancels:
        return ["ended cancelled, but nobody cancelled it"]
    if not requests:
        return []
    last = requests[-1]
    if last.kind != "cancel" and last.applied and state.status == RunStatus.CANCELLED:
        return [f"ended cancelled although its last request was an applied {last.kind}"]
    if last.kind == "cancel" and last.applied and state.status == RunStatus.ERROR:
        return ["cancelled, then ended in error (a cancel ends a run cancelled or completed)"]
    return []


def _explain_error(
    plan: RunPlan,
    state: RunState,
    ledger: Ledger,
    faults_by_run: Counter[str],
    verdict: Verdict,
) -> list[str]:
    failed = [n for n, r in state.steps.items() if r.status == StepStatus.ERROR]
    error = state.error or ""
    if plan.fail and failed == ["checks"] and FAILURE in error:
        verdict.failed_as_configured.append(plan.run_id)
        return []
    end = state.finished_at or state.updated_at
    for step in failed:
        kills = ledger.kills_of(step, state.created_at, end)
        faults = faults_by_run[plan.run_id]
        if GIVEN_UP.search(error) and (kills or faults):
            verdict.given_up.append(
                f"{plan.run_id}: {step} ({kills} kill(s) of its function, {faults} storage "
                f"fault(s) on the run): {error[:160]}"
            )
            return []
    return [f"ended in error without a reason the soak caused: {failed}: {error[:300]}"]


def _same_context(final: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    differ = sorted(
        k for k in final.keys() | expected.keys() if not _same(final.get(k), expected.get(k))
    )
    if not differ:
        return []
    return [f"final context differs from the in-process reference in {differ}"]


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return bool(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes())
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
