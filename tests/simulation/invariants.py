"""The guarantees of design.md, checked on the history of one simulated schedule.

1. every run ends — ``completed``, ``error`` or ``cancelled`` — within the horizon;
2. each step's output is committed at most once per run generation;
3. a completed run's final context equals the context of an uninterrupted run;
4. no step ran from an input that was rolled back or not yet committed: the attempt
   that wrote a committed output read exactly the params, the outputs its ancestors had
   committed (still valid at its commit), and at most its own progress saved since its
   last roll-back;
5. a cancel ends the run ``cancelled`` (or ``completed`` if everything had finished),
   unless a later resume was accepted; a run's status agrees with its steps' (``completed``
   when all completed, ``cancelled`` only when not, ``error`` with a failed step);
6. a stale worker, message or dead letter changes nothing: every commit is the output of
   the attempt holding the lease, and no message of another run generation changes the
   run document;
7. a run fails only for a reason: a step configured to fail, or faults injected into
   that step's deliveries (crashes, storage errors), never on its own;
8. nothing raises where it must not: an exception escaping a function other than an
   injected fault is a bug (a 500 and a redelivery forever, in production).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Any

from resumable.serverless._messages import parse_step
from resumable.serverless._run_files import RunFiles
from resumable.status import RunStatus, StepStatus

from . import oracle
from . import pipelines as sim_pipelines
from .scheduler import InjectedFault
from .services import CommitEvent, ResetEvent
from .world import World

FINISHED = {RunStatus.COMPLETED, RunStatus.ERROR, RunStatus.CANCELLED}


def check(world: World) -> list[str]:
    problems: list[str] = []
    for name, exc in world.sim.errors:
        if not isinstance(exc, InjectedFault):
            problems.append(f"{name} raised {type(exc).__name__}: {exc}")
    problems.extend(world.documents.stale_writes)
    problems.extend(_check_leases_kept(world))
    problems.extend(_check_item_counts(world))
    for c in world.documents.commits:
        if not c.manifest.endswith(f"/attempt-{c.lease_attempt:04d}.json"):
            problems.append(
                f"{c.run}: step {c.step} committed {c.manifest} while attempt {c.lease_attempt} "
                "held its lease (a stale worker's output)"
            )
    counts = Counter((c.run, c.step, c.generation) for c in world.documents.commits)
    for (run, step, generation), n in counts.items():
        if n > 1:
            problems.append(f"{run}: step {step} committed {n} times in generation {generation}")
    for plan in world.runs:
        problems.extend(_check_run(world, plan.run_id, plan.pipeline, plan.params))
    return problems


def _check_run(world: World, run_id: str, pipeline: str, params: dict[str, Any]) -> list[str]:
    state = world.state(run_id)
    if state is None:
        return [f"{run_id}: never started"]
    if state.status not in FINISHED:
        stuck = {n: r.status for n, r in state.steps.items()}
        return [f"{run_id}: did not end: {state.status}, steps {stuck}"]
    problems = []
    spec = sim_pipelines.PIPELINES[pipeline].spec
    statuses = {r.status for r in state.steps.values()}
    consistent = {
        RunStatus.COMPLETED: statuses == {StepStatus.COMPLETED},
        RunStatus.CANCELLED: statuses != {StepStatus.COMPLETED},
        RunStatus.ERROR: StepStatus.ERROR in statuses,
    }
    if not consistent[RunStatus(state.status)]:
        problems.append(f"{run_id}: ended {state.status} with steps {sorted(statuses)}")
    if state.status == RunStatus.COMPLETED:
        files = RunFiles(world.store.inner, "default", pipeline, run_id)
        final = files.final_context(state, spec)
        expected = reference(pipeline, tuple(sorted(params.items())))
        if sim_pipelines.digest(final) != expected:
            problems.append(f"{run_id}: final context differs from an uninterrupted run's")
    problems += _check_provenance(world, run_id, pipeline, spec)
    problems += _check_progress_kept(world, run_id)
    problems += _check_cancel(world, run_id, state.status)
    if state.status == RunStatus.ERROR:
        problems += _check_error_explained(world, run_id, pipeline, state)
    return problems


@functools.cache
def reference(pipeline: str, params: tuple[tuple[str, Any], ...]) -> str:
    """The final context digest of a correct run: the documented semantics interpreted in
    plain Python (:mod:`.oracle`), not the code under test run without faults."""
    final = oracle.final_context(sim_pipelines.PIPELINES[pipeline], dict(params))
    return sim_pipelines.digest(final)


def _valid_manifest(
    commits: list[CommitEvent], resets: list[ResetEvent], step: str, at: float
) -> str | None:
    """The output of ``step`` the run document pointed at, at time ``at``."""
    events: list[tuple[float, str | None]] = [
        (c.time, c.manifest) for c in commits if c.step == step
    ]
    events += [(r.time, None) for r in resets if step in r.steps]
    current = None
    for time, manifest in sorted(events, key=lambda e: e[0]):
        if time > at:
            break
        current = manifest
    return current


def _check_provenance(world: World, run_id: str, pipeline: str, spec: Any) -> list[str]:
    problems = []
    commits = [c for c in world.documents.commits if c.run == run_id]
    resets = [r for r in world.documents.resets if r.run == run_id]
    prefix = f"runs/default/{pipeline}/{run_id}/"
    log = world.store.log
    for commit in commits:
        writer = next(
            (r.process for r in log if r.operation == "write" and r.name == commit.manifest), None
        )
        if writer is None:
            problems.append(f"{run_id}: committed manifest {commit.manifest} was never written")
            continue
        written_at = next(
            r.time for r in log if r.operation == "write" and r.name == commit.manifest
        )
        reads = [
            r
            for r in log
            if r.process == writer
            and r.operation == "read"
            and r.name.startswith(prefix + "steps/")
            and "/map-" not in r.name  # a map step's item pages: its own listing
            and r.time <= written_at
        ]
        ancestors = spec.ancestors(commit.step)
        last_reset = max(
            (r.time for r in resets if commit.step in r.steps and r.time <= commit.time),
            default=0.0,
        )
        for read in reads:
            step = read.name[len(prefix + "steps/") :].split("/", 1)[0]
            if step == commit.step:
                saved_at = next(
                    (w.time for w in log if w.operation == "write" and w.name == read.name), None
                )
                if "-progress-" not in read.name or saved_at is None or saved_at < last_reset:
                    problems.append(
                        f"{run_id}: {commit.step} resumed from progress {read.name} saved before "
                        "its roll-back"
                    )
            elif step not in ancestors:
                problems.append(f"{run_id}: {commit.step} read {read.name}, not an ancestor's")
            elif read.name != _valid_manifest(commits, resets, step, commit.time):
                problems.append(
                    f"{run_id}: {commit.step} (generation {commit.generation}) ran from "
                    f"{read.name}, not {step}'s committed output"
                )
        read_steps = {r.name[len(prefix + "steps/") :].split("/", 1)[0] for r in reads}
        # A valid output manifest also lists the context its step left: reading it reads
        # that step's ancestors' outputs (which a roll-back of theirs would have reset).
        read_steps |= {a for s in read_steps if s in spec.steps for a in spec.ancestors(s)}
        missing = {a for a in ancestors if not (read_steps & {a})}
        if missing:
            problems.append(f"{run_id}: {commit.step} committed without reading {sorted(missing)}")
    return problems


def _check_cancel(world: World, run_id: str, status: str) -> list[str]:
    ops = sorted((op for op in world.ops if op.run == run_id), key=lambda op: op.time)
    cancels = [op for op in ops if op.kind == "cancel" and op.outcome == "done"]
    if not cancels:
        return []
    last = cancels[-1]
    if last.status_before in FINISHED:
        return []
    resumed_after = any(
        op.kind in ("resume", "resume_from")
        and op.outcome in ("done", "crashed")
        and op.time >= last.time
        for op in ops
    )
    if resumed_after or status in (RunStatus.CANCELLED, RunStatus.COMPLETED):
        return []
    return [f"{run_id}: cancelled at {last.time:.0f} but ended {status}"]


def _check_error_explained(world: World, run_id: str, pipeline: str, state: Any) -> list[str]:
    """A failure must be the configured one, or follow from faults on the failed step: a
    step given up after N attempts of which F failed with an error lost N - F leases, and
    each lost lease needs a fault (a crash, a storage error, a conflict) of its own."""
    failed = [n for n, r in state.steps.items() if r.status == StepStatus.ERROR]
    if sim_pipelines.FAILING_STEPS.get(pipeline) in failed:
        return []
    faults = Counter(
        world.process_of[process]
        for _time, process, _where in world.sim.crashes
        if process in world.process_of
    )
    for delivery in world.pubsub.deliveries:  # pushes that never reached a function
        lost = sum(1 for outcome in delivery.outcomes if outcome.endswith("unreachable"))
        if lost:
            message = parse_step(delivery.data)
            faults[(message.run_id, message.step)] += lost
    error = state.error or ""
    for step in failed:
        found = faults[(run_id, step)]
        # A step, or a map step's item ("raised" for an item).
        gave_up = re.search(r"gave up after (\d+) attempts \((\d+) (?:failed|raised)", error)
        if gave_up and found >= int(gave_up[1]) - int(gave_up[2]) - 1:
            return []
        exhausted = ("exhausted its delivery attempts", "was dead-lettered after")
        if any(e in error for e in exhausted) and found:
            return []
    return [f"{run_id}: ended in error without faults enough to explain it: {error}"]


def _intended_resets(world: World, run_id: str) -> list[ResetEvent]:
    """The roll-backs users asked for: each generation change of the run, with the steps
    its ``resume --from-step`` named (none for a plain resume). Where the resume's process
    died before it could tell, what the document shows stands."""
    asked = {op.generation: op.reset for op in world.ops if op.run == run_id and op.generation}
    return [
        ResetEvent(r.time, r.run, asked.get(r.generation, r.steps), r.generation)
        for r in world.documents.resets
        if r.run == run_id
    ]


def _check_progress_kept(world: World, run_id: str) -> list[str]:
    """Every execution of a step starts from the progress it last recorded (none after a
    roll-back of that step): saved work is never thrown away."""
    problems = []
    resets = _intended_resets(world, run_id)
    saves = [s for s in world.saves if s[1] == run_id]
    # A worker fenced out (frozen past its lease, or told its attempt is stale) may have
    # loaded its input before newer progress was saved; its work is discarded anyway.
    fenced = {p for _t, p, where in world.sim.crashes if where.startswith("paused")}
    fenced |= {p for p, reason in world.outcomes.items() if "stale" in reason or "lost" in reason}
    for execution in world.executions:
        if execution.run != run_id or execution.process in fenced:
            continue
        since = max(
            (r.time for r in resets if execution.step in r.steps and r.time < execution.time),
            default=0.0,
        )
        recorded = [
            done
            for time, _run, step, done in saves
            if step == execution.step and since < time < execution.time
        ]
        expected = recorded[-1] if recorded else 0
        if execution.progress != expected:
            problems.append(
                f"{run_id}: {execution.step} started at item {execution.progress}, but item "
                f"{expected} had been saved ({execution.process})"
            )
    return problems


def _check_leases_kept(world: World) -> list[str]:
    """A worker that was not hit by a fault keeps its lease to the end: however long
    its input takes to load or its output to write, the heartbeat keeps the lease."""
    faulted = {process for _time, process, where in world.sim.crashes}
    problems = []
    for process, reason in world.outcomes.items():
        lost = reason.startswith(("stale attempt", "lease lost"))
        if lost and process not in faulted:
            problems.append(f"{process} lost its lease without any fault: {reason}")
    return problems


def _check_item_counts(world: World) -> list[str]:
    """Every map item counts once: a map's counters equal its items' statuses (completed,
    failed) — a finish or a give-up counted twice, or a redrive not taken off, shows. The
    store's dicts are read directly: the check must not go through its fault hooks."""
    maps = world.maps
    if maps is None:
        return []
    problems = []
    for run, map_id in list(maps._maps):
        statuses = Counter(
            document["status"]
            for key, (document, _version) in list(maps._items.items())
            if (key.run, key.map_id) == (run, map_id)
        )
        rows = [row for (r, m, _shard), row in maps._counts.items() if (r, m) == (run, map_id)]
        counted = (sum(row[0] for row in rows), sum(row[1] for row in rows))
        if counted != (statuses["completed"], statuses["failed"]):
            problems.append(
                f"{run}: map {map_id} counts {counted[0]} completed and {counted[1]} failed "
                f"items, its item documents {statuses['completed']} and {statuses['failed']}"
            )
    return problems
