"""Guards broken on purpose, to show the simulation finds each one (``make sim-mutations``).

Each mutation reverts one fix or removes one check of the step protocol; for each, the
schedules run from seed 0 until one violates an invariant. A mutation that survives
the CI budget of seeds would mean the simulation cannot see that guard: a hole to fix
in the simulation, not in the code.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from resumable.serverless import _worker as worker
from resumable.serverless import transitions
from resumable.status import RunStatus, StepStatus

from .invariants import check
from .world import simulate


@contextlib.contextmanager
def patched(target: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


def no_lease_check_at_commit() -> contextlib.AbstractContextManager[None]:
    """Commit whoever asks, as long as the step is running (no owner/attempt fence)."""
    original = transitions.commit

    def commit(state: Any, spec: Any, step: str, **kw: Any) -> Any:
        record = state.steps[step]
        if record.status == StepStatus.RUNNING:
            kw = {**kw, "owner": record.lease_owner, "attempt": record.attempt}
        return original(state, spec, step, **kw)

    return patched(transitions, "commit", commit)


def heartbeat_only_while_running() -> contextlib.AbstractContextManager[None]:
    """Defect 4: the lease is renewed only while the step function runs, not while its
    input loads or its output is written."""
    real_lease = worker.StepAttempt.lease
    original_run = worker.StepAttempt.run

    class Unrenewed:
        """Stands for the lease from claim to commit: renews nothing."""

        lost = False

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    def run(self: Any, lease: Any) -> Any:
        with real_lease(self) as live:
            result = original_run(self, live)
        lease.lost = live.lost
        return result

    stack = contextlib.ExitStack()
    stack.enter_context(patched(worker.StepAttempt, "lease", lambda self: Unrenewed()))
    stack.enter_context(patched(worker.StepAttempt, "run", run))
    return stack


def cancel_hides_completion() -> contextlib.AbstractContextManager[None]:
    """Defect 5: a cancel requested during the last step ends the run ``cancelled``."""
    original = transitions.commit

    def commit(state: Any, spec: Any, step: str, **kw: Any) -> Any:
        decision = original(state, spec, step, **kw)
        new = decision.state
        if new is not None and state.cancel_requested and new.status == RunStatus.COMPLETED:
            new.status = RunStatus.CANCELLED
            return replace(decision, result=replace(decision.result, run_status=new.status))
        return decision

    return patched(transitions, "commit", commit)


def unfenced_dead_letters() -> contextlib.AbstractContextManager[None]:
    """Defect 6: a dead letter from before a resume fails the resumed run."""
    original = transitions.dead_letter

    def dead_letter(state: Any, step: str, **kw: Any) -> Any:
        return original(state, step, **{**kw, "generation": state.generation})

    return patched(transitions, "dead_letter", dead_letter)


def resume_drops_progress() -> contextlib.AbstractContextManager[None]:
    """Defect 10: resume discards the unfinished steps' saved progress."""
    original = transitions.resume

    def resume(state: Any, spec: Any, **kw: Any) -> Any:
        decision = original(state, spec, **kw)
        if decision.state is not None:
            for record in decision.state.steps.values():
                if record.status != StepStatus.COMPLETED:
                    record.progress_manifest = None
        return decision

    return patched(transitions, "resume", resume)


def no_generation_check_at_claim() -> contextlib.AbstractContextManager[None]:
    """Claims ignore the message's generation (stale messages are served)."""
    original = transitions.claim

    def claim(state: Any, spec: Any, step: str, **kw: Any) -> Any:
        return original(state, spec, step, **{**kw, "generation": None})

    return patched(transitions, "claim", claim)


def retry_keeps_failed_changes() -> contextlib.AbstractContextManager[None]:
    """Defect 8: a retry starts from what the failed attempt changed in place."""
    from resumable.local import _run_context as run_context

    return patched(run_context.RunContext, "failed", lambda self, attempt: None)


def parallel_steps_share_objects() -> contextlib.AbstractContextManager[None]:
    """Defects 1-2: steps running side by side get the same objects."""
    from resumable.local import _run_context as run_context

    original = run_context.RunContext.input_for

    def input_for(self: Any, step: str, *, isolated: bool) -> Any:
        return original(self, step, isolated=False)

    return patched(run_context.RunContext, "input_for", input_for)


def commit_drops_all_progress() -> contextlib.AbstractContextManager[None]:
    """Defect 2: a step's commit checkpoint drops its siblings' saved progress."""
    from resumable.local import _run_context as run_context

    original = run_context.RunContext.commit

    def commit(self: Any, attempt: Any, updates: Any) -> Any:
        delta = original(self, attempt, updates)
        self.progress.clear()
        return delta

    return patched(run_context.RunContext, "commit", commit)


def new_version_keeps_old_progress() -> contextlib.AbstractContextManager[None]:
    """Defect 3: a step whose version changed resumes from the old version's progress."""
    from resumable.local import _resume

    original = _resume._adopt_entries

    def adopt(spec: Any, context: Any, manifest: Any, valid: list[str]) -> None:
        original(spec, context, manifest, valid)
        for step, delta in manifest.progress.items():
            context.progress.setdefault(step, delta)

    return patched(_resume, "_adopt_entries", adopt)


def unfenced_item_finish() -> contextlib.AbstractContextManager[None]:
    """A map item's result is recorded whoever finishes it (no owner/attempt fence): a
    stale item worker counts its item twice, and the join comes before every item did."""
    from resumable.serverless import _map_items
    from resumable.serverless._map_state import ItemStatus

    original = _map_items.finish_item

    def finish(item: Any, **kw: Any) -> Any:
        if item is not None:
            item = item.model_copy(update={"status": ItemStatus.RUNNING})
            kw = {**kw, "owner": item.lease_owner, "attempt": item.attempt}
        return original(item, **kw)

    return patched(_map_items, "finish_item", finish)


def redrive_keeps_failed_count() -> contextlib.AbstractContextManager[None]:
    """A redriven item stays on the failed counter: the join comes too early."""
    from resumable.serverless import _map

    original = _map.redrive_item

    def redrive(item: Any, **kw: Any) -> Any:
        decision = original(item, **kw)
        return replace(decision, change=None)

    return patched(_map, "redrive_item", redrive)


def entries_compared_by_equality() -> contextlib.AbstractContextManager[None]:
    """The exactness bug of 6830ec6: checkpoint entries compared with Python's ``==``, so a
    step that turns ``1`` into ``1.0`` or ``0`` into ``False`` has the change dropped."""
    from resumable.checkpoint import _deltas

    return patched(_deltas, "same_entry", lambda a, b: a == b)


def map_reruns_saved_items() -> contextlib.AbstractContextManager[None]:
    """A resumed map step runs every item again, the checkpointed ones too (its output is
    still right: only the promise "a killed run resumes with the unfinished items only"
    breaks)."""
    from resumable.local import _map

    original = _map.MapRun._run

    def run_all(self: Any, items: list[Any], pending: list[int], view: Any) -> bool:
        return original(self, items, list(range(len(items))), view)

    return patched(_map.MapRun, "_run", run_all)


def map_resume_skips_failed_items() -> contextlib.AbstractContextManager[None]:
    """A resumed map step does not run its failed items again (they stay failed)."""
    from resumable.local import _map

    original = _map.MapRun._run

    def run_unfailed(self: Any, items: list[Any], pending: list[int], view: Any) -> bool:
        _results, failed = self._finished()
        return original(self, items, [i for i in pending if i not in failed], view)

    return patched(_map.MapRun, "_run", run_unfailed)


INPROCESS_MUTATIONS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "retry_keeps_failed_changes": retry_keeps_failed_changes,
    "parallel_steps_share_objects": parallel_steps_share_objects,
    "commit_drops_all_progress": commit_drops_all_progress,
    "new_version_keeps_old_progress": new_version_keeps_old_progress,
    "entries_compared_by_equality_inprocess": entries_compared_by_equality,
    "map_reruns_saved_items": map_reruns_saved_items,
    "map_resume_skips_failed_items": map_resume_skips_failed_items,
}


MUTATIONS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "no_lease_check_at_commit": no_lease_check_at_commit,
    "heartbeat_only_while_running": heartbeat_only_while_running,
    "cancel_hides_completion": cancel_hides_completion,
    "unfenced_dead_letters": unfenced_dead_letters,
    "resume_drops_progress": resume_drops_progress,
    "no_generation_check_at_claim": no_generation_check_at_claim,
    "unfenced_item_finish": unfenced_item_finish,
    "redrive_keeps_failed_count": redrive_keeps_failed_count,
    "entries_compared_by_equality": entries_compared_by_equality,
}


def first_failing_seed(mutation: str, budget: int) -> tuple[int | None, list[str]]:
    if mutation in INPROCESS_MUTATIONS:
        from .inprocess import schedule

        with INPROCESS_MUTATIONS[mutation]():
            for seed in range(budget):
                problems = schedule(seed)
                if problems:
                    return seed, problems
        return None, []
    with MUTATIONS[mutation]():
        for seed in range(budget):
            problems = check(simulate(seed))
            if problems:
                return seed, problems
    return None, []


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation.mutations")
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("names", nargs="*", default=sorted({**MUTATIONS, **INPROCESS_MUTATIONS}))
    args = parser.parse_args()
    survived = 0
    for name in args.names:
        seed, problems = first_failing_seed(name, args.budget)
        if seed is None:
            survived += 1
            print(f"{name}: NOT FOUND in {args.budget} seeds")
        else:
            print(f"{name}: found at seed {seed} ({seed + 1} schedules): {problems[0]}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
