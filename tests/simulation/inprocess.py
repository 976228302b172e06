"""Seeded schedules of the in-process runner: random pipelines killed at random points.

A schedule builds a random step graph (chains and branches; steps that change arrays in
place, save progress with the whole context or a part of it, fail and retry, change a
value's type only; map steps whose items fail and retry, or fail for good until the next
process), then runs it, killing the process at a random storage write — a checkpoint, a
blob, a progress save — and resumes it in a "new process" (a new ``Pipeline`` on the
same storage), again and again, with parallel workers or without, sometimes bumping a
step's version between two processes or damaging the latest checkpoint, until the run
completes. The invariants:

1. the final context equals what an uninterrupted run of the final definition gives, as
   the documented semantics say in plain Python (:mod:`.oracle`);
2. a step the resumed process skips did commit in an earlier one, and no step a
   checkpoint records as completed runs again (unless its version changed);
3. a resumed map step runs only the items its checkpoint does not hold as finished;
4. a damaged checkpoint never raises without ``strict=True`` (the run falls back to an
   intact one or starts afresh) and never leads to a wrong result either way.

A kill is a :class:`Killed` (a ``BaseException`` nothing catches) raised by the store at
that write; from then on the store refuses every call, as a dead process makes no more.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from resumable import (
    CheckpointError,
    Continue,
    NonRetryableError,
    Pipeline,
    RetryableError,
    save_progress,
)
from resumable.local import _map
from resumable.storage.base import Buffer
from resumable.storage.memory import MemoryStore

from . import oracle
from .pipelines import digest


class Killed(BaseException):
    """The process died here."""


class KillingStore:
    """A memory store whose process dies at its ``kill_at``-th write (0: never)."""

    background_io = True

    def __init__(self, inner: MemoryStore, kill_at: int) -> None:
        self.inner = inner
        self.url = inner.url
        self.stats = inner.stats
        self.kill_at = kill_at
        self.writes = 0
        self.dead = False

    def _alive(self) -> None:
        if self.dead:
            raise Killed

    def write(
        self, name: str, data: Buffer | Sequence[Buffer], *, if_generation_match: int | None = None
    ) -> int:
        self._alive()
        self.writes += 1
        if self.writes == self.kill_at:
            self.dead = True
            raise Killed
        return self.inner.write(name, data, if_generation_match=if_generation_match)

    def read(self, name: str) -> bytes:
        self._alive()
        return self.inner.read(name)

    def read_buffer(self, name: str) -> bytearray:
        self._alive()
        return self.inner.read_buffer(name)

    def read_with_generation(self, name: str) -> tuple[bytes, int]:
        self._alive()
        return self.inner.read_with_generation(name)

    def flush(self) -> None:
        self._alive()

    def exists(self, name: str) -> bool:
        self._alive()
        return self.inner.exists(name)

    def list(self, prefix: str = "") -> Iterator[str]:
        self._alive()
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self._alive()
        self.inner.delete(name)

    def delete_prefix(self, prefix: str) -> int:
        self._alive()
        return self.inner.delete_prefix(prefix)


@dataclass
class Journal:
    """What the steps did, across the processes of one schedule."""

    started: list[tuple[int, str]] = field(default_factory=list)  # (process, step)
    finished: list[tuple[int, str]] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)  # step → failures left to raise
    process: int = 0
    # In order: ("loop", step, item it began at), ("saved", step, items checkpointed),
    # ("restart", step, 0) for a version bump, ("damage", "", 0) for a damaged checkpoint.
    events: list[tuple[str, str, int]] = field(default_factory=list)
    items_run: list[tuple[int, str, int]] = field(default_factory=list)  # (process, step, item)
    item_failures: dict[tuple[str, int], int] = field(default_factory=dict)
    broken: set[tuple[str, int]] = field(default_factory=set)  # items failing for good
    continued: dict[str, tuple[int, int]] = field(default_factory=dict)  # → (process, items)


@dataclass(frozen=True)
class StepPlan:
    name: str
    dependencies: tuple[str, ...]
    # plain, inplace, inplace_unreturned, inplace_flaky, loop_whole, loop_part, flaky,
    # retype, map (over the params' items, some failing once or twice), continue (one
    # item per call, then Continue(progress=...))
    kind: str
    version: int = 1


def _value(seed: str) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(seed.encode()).digest(), dtype=np.uint8).copy()


# The run's parameters: what a map step maps over.
PARAMS: dict[str, Any] = {"seed": 1, "items": list(range(7))}


def make_step(plan: StepPlan, journal: Journal) -> Any:
    name = plan.name
    if plan.kind == "map":
        return make_item_function(plan, journal)

    # save_progress by parameter (the library passes its own, the function imported here):
    # the oracle runs the same step with a save_progress of its own, outside the library.
    def step(
        context: dict[str, Any], save_progress: Callable[..., bool] = save_progress
    ) -> dict[str, Any] | Continue:
        journal.started.append((journal.process, name))
        inputs = digest(context, without=f"{name}.")
        salt = f"{inputs}/{name}/v{plan.version}"
        out: dict[str, Any] = {}
        if plan.kind == "flaky" and journal.failures.get(name, 0) > 0:
            journal.failures[name] -= 1
            raise RetryableError(f"{name}: transient")
        if plan.kind.startswith("inplace"):
            target = f"{plan.dependencies[0]}.arr" if plan.dependencies else None
            if target in context:
                context[target] += 1  # in place, on an ancestor's array
                if plan.kind != "inplace_unreturned":
                    out[target] = context[target]
            if plan.kind == "inplace_flaky" and journal.failures.get(name, 0) > 0:
                journal.failures[name] -= 1  # fails after changing its input in place
                raise RetryableError(f"{name}: transient, after a change in place")
        if plan.kind == "continue":
            done = list(context.get(f"{name}.items", []))
            if journal.continued.pop(name, None) == (journal.process, len(done)):
                # Called again in the process that returned Continue: its save happened.
                journal.events.append(("saved", name, len(done)))
            journal.events.append(("loop", name, len(done)))
            if len(done) < 5:
                done.append(int(hashlib.sha256(f"{salt}/{len(done)}".encode()).hexdigest()[:6], 16))
                # The runner saves it after the return; a kill there may lose it or not.
                journal.events.append(("maybe_saved", name, len(done)))
                journal.continued[name] = (journal.process, len(done))
                return Continue(progress={f"{name}.items": done})
            out[f"{name}.items"] = done
            salt += str(done)
        if plan.kind in ("loop_whole", "loop_part"):
            done = list(context.get(f"{name}.items", []))
            journal.events.append(("loop", name, len(done)))
            for item in range(len(done), 5):
                done.append(int(hashlib.sha256(f"{salt}/{item}".encode()).hexdigest()[:6], 16))
                saving = (
                    {**context, f"{name}.items": done}
                    if plan.kind == "loop_whole"
                    else {f"{name}.items": done}
                )
                try:
                    kept = save_progress(saving)
                except Killed:  # died while saving: the save may have reached storage or not
                    journal.events.append(("maybe_saved", name, len(done)))
                    raise
                if kept:
                    journal.events.append(("saved", name, len(done)))
            out[f"{name}.items"] = done
            salt += str(done)
        if plan.kind == "retype" and plan.dependencies:
            # A change in type only (0 -> False, 2 -> 2.0): equal by ``==``, not the same.
            target = f"{plan.dependencies[0]}.n"
            if type(context.get(target)) is int:
                out[target] = False if context[target] == 0 else float(context[target])
        out[f"{name}.arr"] = _value(salt)
        out[f"{name}.n"] = int(hashlib.sha256(salt.encode()).hexdigest()[:6], 16) % 3
        journal.finished.append((journal.process, name))
        return out

    step.__name__ = name
    return step


def make_item_function(plan: StepPlan, journal: Journal) -> Any:
    name = plan.name

    def item_function(item: int, context: Any) -> int:
        journal.items_run.append((journal.process, name, item))
        if (name, item) in journal.broken:  # until a fix, in the next process
            raise NonRetryableError(f"{name}[{item}]: broken")
        if journal.item_failures.get((name, item), 0) > 0:
            journal.item_failures[name, item] -= 1
            raise RetryableError(f"{name}[{item}]: transient")
        salt = f"{digest(dict(context))}/{name}/v{plan.version}/{item}"
        return int(hashlib.sha256(salt.encode()).hexdigest()[:6], 16)

    item_function.__name__ = name
    return item_function


def random_plan(rng: random.Random) -> list[StepPlan]:
    count = rng.randint(3, 6)
    plans: list[StepPlan] = []
    kinds = [
        "plain", "inplace", "inplace_unreturned", "inplace_flaky", "loop_whole", "loop_part",
        "flaky", "retype", "map", "continue",
    ]  # fmt: skip
    ancestors: dict[str, set[str]] = {}
    changers: dict[str, list[str]] = {}  # an array → the steps changing it in place
    for i in range(count):
        name = f"s{i}"
        names = [p.name for p in plans]
        if not names:
            deps: tuple[str, ...] = ()
        elif rng.random() < 0.5:
            deps = (names[-1],)  # a chain
        else:
            deps = tuple(sorted(rng.sample(names, rng.randint(1, min(2, len(names))))))
        ancestors[name] = set(deps).union(*(ancestors[d] for d in deps))
        kind = rng.choice(kinds)
        if kind.startswith("inplace") or kind == "retype":
            # Two steps changing one array in place (or retyping one value) must be
            # ordered, or they conflict (a conflict the runner reports; not what this
            # schedule is about).
            others = changers.setdefault(deps[0], []) if deps else []
            if not deps or not all(o in ancestors[name] for o in others):
                kind = "plain"
            else:
                others.append(name)
        plans.append(StepPlan(name, deps, kind))
    return plans


def build(
    plans: list[StepPlan],
    journal: Journal,
    store: Any,
    *,
    workers: int,
    trust: bool,
    strict: bool = False,
    run_id: str = "r",
) -> Pipeline:
    return Pipeline(
        "sim",
        {
            p.name: {
                "function": make_step(p, journal),
                "dependencies": list(p.dependencies),
                "retries": 2,
                "version": str(p.version),
                **({"map": "items"} if p.kind == "map" else {}),
            }
            for p in plans
        },
        storage=store,
        run_id=run_id,
        max_workers=workers,
        retry_backoff=0,
        strict=strict,
        detect_in_place_changes=not trust,
        cleanup_on_success=False,
    )


def reference(plans: list[StepPlan], trust: bool) -> str:
    """The final context's digest of a correct run: the documented semantics interpreted
    in plain Python (:mod:`.oracle`), not the runner under test run without faults."""
    pipeline = build(plans, Journal(), MemoryStore(), workers=1, trust=trust)
    return digest(oracle.final_context(pipeline, PARAMS))


def schedule(seed: int) -> list[str]:
    """Run the schedule of ``seed``; returns the invariants it broke (none, if correct)."""
    rng = random.Random(seed)
    plans = random_plan(rng)
    trust = rng.random() < 0.2
    # A step changing another's value in place without returning it is only seen when
    # every value is checked; with trust, such steps return what they change.
    if trust:
        plans = [
            StepPlan(p.name, p.dependencies, "inplace") if p.kind == "inplace_unreturned" else p
            for p in plans
        ]
    journal = Journal()
    memory = MemoryStore()
    # Finished map items are checkpointed every 1-3 items (100 by default: never, here).
    saved_batch, _map.BATCH_ITEMS = _map.BATCH_ITEMS, rng.randint(1, 3)
    try:
        return _processes(rng, plans, trust, journal, memory)
    finally:
        _map.BATCH_ITEMS = saved_batch


def _processes(
    rng: random.Random, plans: list[StepPlan], trust: bool, journal: Journal, memory: MemoryStore
) -> list[str]:
    """Run and resume the run in new processes until it completes; the problems seen."""
    problems: list[str] = []
    replaced: set[str] = set()  # steps a version bump or a damaged checkpoint restarted
    for process in range(1, 40):
        journal.process = process
        journal.failures = {
            p.name: rng.randint(0, 2) for p in plans if p.kind in ("flaky", "inplace_flaky")
        }
        journal.item_failures = {
            (p.name, item): rng.randint(0, 2)
            for p in plans
            if p.kind == "map"
            for item in PARAMS["items"]
        }
        # An item failing for good fails its map step, and the run; the next process
        # (the cause fixed) resumes it, running the failed items only.
        journal.broken = {
            (p.name, rng.choice(PARAMS["items"]))
            for p in plans
            if p.kind == "map" and rng.random() < 0.1
        }
        bumped = process > 1 and rng.random() < 0.15
        if bumped:  # a new release of one step: it and its descendants start over
            index = rng.randrange(len(plans))
            old = plans[index]
            plans[index] = StepPlan(old.name, old.dependencies, old.kind, old.version + 1)
            for restarted in _descendants(plans, old.name) | {old.name}:
                journal.events.append(("restart", restarted, 0))
                replaced.add(restarted)
        damaged = process > 1 and rng.random() < 0.1 and _damage(memory, rng)
        if damaged:
            journal.events.append(("damage", "", 0))
            replaced.update(p.name for p in plans)
        strict = damaged and rng.random() < 0.5
        store = KillingStore(memory, rng.randint(1, 40) if rng.random() < 0.85 else 0)
        workers = rng.choice([1, 1, 2, 3])
        pipeline = build(plans, journal, store, workers=workers, trust=trust, strict=strict)
        recorded = _recorded_completed(memory, pipeline)
        items_done = _map_items_saved(memory, plans, replaced, trust)
        try:
            result = pipeline.run(PARAMS, resume_from_checkpoint=process > 1)
        except Killed:
            problems += _items_kept(journal, process, items_done)
            continue
        except CheckpointError:
            if not strict:
                problems.append(f"process {process}: a damaged checkpoint raised without strict")
            continue
        skipped = set(result["steps_skipped"])
        ran = {step for p, step in journal.started if p == process}
        if ran & skipped:
            problems.append(f"process {process}: skipped step(s) {sorted(ran & skipped)} ran")
        if not damaged and not recorded <= skipped:
            problems.append(
                f"process {process}: completed step(s) {sorted(recorded - skipped)} ran again"
            )
        never = {s for s in skipped if not any(step == s for _p, step in journal.finished)}
        never -= {p.name for p in plans if p.kind == "map"}  # its items run, not the step
        if never:
            problems.append(f"process {process}: skipped {sorted(never)} that never finished")
        problems += _items_kept(journal, process, items_done)
        broke = {(s, i) for p, s, i in journal.items_run if p == process} & journal.broken
        if result["status"] == "error" and broke:
            continue  # resumed by the next process
        if result["status"] != "completed":
            problems.append(f"process {process}: ended {result['status']}: {result['errors']}")
            return problems
        problems += _progress_kept(journal)
        if digest(result["context"]) != reference(plans, trust):
            problems.append(f"process {process}: final context differs from an uninterrupted run")
        return problems
    return [*problems, "the run never completed in 40 processes"]


def _descendants(plans: list[StepPlan], step: str) -> set[str]:
    found: set[str] = set()
    for plan in plans:  # graph order: a step's dependencies come before it
        if step in plan.dependencies or found & set(plan.dependencies):
            found.add(plan.name)
    return found


def _progress_kept(journal: Journal) -> list[str]:
    """Each loop began where its step's progress was last checkpointed — in this process
    or an earlier one — unless a version bump restarted the step since (then at 0), or a
    checkpoint was damaged since (then from whatever intact one remained). A save cut
    short by the process's death may or may not have reached storage: either is right."""
    problems = []
    expected: dict[str, set[int] | None] = {}  # the items a loop may begin at; None: any
    for kind, step, items in journal.events:
        if kind == "damage":
            expected = dict.fromkeys(expected)  # unknown until the next save
        elif kind in ("restart", "saved"):
            expected[step] = {items}
        elif kind == "maybe_saved":
            before = expected.get(step, {0})
            expected[step] = None if before is None else before | {items}
        else:
            wanted = expected.get(step, {0})
            if wanted is not None and items not in wanted:
                shown = " or ".join(str(w) for w in sorted(wanted))
                problems.append(f"{step} began at item {items}, but item {shown} was saved")
            expected[step] = {items}
    return problems


def _map_items_saved(
    memory: MemoryStore, plans: list[StepPlan], replaced: set[str], trust: bool
) -> dict[str, set[int]]:
    """The items of each map step the latest checkpoint holds as finished: a resume runs
    only the others. Steps a version bump or a damaged checkpoint may have restarted are
    left out (whether they keep their items depends on which checkpoint survived)."""
    try:
        loaded = build(plans, Journal(), memory, workers=1, trust=trust).load_checkpoint()
    except CheckpointError:
        return {}
    if loaded is None:
        return {}
    done: dict[str, set[int]] = {}
    for plan in plans:
        if plan.kind != "map" or plan.name in replaced:
            continue
        prefix = f"{plan.name}.__map_done_"
        for key, batch in loaded.context.items():
            if key.startswith(prefix):
                done.setdefault(plan.name, set()).update(int(i) for i in batch["results"])
    return done


def _items_kept(journal: Journal, process: int, saved: dict[str, set[int]]) -> list[str]:
    """No map item the checkpoint held as finished ran again in ``process``."""
    again = sorted(
        {
            (step, item)
            for p, step, item in journal.items_run
            if p == process and item in saved.get(step, set())
        }
    )
    return [f"process {process}: saved map item(s) {again} ran again"] if again else []


def _recorded_completed(store: MemoryStore, pipeline: Pipeline) -> set[str]:
    """The steps the run's latest checkpoint records as completed, by the same version
    of themselves and of their ancestors as ``pipeline``'s."""
    from resumable.checkpoint._manifest import parse_manifest

    names = [n for n in store.list("") if n.endswith("/.checkpoint.json")]
    if not names:
        return set()
    try:
        manifest, _raw = parse_manifest(store.read(names[0]), names[0])
    except CheckpointError:  # damaged earlier: the run will use an older one, or none
        return set()
    if manifest is None:
        return set()
    current = pipeline.spec.step_fingerprints
    return {s for s in manifest.completed_steps if manifest.step_fingerprints.get(s) == current[s]}


def _damage(store: MemoryStore, rng: random.Random) -> bool:
    names = [n for n in store.list("") if n.endswith(".checkpoint.json") or "/blobs/" in n]
    if not names:
        return False
    name = rng.choice(names)
    data = bytearray(store.read(name))
    data[rng.randrange(len(data))] ^= 0xFF
    store.corrupt(name, bytes(data))
    return True
