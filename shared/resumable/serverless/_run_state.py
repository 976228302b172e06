"""The run document: one per run, the single source of truth of a serverless run's state.

Every change is a compare-and-set of the whole document (:meth:`CompareAndSetStore.mutate`):
read it with its version, compute the new state with a pure transition
(``resumable.serverless.transitions``), write it only if the version is unchanged. On Firestore the
version is the document's ``update_time`` and the write carries a ``last_update_time``
precondition — an atomic read-modify-write on one document that, unlike a pessimistic
transaction, never holds a lock (the emulator stalls for seconds under lock contention;
see local-cloud.md). A lost race re-reads and re-applies the transition; if it keeps
losing, the caller answers "retry later" and Pub/Sub redelivers.

The compare-and-set loop is written once, over a small :class:`DocumentBackend`
interface; Firestore and the in-memory backend (unit tests, the simulation) differ only in
how they read and conditionally write a document.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from resumable._defaults import DEFAULT_TENANT
from resumable.errors import ContentionError, RunDocumentError, RunNotFoundError
from resumable.serverless._runtime import SYSTEM, Runtime
from resumable.status import RunStatus, StepStatus

T = TypeVar("T")

MAX_REJECTED = 20  # reasons of rejected messages kept on a run document
MAX_DOCUMENT_BYTES = 1024 * 1024  # Firestore's limit on one document


MAX_HISTORY = 20  # attempts of a step kept on the run document (the latest ones)


class AttemptSpan(BaseModel):
    """One attempt of a step, for the timeline: when it ran and how it ended."""

    model_config = ConfigDict(extra="allow")

    attempt: int
    started_at: float
    ended_at: float | None = None
    outcome: str | None = None  # committed, failed, retried, lost its lease, ...


class StepState(BaseModel):
    """A step's row in the run document."""

    model_config = ConfigDict(extra="allow")

    status: str = StepStatus.NOT_STARTED
    attempt: int = 0  # the fencing token: +1 at every claim, never reset
    attempt_base: int = 0  # attempts before the last resume (the limit counts from here)
    failures: int = 0  # attempts that ended with an exception
    commits: int = 0  # successful commits over the run's life (once per generation)
    lease_owner: str | None = None
    lease_expires: float | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    manifest: str | None = None
    progress_manifest: str | None = None  # progress saved mid-step, where the step resumes
    continuations: int = 0  # deliveries that ended asking to be continued (Continue())
    hard_limit: float | None = None  # when the running attempt's function times out
    progress_at_claim: str | None = None  # its progress when it was claimed
    checkpoint_bytes: int | None = None
    output_keys: list[str] = Field(default_factory=list)
    error: str | None = None
    # Map steps: the map being run (its items live in documents of their own) and its
    # item counts ("total", "completed", "failed") when the driver last looked.
    map_id: str | None = None
    items: dict[str, int] | None = None
    rollbacks: int = 0  # times resume --from-step rolled the step back
    history: list[AttemptSpan] = Field(default_factory=list)  # the latest MAX_HISTORY


class RunState(BaseModel):
    """The run document."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    pipeline: str
    tenant_id: str = DEFAULT_TENANT
    status: str = RunStatus.RUNNING
    fingerprint: str
    step_fingerprints: dict[str, str] = Field(default_factory=dict)
    params_manifest: str
    params_hash: str
    created_at: float
    updated_at: float
    finished_at: float | None = None
    cancel_requested: bool = False
    error: str | None = None
    steps: dict[str, StepState]
    rejected_messages: list[str] = Field(default_factory=list)  # why bad messages were acked
    revision: int = 0
    # +1 at every resume: step messages carry it, so a message or dead letter sent before
    # a resume is recognised as stale and changes nothing.
    generation: int = 0
    # Set before a finished run's checkpoints are deleted: from then on nothing may roll
    # the run back onto them, and a deletion that failed half way is tried again.
    deleting_files: bool = False
    # Set once every checkpoint object of the run is gone: the retention sweep skips it.
    files_deleted: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def step_counts(self) -> dict[str, int]:
        """Completed and total steps, stored beside ``steps`` (derived on every write,
        never read back) so that a list of runs can show progress without reading them."""
        completed = sum(1 for r in self.steps.values() if r.status == StepStatus.COMPLETED)
        return {"completed": completed, "total": len(self.steps)}

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data: Any) -> Any:
        if isinstance(data, dict) and "step_counts" in data:
            data = {k: v for k, v in data.items() if k != "step_counts"}
        return data

    @property
    def checkpoints_gone(self) -> bool:
        """The run's checkpoints are deleted or being deleted: it cannot resume from them."""
        return self.deleting_files or self.files_deleted

    @property
    def finished(self) -> bool:
        return RunStatus(self.status).finished


def document_id(tenant_id: str, pipeline: str, run_id: str) -> str:
    """Ids are validated (no ``~``), so ``~`` separates them unambiguously."""
    return f"{tenant_id}~{pipeline}~{run_id}"


def document_size(state: RunState) -> int:
    """The document's size as JSON: close to what Firestore counts against its 1 MiB."""
    return len(orjson.dumps(state.model_dump()))


@dataclass(frozen=True)
class Decision(Generic[T]):
    """What a transition decided: its ``result``, and the new document (``None``: keep)."""

    result: T
    state: RunState | None = None


class RunStateStore(Protocol):
    """Where run documents live (Firestore in production)."""

    def get(self, doc_id: str) -> RunState | None: ...

    def create(self, doc_id: str, state: RunState) -> bool:
        """Create the document; ``False`` if it already exists (nothing is written)."""
        ...

    def mutate(
        self, doc_id: str, transition: Callable[[RunState], Decision[T]]
    ) -> tuple[RunState, T]:
        """Apply ``transition`` atomically; returns the document as it now is and the result.

        ``transition`` may run several times, on fresh reads, and must not change its
        argument. Raises :class:`RunNotFoundError`, :class:`ContentionError` or
        :class:`RunDocumentError`.
        """
        ...

    def query(self, *, status: str | None = None, limit: int = 100) -> list[RunState]:
        """The newest ``limit`` runs (with ``status``), newest first."""
        ...

    def scan(self, *, status: str, page_size: int = 200) -> Iterator[RunState]:
        """Every run with ``status``, oldest first, read page by page."""
        ...

    def finished_before(self, cutoff: float, *, limit: int = 200) -> list[RunState]:
        """Up to ``limit`` finished runs whose checkpoints are still stored, that finished
        before ``cutoff``, the oldest first."""
        ...

    def delete(self, doc_id: str) -> None: ...


class DocumentBackend(Protocol):
    """Reads and conditional writes of run documents; ``version`` is opaque to callers."""

    def read(self, doc_id: str) -> tuple[RunState, Any] | None: ...

    def write_if(self, doc_id: str, state: RunState, version: Any) -> bool:
        """Write ``state`` if the document is still at ``version``; ``False`` if it changed
        or vanished. Raises :class:`RunDocumentError` for a document the service refuses."""
        ...

    def create(self, doc_id: str, state: RunState) -> bool: ...

    def delete(self, doc_id: str) -> None: ...

    def page(
        self, *, status: str | None, limit: int, newest_first: bool, after: RunState | None
    ) -> list[RunState]:
        """Up to ``limit`` runs ordered by ``created_at``, starting after ``after``."""
        ...

    def finished_before(self, cutoff: float, *, limit: int) -> list[RunState]: ...


def backoff_delays(attempts: int, base: float = 0.02, cap: float = 1.0) -> list[float]:
    """Jittered exponential delays between compare-and-set attempts."""
    return [random.uniform(0, min(cap, base * 2**i)) for i in range(attempts)]


class CompareAndSetStore:
    """A :class:`RunStateStore` over any :class:`DocumentBackend`."""

    def __init__(
        self, backend: DocumentBackend, *, runtime: Runtime = SYSTEM, max_attempts: int = 12
    ) -> None:
        self.backend = backend
        self.runtime = runtime
        self.max_attempts = max_attempts

    def get(self, doc_id: str) -> RunState | None:
        read = self.backend.read(doc_id)
        return read[0] if read is not None else None

    def create(self, doc_id: str, state: RunState) -> bool:
        return self.backend.create(doc_id, state)

    def mutate(
        self, doc_id: str, transition: Callable[[RunState], Decision[T]]
    ) -> tuple[RunState, T]:
        attempted: tuple[RunState, T] | None = None
        for delay in [0.0, *backoff_delays(self.max_attempts - 1)]:
            if delay:
                self.runtime.sleep(delay)
            read = self.backend.read(doc_id)
            if read is None:
                raise RunNotFoundError(f"no run document {doc_id!r}")
            current, version = read
            if attempted is not None and current == attempted[0]:
                # Our last write was applied, but its answer was lost (the client saw a
                # failure and the precondition no longer holds): it is done.
                return attempted
            decision = transition(current)
            if decision.state is None:
                return current, decision.result
            new = decision.state
            new.revision = current.revision + 1
            new.updated_at = self.runtime.now()
            if self.backend.write_if(doc_id, new, version):
                return new, decision.result
            attempted = (new, decision.result)
        raise ContentionError(
            f"run document {doc_id!r} changed {self.max_attempts} times while being updated"
        )

    def query(self, *, status: str | None = None, limit: int = 100) -> list[RunState]:
        return self.backend.page(status=status, limit=limit, newest_first=True, after=None)

    def scan(self, *, status: str, page_size: int = 200) -> Iterator[RunState]:
        after: RunState | None = None
        while True:
            page = self.backend.page(
                status=status, limit=page_size, newest_first=False, after=after
            )
            yield from page
            if len(page) < page_size:
                return
            after = page[-1]

    def finished_before(self, cutoff: float, *, limit: int = 200) -> list[RunState]:
        return self.backend.finished_before(cutoff, limit=limit)

    def delete(self, doc_id: str) -> None:
        self.backend.delete(doc_id)


IoHook = Callable[[str, str], None]


class MemoryDocuments:
    """Run documents in a dict, with Firestore's semantics where the protocol depends on
    them: a version per write, conditional writes that fail once the document changed,
    and the 1 MiB limit.

    ``on_io(operation, doc_id)`` runs before every read and write — tests interleave
    other writers there, and the simulation yields to its scheduler and injects faults.
    No lock is held while it runs.
    """

    def __init__(self, *, on_io: IoHook | None = None) -> None:
        self._docs: dict[str, tuple[dict[str, Any], int]] = {}
        self._versions = 0
        self._lock = threading.Lock()
        self.on_io = on_io
        self.writes = 0

    def _io(self, operation: str, doc_id: str) -> None:
        if self.on_io is not None:
            self.on_io(operation, doc_id)

    def _stored(self, state: RunState) -> dict[str, Any]:
        document = state.model_dump()
        size = len(orjson.dumps(document))
        if size > MAX_DOCUMENT_BYTES:
            raise RunDocumentError(
                f"run document of {state.run_id!r} would be {size} bytes, over the "
                f"{MAX_DOCUMENT_BYTES}-byte limit"
            )
        return document

    def read(self, doc_id: str) -> tuple[RunState, Any] | None:
        self._io("read", doc_id)
        with self._lock:
            stored = self._docs.get(doc_id)
        if stored is None:
            return None
        return RunState.model_validate(stored[0]), stored[1]

    def write_if(self, doc_id: str, state: RunState, version: Any) -> bool:
        self._io("write", doc_id)
        document = self._stored(state)
        with self._lock:
            stored = self._docs.get(doc_id)
            if stored is None or stored[1] != version:
                return False
            self._versions += 1
            self._docs[doc_id] = (document, self._versions)
            self.writes += 1
            return True

    def create(self, doc_id: str, state: RunState) -> bool:
        self._io("create", doc_id)
        document = self._stored(state)
        with self._lock:
            if doc_id in self._docs:
                return False
            self._versions += 1
            self._docs[doc_id] = (document, self._versions)
            self.writes += 1
            return True

    def delete(self, doc_id: str) -> None:
        self._io("delete", doc_id)
        with self._lock:
            self._docs.pop(doc_id, None)

    def page(
        self, *, status: str | None, limit: int, newest_first: bool, after: RunState | None
    ) -> list[RunState]:
        self._io("query", "")
        with self._lock:
            documents = [d for d, _ in self._docs.values()]
        states = [RunState.model_validate(d) for d in documents]
        if status:
            states = [s for s in states if s.status == status]
        states.sort(key=_order_key, reverse=newest_first)
        if after is not None:
            mark = _order_key(after)
            states = [
                s
                for s in states
                if (_order_key(s) < mark if newest_first else _order_key(s) > mark)
            ]
        return states[:limit]

    def finished_before(self, cutoff: float, *, limit: int) -> list[RunState]:
        self._io("query", "")
        with self._lock:
            documents = [d for d, _ in self._docs.values()]
        states = [RunState.model_validate(d) for d in documents]
        expired = [
            s
            for s in states
            if not s.files_deleted and s.finished_at is not None and s.finished_at < cutoff
        ]
        return sorted(expired, key=lambda s: s.finished_at or 0.0)[:limit]


def _order_key(state: RunState) -> tuple[float, str]:
    return (state.created_at, document_id(state.tenant_id, state.pipeline, state.run_id))


class MemoryRunStateStore(CompareAndSetStore):
    """Run documents in memory (unit tests and the simulation)."""

    def __init__(self, *, runtime: Runtime = SYSTEM, on_io: IoHook | None = None) -> None:
        super().__init__(MemoryDocuments(on_io=on_io), runtime=runtime)
        self.documents: MemoryDocuments = self.backend  # type: ignore[assignment]

    @property
    def writes(self) -> int:
        return self.documents.writes
