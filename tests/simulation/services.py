"""In-memory Cloud Storage, Firestore and Pub/Sub for the simulation, faithful where the
step protocol depends on them, and adversarial within what the real services allow.

- Storage: generation preconditions; latency, sometimes longer than a lease; transient
  errors before a write and *after* it (the write applied, its answer lost).
- Firestore: compare-and-set on a version, with the read and the conditional write of
  every mutation being separate yield points (so writers interleave); 1 MiB documents;
  injected contention and transient errors.
- Pub/Sub: at-least-once push with random delays (so reordering), duplicates,
  redelivery after a failed answer (with backoff) or after the ack deadline (while the
  first delivery still runs), dead-lettering after the maximum delivery attempts.

Every I/O call is a yield point of the scheduler, where the calling process may crash.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from resumable.serverless._map_state import MemoryMapStore
from resumable.serverless._run_state import MemoryDocuments, RunState
from resumable.status import StepStatus
from resumable.storage.base import Buffer, WriteStats
from resumable.storage.memory import MemoryStore

from .scheduler import InjectedFault, Process, Sim


@dataclass
class Faults:
    """Rates of what the services do to their callers, per call."""

    storage_error: float = 0.0  # a transient error instead of the call
    lost_answer: float = 0.0  # a write applied, then a transient error
    slow_io: float = 0.0  # a call that takes longer than a lease
    slow_seconds: float = 90.0
    document_conflict: float = 0.0  # a conditional write refused as if another won
    document_error: float = 0.0  # a transient error on a read or write of a document
    duplicate: float = 0.0  # a published message delivered twice
    max_delay: float = 2.0  # publish → push delay, uniform in [0.01, max_delay]
    seconds_per_mb: float = 0.0  # storage transfer time: large values on a slow link
    unreachable: float = 0.0  # a push that never reaches the function (counts as a nack)
    # A process frozen at a read of an item document — among them the read that starts an
    # item's finish, after its heartbeat last looked: the stale item worker fencing is for.
    item_read_pause: float = 0.0


def _latency(sim: Sim, faults: Faults) -> None:
    if faults.slow_io and sim.rng.random() < faults.slow_io:
        sim.sleep(faults.slow_seconds * (0.5 + sim.rng.random()))
    else:
        sim.sleep(sim.rng.uniform(0.001, 0.05))


@dataclass
class IoRecord:
    time: float
    process: str
    operation: str
    name: str


class SimObjectStore:
    """A :class:`~resumable.storage.memory.MemoryStore` behind yield points and faults.
    Its log tells which process read or wrote which object, and when."""

    background_io = False  # every call stays on the calling actor: the scheduler orders it

    def __init__(self, sim: Sim, faults: Faults) -> None:
        self.sim = sim
        self.faults = faults
        self.inner = MemoryStore("memory://sim")
        self.url = self.inner.url
        self.stats: WriteStats = self.inner.stats
        self.log: list[IoRecord] = []
        self._written = 0

    def _call(self, operation: str, name: str, *, fallible: bool = True) -> None:
        sim = self.sim
        sim.yield_point(f"storage {operation} {name}")
        _latency(sim, self.faults)
        if fallible and self.faults.storage_error and sim.rng.random() < self.faults.storage_error:
            self._fault(f"storage unavailable ({operation} {name})")
        actor = sim.current
        self.log.append(IoRecord(sim.now, actor.process.name if actor else "?", operation, name))

    def _fault(self, message: str) -> None:
        actor = self.sim.current
        self.sim.crashes.append((self.sim.now, actor.process.name if actor else "?", message))
        raise InjectedFault(message)

    def read(self, name: str) -> bytes:
        self._call("read", name)
        return self.inner.read(name)

    def read_buffer(self, name: str) -> bytearray:
        self._call("read", name)
        data = self.inner.read_buffer(name)
        self._transfer(len(data))
        return data

    def _transfer(self, size: int) -> None:
        if self.faults.seconds_per_mb:
            self.sim.sleep(size / 1e6 * self.faults.seconds_per_mb)

    def read_with_generation(self, name: str) -> tuple[bytes, int]:
        self._call("read", name)
        return self.inner.read_with_generation(name)

    def write(
        self, name: str, data: Buffer | Sequence[Buffer], *, if_generation_match: int | None = None
    ) -> int:
        self._call("write", name)
        generation = self.inner.write(name, data, if_generation_match=if_generation_match)
        self._transfer(self.inner.stats.bytes_written - self._written)
        self._written = self.inner.stats.bytes_written
        if self.faults.lost_answer and self.sim.rng.random() < self.faults.lost_answer:
            self._fault(f"answer lost after writing {name}")
        return generation

    def flush(self) -> None:
        pass

    def exists(self, name: str) -> bool:
        self._call("exists", name)
        return self.inner.exists(name)

    def list(self, prefix: str = "") -> Iterator[str]:
        self._call("list", prefix)
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self._call("delete", name)
        self.inner.delete(name)

    def delete_prefix(self, prefix: str) -> int:
        self._call("delete", prefix)
        return self.inner.delete_prefix(prefix)


@dataclass
class CommitEvent:
    time: float
    run: str
    step: str
    generation: int
    manifest: str
    lease_attempt: int  # the attempt that held the step's lease when it was committed


@dataclass
class ResetEvent:
    time: float
    run: str
    steps: list[str]
    generation: int


class SimDocuments(MemoryDocuments):
    """Run documents; records every step commit and every roll-back as it is written."""

    def __init__(self, sim: Sim, faults: Faults) -> None:
        super().__init__(on_io=self._io_hook)
        self.sim = sim
        self.faults = faults
        self.commits: list[CommitEvent] = []
        self.resets: list[ResetEvent] = []
        self.max_size = 0
        # The run generation of the message the calling process handles (None: not a
        # message handler); a write on behalf of another generation's message is recorded.
        self.message_generation: Callable[[], int | None] = lambda: None
        self.stale_writes: list[str] = []
        self.on_failed: Callable[[str], None] = lambda run_id: None  # a run just failed

    def _io_hook(self, operation: str, doc_id: str) -> None:
        sim = self.sim
        sim.yield_point(f"firestore {operation} {doc_id}")
        sim.sleep(sim.rng.uniform(0.002, 0.03))
        failing = operation in ("read", "write") and self.faults.document_error
        if failing and sim.rng.random() < self.faults.document_error:
            actor = sim.current
            sim.crashes.append((sim.now, actor.process.name if actor else "?", "firestore"))
            raise InjectedFault(f"firestore unavailable ({operation})")

    def write_if(self, doc_id: str, state: RunState, version: Any) -> bool:
        if self.faults.document_conflict and self.sim.rng.random() < self.faults.document_conflict:
            self._io_hook("write", doc_id)
            actor = self.sim.current
            self.sim.crashes.append(
                (self.sim.now, actor.process.name if actor else "?", "firestore conflict")
            )
            return False
        before = self.read_quietly(doc_id)
        if not super().write_if(doc_id, state, version):
            return False
        self._observe(before, state)
        return True

    def read_quietly(self, doc_id: str) -> RunState | None:
        stored = self._docs.get(doc_id)
        return RunState.model_validate(stored[0]) if stored is not None else None

    def _observe(self, before: RunState | None, after: RunState) -> None:
        from resumable.serverless._run_state import document_size

        self.max_size = max(self.max_size, document_size(after))
        if before is None:
            return
        if after.status == "error" and before.status != "error":
            self.on_failed(after.run_id)
        generation = self.message_generation()
        if generation is not None and generation != before.generation:
            actor = self.sim.current
            self.stale_writes.append(
                f"{actor.process.name if actor else '?'} (a message of generation {generation}) "
                f"changed {after.run_id} at generation {before.generation}"
            )
        for name, record in after.steps.items():
            old = before.steps[name]
            if record.status == StepStatus.COMPLETED and old.status != StepStatus.COMPLETED:
                self.commits.append(
                    CommitEvent(
                        self.sim.now,
                        after.run_id,
                        name,
                        after.generation,
                        record.manifest or "",
                        old.attempt,
                    )
                )
        if after.generation > before.generation:
            rolled = [
                n
                for n, r in after.steps.items()
                if (before.steps[n].manifest and not r.manifest)
                or (before.steps[n].progress_manifest and not r.progress_manifest)
            ]
            self.resets.append(ResetEvent(self.sim.now, after.run_id, rolled, after.generation))


@dataclass
class Delivery:
    """One message of one subscription, from publish to ack or dead letter."""

    id: int
    topic: str
    data: bytes
    attributes: dict[str, str]
    attempts: int = 0
    acked: bool = False
    dead: bool = False
    outcomes: list[str] = field(default_factory=list)


Handler = Callable[[bytes, dict[str, str], Process], Any]  # returns whether to ack


class SimPubSub:
    """Topics with one push subscription each, delivering to handlers the world provides."""

    def __init__(
        self,
        sim: Sim,
        faults: Faults,
        *,
        ack_deadline: float = 600.0,
        min_backoff: float = 10.0,
        max_backoff: float = 600.0,
        max_delivery_attempts: int = 10,
    ) -> None:
        self.sim = sim
        self.faults = faults
        self.ack_deadline = ack_deadline
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.max_delivery_attempts = max_delivery_attempts
        self.handlers: dict[str, Handler] = {}
        self.dead_letter_handler: Handler | None = None
        self.deliveries: list[Delivery] = []
        self.in_flight = 0
        self._ids = itertools.count(1)
        self._processes = itertools.count(1)
        self.delivered_by_topic: dict[str, int] = defaultdict(int)
        self.dead_letters: list[tuple[bytes, dict[str, str]]] = []  # every one handled

    # -- the Publisher interface ------------------------------------------------------------

    def publish(self, topic: str, data: bytes, attributes: dict[str, str] | None = None) -> str:
        sim = self.sim
        sim.yield_point(f"publish {topic}")
        sim.sleep(sim.rng.uniform(0.001, 0.02))
        delivery = Delivery(next(self._ids), topic, data, dict(attributes or {}))
        self.deliveries.append(delivery)
        self._schedule(delivery, sim.rng.uniform(0.01, self.faults.max_delay))
        if self.faults.duplicate and sim.rng.random() < self.faults.duplicate:
            copy = Delivery(next(self._ids), topic, data, dict(attributes or {}))
            self.deliveries.append(copy)
            self._schedule(copy, sim.rng.uniform(0.01, 10 * self.faults.max_delay))
        return str(delivery.id)

    def publish_many(self, topic: str, messages: list[tuple[bytes, dict[str, str]]]) -> list[str]:
        """A batch: each message on its own (a crash may cut the batch short)."""
        return [self.publish(topic, data, attributes) for data, attributes in messages]

    # -- delivery ---------------------------------------------------------------------------

    def _schedule(self, delivery: Delivery, delay: float) -> None:
        self.in_flight += 1
        self.sim.at(self.sim.now + delay, lambda: self._deliver(delivery))

    def _backoff(self, delivery: Delivery) -> float:
        return min(self.max_backoff, self.min_backoff * 2 ** max(delivery.attempts - 1, 0)) * (
            0.5 + self.sim.rng.random()
        )

    def _deliver(self, delivery: Delivery) -> None:
        self.in_flight -= 1
        if delivery.acked or delivery.dead:
            return
        if delivery.attempts >= self.max_delivery_attempts:
            delivery.dead = True
            self._dead_letter(delivery)
            return
        delivery.attempts += 1
        if self.faults.unreachable and self.sim.rng.random() < self.faults.unreachable:
            delivery.outcomes.append(f"{delivery.attempts}: unreachable")
            self._schedule(delivery, self._backoff(delivery))
            return
        handler = self.handlers[delivery.topic]
        process = Process(f"{delivery.topic}#{next(self._processes)}")
        answered = {"done": False}
        attempt = delivery.attempts

        def push() -> None:
            ack = False
            try:
                ack = bool(handler(delivery.data, delivery.attributes, process))
            finally:
                answered["done"] = True
                self._answered(delivery, attempt, ack if process.alive else None)

        def deadline() -> None:
            # No answer within the ack deadline: Pub/Sub redelivers while it still runs.
            if not answered["done"] and not delivery.acked:
                delivery.outcomes.append(f"{attempt}: deadline")
                self._schedule(delivery, self._backoff(delivery))

        self.sim.spawn(push, process=process, name=process.name)
        self.sim.at(self.sim.now + self.ack_deadline, deadline)

    def _answered(self, delivery: Delivery, attempt: int, ack: bool | None) -> None:
        """``ack``: True 2xx, False non-2xx, None the connection died (a crash)."""
        delivery.outcomes.append(
            f"{attempt}: {'ack' if ack else 'crash' if ack is None else 'nack'}"
        )
        if ack:
            delivery.acked = True
        elif not delivery.acked and not delivery.dead:
            self._schedule(delivery, self._backoff(delivery))

    def _dead_letter(self, delivery: Delivery) -> None:
        attributes = {
            **delivery.attributes,
            "CloudPubSubDeadLetterSourceDeliveryCount": str(delivery.attempts),
        }
        self.dead_letters.append((delivery.data, attributes))
        self.push_dead_letter(delivery.data, attributes)

    def push_dead_letter(self, data: bytes, attributes: dict[str, str]) -> None:
        """Deliver a dead letter to its function (again, for a late copy)."""
        handler = self.dead_letter_handler
        if handler is None:
            return
        tries = {"n": 0}

        def push() -> None:
            process = Process(f"dead-letter#{next(self._processes)}")
            tries["n"] += 1

            def run() -> None:
                ok = False
                try:
                    ok = bool(handler(data, attributes, process))
                finally:
                    if not (ok and process.alive) and tries["n"] < 20:
                        self.in_flight += 1
                        self.sim.at(self.sim.now + self.min_backoff, done_retry)

            self.sim.spawn(run, process=process, name=process.name)

        def done_retry() -> None:
            self.in_flight -= 1
            push()

        # Dead letters may arrive long after, and twice (at least once, like any message).
        rng = self.sim.rng
        first = self.sim.now + rng.choice([rng.uniform(0.1, 5.0), rng.uniform(0.1, 900.0)])
        arrivals = [first]
        if rng.random() < 0.5:  # dead letters are pushed at least once, like any message
            arrivals.append(first + rng.uniform(300.0, 1500.0))  # long after: a resume between
        for when in arrivals:
            self.in_flight += 1
            self.sim.at(when, done_retry)


class SimMapStore(MemoryMapStore):
    """Map steps' item documents (``MemoryMapStore``) behind yield points and faults: a
    transient error on any call, a conflict on an item write as if another worker won,
    and an item write applied whose answer is lost."""

    def __init__(self, sim: Sim, faults: Faults) -> None:
        super().__init__(on_io=self._io_hook)
        self.sim = sim
        self.faults = faults

    def _fault(self, message: str) -> None:
        actor = self.sim.current
        self.sim.crashes.append((self.sim.now, actor.process.name if actor else "?", message))
        raise InjectedFault(message)

    def _io_hook(self, operation: str, name: str) -> None:
        sim = self.sim
        item_read = operation == "read" and "/items/" in name
        sim.yield_point(
            f"firestore {operation} {name}",
            pause_rate=self.faults.item_read_pause if item_read else 0.0,
        )
        sim.sleep(sim.rng.uniform(0.002, 0.03))
        if self.faults.document_error and sim.rng.random() < self.faults.document_error:
            self._fault(f"firestore unavailable ({operation} {name})")

    def put_item(self, key: Any, item: Any, version: Any, change: Any = None) -> bool:
        sim = self.sim
        if self.faults.document_conflict and sim.rng.random() < self.faults.document_conflict:
            self._io_hook("write", f"{key.run}/maps/{key.map_id}/items/{key.index}")
            return False
        written = super().put_item(key, item, version, change)
        if written and self.faults.lost_answer and sim.rng.random() < self.faults.lost_answer:
            self._fault(f"firestore answer lost (item {key.index} written)")
        return written
