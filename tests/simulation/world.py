"""One simulated deployment under one seed: runs, faults, user operations, and a history
the invariants are checked against.

The code under test is the real one — ``resumable.serverless._worker.handle_step``,
``resumable.serverless._control`` (start, cancel, resume, dead letters, the watchdog) — on the
simulated services, each function instance an engine of its own (its own worker id)
sharing the services, as Cloud Run instances share Firestore, Storage and Pub/Sub.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from resumable.definition._spec import delivery_seconds
from resumable.errors import BadMessageError, RunControlError
from resumable.serverless import transitions
from resumable.serverless._control import cancel_run, get_run, record_dead_letter, resume_run
from resumable.serverless._control import start_run as start_run_now
from resumable.serverless._engine import Engine, PipelineRegistry
from resumable.serverless._messages import StartMessage, parse_step
from resumable.serverless._run_state import CompareAndSetStore, RunState
from resumable.serverless._settings import Settings
from resumable.serverless._worker import handle_step

from . import pipelines as sim_pipelines
from .scheduler import Process, Sim, SimRuntime
from .services import Faults, SimDocuments, SimMapStore, SimObjectStore, SimPubSub

LEASE = 60.0
HEARTBEAT = 15.0
GRACE = 120.0
HORIZON = 48 * 3600.0  # every run must have ended within this much virtual time


@dataclass
class UserOp:
    time: float
    kind: str  # cancel, resume, resume_from, start_again
    run: str
    step: str | None = None
    outcome: str = ""  # done, refused: ..., crashed
    status_before: str = ""
    generation: int | None = None  # the run generation a resume started
    reset: list[str] = field(default_factory=list)  # the steps it rolled back


@dataclass
class RunPlan:
    run_id: str
    pipeline: str
    params: dict[str, Any]


@dataclass
class World:
    seed: int
    sim: Sim
    faults: Faults
    runs: list[RunPlan]
    documents: SimDocuments
    store: SimObjectStore
    pubsub: SimPubSub
    registry: PipelineRegistry
    settings: Settings
    ops: list[UserOp] = field(default_factory=list)
    process_of: dict[str, tuple[str, str]] = field(default_factory=dict)  # process → (run, step)
    generation_of: dict[str, int | None] = field(default_factory=dict)  # process → message's
    outcomes: dict[str, str] = field(default_factory=dict)  # process → how it answered
    # What the steps reported (a copy, taken at the end: the recorder is reused).
    executions: list[sim_pipelines.Execution] = field(default_factory=list)
    saves: list[tuple[float, str, str, int]] = field(default_factory=list)
    watchdog_every: float = 120.0
    last_op: float = 0.0
    runstates: CompareAndSetStore | None = None
    maps: SimMapStore | None = None

    def engine(self) -> Engine:
        """A new function instance: its own worker id, the shared services."""
        runtime = SimRuntime(self.sim)
        assert self.runstates is not None and self.maps is not None
        return Engine(
            settings=self.settings,
            registry=self.registry,
            runs=self.runstates,
            store=self.store,
            publisher=self.pubsub,
            maps=self.maps,
            runtime=runtime,
        )

    def state(self, run_id: str) -> RunState | None:
        plan = next(p for p in self.runs if p.run_id == run_id)
        return self.documents.read_quietly(f"default~{plan.pipeline}~{run_id}")

    def all_finished(self) -> bool:
        states = [self.state(p.run_id) for p in self.runs]
        return all(s is not None and s.finished for s in states)


def build_world(seed: int, *, only: RunPlan | None = None) -> World:
    """The world of ``seed``; ``only``: just that run, with no faults and no operations
    (the reference an uninterrupted run gives)."""
    sim = Sim(seed)
    rng = sim.rng
    _forget_instance_caches()
    intensity = 0.0 if only else rng.choice([0.0, 0.5, 1.0, 2.0])
    faults = Faults(
        storage_error=0.01 * intensity,
        lost_answer=0.01 * intensity,
        slow_io=0.0 if only else rng.choice([0.0, 0.0, 0.02]),
        document_conflict=0.03 * intensity,
        document_error=0.005 * intensity,
        duplicate=0.0 if only else rng.choice([0.0, 0.1, 0.3, 0.6]),
        max_delay=rng.choice([0.5, 2.0, 30.0]),
        # Some deployments move large values slowly: an 80 kB blob takes longer than a lease.
        seconds_per_mb=0.0 if only else rng.choice([0.0, 0.0, 0.0, 1200.0]),
        # Pushes lost on the way: messages run out of delivery attempts, dead letters follow.
        unreachable=0.0 if only else rng.choice([0.0, 0.0, 0.4, 0.7]),
    )
    sim.crash_rate = rng.choice([0.0, 0.0, 0.003, 0.01]) * (1 if intensity else 0)
    sim.pause_rate = rng.choice([0.0, 0.0, 0.002, 0.005]) * (1 if intensity else 0)
    faults.item_read_pause = 0.0 if only else rng.choice([0.0, 0.0, 0.0, 0.05, 0.2])
    names = sorted(sim_pipelines.PIPELINES)
    runs = (
        [only]
        if only
        else [
            RunPlan(f"run{n}", rng.choice(names), {"run": f"run{n}", "seed": rng.randrange(1000)})
            for n in range(rng.choice([1, 1, 2, 3]))
        ]
    )
    documents = SimDocuments(sim, faults)
    store = SimObjectStore(sim, faults)
    # 5 is the least Pub/Sub allows: dead letters then happen in faulty schedules.
    pubsub = SimPubSub(sim, faults, max_delivery_attempts=rng.choice([5, 10, 15]))
    settings = Settings(
        project="sim",
        storage="memory://sim",
        lease_seconds=LEASE,
        heartbeat_seconds=HEARTBEAT,
        watchdog_grace_seconds=GRACE,
    )
    registry = PipelineRegistry(pipelines=sim_pipelines.PIPELINES.values())
    world = World(seed, sim, faults, runs, documents, store, pubsub, registry, settings)
    world.runstates = CompareAndSetStore(documents, runtime=SimRuntime(sim))
    world.maps = SimMapStore(sim, faults)
    world.watchdog_every = rng.choice([60.0, 300.0])
    _wire(world)
    if only is None:
        _plan_operations(world)
    return world


def _forget_instance_caches() -> None:
    """Function instances cache decoded values by content (a map's input context, its item
    pages); one world's instances must not see another's, or a seed would not replay."""
    from resumable.serverless import _map_items

    for cache in (_map_items._CONTEXTS, _map_items._PAGES):
        cache._values.clear()


def _wire(world: World) -> None:
    sim = world.sim
    recorder = sim_pipelines.RECORDER
    recorder.executions = []
    recorder.saves = []
    recorder.failures_left = {}
    recorder.now = lambda: sim.now
    recorder.process = lambda: sim.current.process.name if sim.current else "?"
    recorder.work = sim.sleep

    def step_handler(data: bytes, attributes: dict[str, str], process: Process) -> bool:
        message = parse_step(data)
        world.process_of[process.name] = (message.run_id, message.step)
        world.generation_of[process.name] = message.generation
        step = sim_pipelines.PIPELINES[message.pipeline].spec.steps[message.step]
        # Cloud Run stops a request at its function's timeout, whatever it is doing.
        sim.at(sim.now + delivery_seconds(step), lambda: sim.kill(process, "time limit"))
        outcome = handle_step(world.engine(), message)
        world.outcomes[process.name] = outcome.reason
        return outcome.ack

    def dead_letter_handler(data: bytes, attributes: dict[str, str], process: Process) -> bool:
        message = parse_step(data)
        world.process_of[process.name] = (message.run_id, message.step)
        world.generation_of[process.name] = message.generation
        count = attributes.get("CloudPubSubDeadLetterSourceDeliveryCount")
        record_dead_letter(world.engine(), message, count)
        return True

    def message_generation() -> int | None:
        actor = sim.current
        return world.generation_of.get(actor.process.name) if actor else None

    world.documents.message_generation = message_generation
    for pipeline in sim_pipelines.PIPELINES.values():
        for step in pipeline.spec.order:
            world.pubsub.handlers[f"resumable-{pipeline.pipeline_name}-{step}"] = step_handler
    world.pubsub.dead_letter_handler = dead_letter_handler

    def start(plan: RunPlan) -> None:
        process = Process(f"start-{plan.run_id}#{sim.rng.randrange(10**6)}", crashable=True)

        acked: list[bool] = []

        def run() -> None:
            message = StartMessage(pipeline=plan.pipeline, params=plan.params, run_id=plan.run_id)
            start_run_now(world.engine(), message)
            acked.append(True)

        def retry_if_crashed() -> None:
            if not acked:
                start(plan)  # Pub/Sub redelivers a start message that was not acked

        sim.spawn(run, process=process, name=process.name)
        sim.at(sim.now + 30.0, retry_if_crashed)

    for plan in world.runs:
        sim.at(sim.now + sim.rng.uniform(0, 5), functools.partial(start, plan))

    def watchdog() -> None:
        from resumable.serverless._control import watchdog_sweep

        process = Process(f"watchdog#{int(sim.now)}")
        sim.spawn(lambda: watchdog_sweep(world.engine()), process=process, name=process.name)
        if not world.all_finished() or world.pubsub.in_flight or sim.now < world.last_op:
            sim.at(sim.now + world.watchdog_every, watchdog)

    sim.at(sim.now + world.watchdog_every, watchdog)


def _plan_operations(world: World) -> None:
    """Users cancel, resume, roll back and start runs again, at random moments; and some
    resume a run soon after it failed."""
    sim = world.sim
    rng = sim.rng

    def resume_after_failure(run_id: str) -> None:
        plan = next(p for p in world.runs if p.run_id == run_id)
        if rng.random() < 0.8:
            op = UserOp(sim.now + rng.uniform(30, 600), "resume", run_id)
            world.ops.append(op)
            world.last_op = max(world.last_op, op.time)
            sim.at(op.time, functools.partial(_operate, world, op, plan))

    world.documents.on_failed = resume_after_failure
    for plan in world.runs:
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            kind = rng.choice(["cancel", "resume", "resume", "resume_from", "start_again"])
            step = None
            if kind == "resume_from":
                step = rng.choice(sim_pipelines.PIPELINES[plan.pipeline].spec.order)
            op = UserOp(sim.now + rng.uniform(1, 400), kind, plan.run_id, step)
            planned = [op]
            if kind == "cancel" and rng.random() < 0.5:  # a user who cancels, then resumes
                planned.append(UserOp(op.time + rng.uniform(30, 300), "resume", plan.run_id))
            for each in planned:
                world.ops.append(each)
                world.last_op = max(world.last_op, each.time)
                sim.at(each.time, functools.partial(_operate, world, each, plan))


def _operate(world: World, op: UserOp, plan: RunPlan) -> None:
    sim = world.sim
    process = Process(f"user-{op.kind}-{plan.run_id}#{int(sim.now)}")

    def run() -> None:
        engine = world.engine()
        op.outcome = "crashed"
        if op.kind == "start_again":
            message = StartMessage(pipeline=plan.pipeline, params=plan.params, run_id=plan.run_id)
            try:
                start_run_now(engine, message)
                op.outcome = "done"
            except BadMessageError as exc:
                op.outcome = f"refused: {exc.reason}"
            return
        try:
            state = get_run(engine, plan.run_id, pipeline=plan.pipeline)
        except RunControlError as exc:
            op.outcome = f"refused: {exc}"
            return
        op.status_before = state.status
        try:
            if op.kind == "cancel":
                after = cancel_run(engine, state)
                op.status_before = (
                    after.status if after.finished and state.finished else state.status
                )
            else:
                resumed, _published = resume_run(engine, state, from_step=op.step)
                op.generation = resumed.generation
                _replay_an_old_dead_letter(world, plan.run_id)
                if op.step is not None:
                    spec = sim_pipelines.PIPELINES[plan.pipeline].spec
                    op.reset = [op.step, *sorted(spec.descendants(op.step))]
            op.outcome = "done"
        except RunControlError as exc:
            op.outcome = f"refused: {exc}"

    sim.spawn(run, process=process, name=process.name)


def _replay_an_old_dead_letter(world: World, run_id: str) -> None:
    """Sometimes a dead letter from before the resume arrives (again) just after it."""
    sim = world.sim
    old = [d for d in world.pubsub.dead_letters if f'"run_id":"{run_id}"'.encode() in d[0]]
    if old and sim.rng.random() < 0.5:
        data, attributes = sim.rng.choice(old)
        sim.at(
            sim.now + sim.rng.uniform(0.1, 30.0),
            lambda: world.pubsub.push_dead_letter(data, attributes),
        )


def simulate(seed: int, *, only: RunPlan | None = None) -> World:
    """Run the schedule of ``seed`` to its end (see :func:`build_world`)."""
    with quiet_library_logs(), seeded_randomness(seed):  # thousands of schedules
        return _simulate(seed, only)


@contextlib.contextmanager
def seeded_randomness(seed: int) -> Iterator[None]:
    """The library's own randomness drawn from the seed: the jitter of its retry backoffs
    (``random``) and the ids it makes (``uuid4``: attempt owners, object names, listed in
    name order). Without this a seed does not replay its schedule: a jittered backoff
    moves the virtual clock, and with it which actor runs when."""
    ids = random.Random(f"uuid/{seed}")
    state = random.getstate()
    random.seed(f"jitter/{seed}")
    original = uuid.uuid4
    uuid.uuid4 = lambda: uuid.UUID(int=ids.getrandbits(128), version=4)  # type: ignore[assignment]
    try:
        yield
    finally:
        uuid.uuid4 = original  # type: ignore[assignment]
        random.setstate(state)


@contextlib.contextmanager
def quiet_library_logs() -> Iterator[None]:
    """The library's logs off for a while (restored after: later tests read them)."""
    logger = logging.getLogger("resumable")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _simulate(seed: int, only: RunPlan | None) -> World:
    world = build_world(seed, only=only)
    sim = world.sim

    def quiet() -> bool:
        return sim.now > world.last_op and world.all_finished() and not world.pubsub.in_flight

    try:
        sim.run(until=sim.now + HORIZON, stop=quiet)
    finally:
        sim.shutdown()
    world.executions = list(sim_pipelines.RECORDER.executions)
    world.saves = list(sim_pipelines.RECORDER.saves)
    return world


__all__ = ["World", "build_world", "simulate", "transitions"]
