"""The run document: one per run, the single source of truth of a serverless run's state.

Every change is a compare-and-set of the whole document (:meth:`RunStateStore.mutate`):
read it, compute the new state, write it only if nobody wrote in between. On Firestore
that is a write with a ``last_update_time`` precondition — an atomic read-modify-write on
one document that, unlike a pessimistic transaction, never holds a lock (the emulator
stalls for ~10 s under lock contention; see local-cloud.md). A lost race re-reads and
retries; if it keeps losing, the caller answers "retry later" and Pub/Sub redelivers.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .errors import ResumableError
from .status import RunStatus, StepStatus

T = TypeVar("T")

MAX_REJECTED = 20  # reasons of rejected messages kept on a run document


class StepState(BaseModel):
    """A step's row in the run document."""

    model_config = ConfigDict(extra="allow")

    status: str = StepStatus.NOT_STARTED
    attempt: int = 0  # the fencing token: +1 at every claim, never reset
    attempt_base: int = 0  # attempts before the last resume (the limit counts from here)
    failures: int = 0  # attempts that ended with an exception
    commits: int = 0  # successful commits: never more than 1 (tests count it)
    lease_owner: str | None = None
    lease_expires: float | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    manifest: str | None = None
    progress_manifest: str | None = None  # progress the current attempt saved mid-step
    checkpoint_bytes: int | None = None
    output_keys: list[str] = Field(default_factory=list)
    error: str | None = None


class RunState(BaseModel):
    """The run document."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    pipeline: str
    tenant_id: str = "default"
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

    @property
    def finished(self) -> bool:
        return RunStatus(self.status).finished


def apply_cancel(state: RunState, now: float) -> None:
    """Cancel what has not started; the run is ``cancelled`` once no step runs any more.

    A step still ``running`` under an expired lease has lost its worker: it will never
    commit, so it is cancelled too rather than waited for.
    """
    state.cancel_requested = True
    for record in state.steps.values():
        abandoned = record.status == StepStatus.RUNNING and (record.lease_expires or 0) < now
        if record.status in (StepStatus.QUEUED, StepStatus.NOT_STARTED) or abandoned:
            record.status = StepStatus.CANCELLED
            record.lease_owner = None
            record.lease_expires = None
    if not any(r.status == StepStatus.RUNNING for r in state.steps.values()):
        state.status = RunStatus.CANCELLED
        state.finished_at = now


def document_id(tenant_id: str, pipeline: str, run_id: str) -> str:
    """Ids are validated (no ``~``), so ``~`` separates them unambiguously."""
    return f"{tenant_id}~{pipeline}~{run_id}"


class RunNotFoundError(ResumableError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "run not found"


class ContentionError(ResumableError):
    """The run document kept changing under us: try again later."""


class Unchanged(Exception):
    """Raised by a mutation function to leave the document as it is."""


class RunStateStore(Protocol):
    """Where run documents live (Firestore in production)."""

    def get(self, doc_id: str) -> RunState | None: ...

    def create(self, doc_id: str, state: RunState) -> bool:
        """Create the document; ``False`` if it already exists (nothing is written)."""
        ...

    def mutate(self, doc_id: str, change: Callable[[RunState], T]) -> tuple[RunState, T]:
        """Apply ``change`` (which edits the state in place and returns a result) atomically.

        ``change`` may run several times, on fresh reads; it may raise :class:`Unchanged`
        to write nothing (its ``args[0]`` is returned as the result).
        Raises :class:`RunNotFoundError` or :class:`ContentionError`.
        """
        ...

    def query(self, *, status: str | None = None, limit: int = 100) -> list[RunState]: ...

    def delete(self, doc_id: str) -> None: ...


def backoff_delays(attempts: int, base: float = 0.02, cap: float = 1.0) -> list[float]:
    """Jittered exponential delays between compare-and-set attempts."""
    return [random.uniform(0, min(cap, base * 2**i)) for i in range(attempts)]


class MemoryRunStateStore:
    """Run documents in a dict, with the same compare-and-set semantics (for unit tests)."""

    def __init__(self) -> None:
        self._docs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.writes = 0

    def get(self, doc_id: str) -> RunState | None:
        with self._lock:
            raw = self._docs.get(doc_id)
        return RunState.model_validate(raw) if raw is not None else None

    def create(self, doc_id: str, state: RunState) -> bool:
        with self._lock:
            if doc_id in self._docs:
                return False
            self._docs[doc_id] = state.model_dump()
            self.writes += 1
            return True

    def mutate(self, doc_id: str, change: Callable[[RunState], T]) -> tuple[RunState, T]:
        with self._lock:
            raw = self._docs.get(doc_id)
            if raw is None:
                raise RunNotFoundError(f"no run document {doc_id!r}")
            state = RunState.model_validate(raw)
            try:
                result = change(state)
            except Unchanged as unchanged:
                return RunState.model_validate(raw), unchanged.args[0] if unchanged.args else None  # type: ignore[return-value]
            state.revision += 1
            state.updated_at = time.time()
            self._docs[doc_id] = state.model_dump()
            self.writes += 1
            return state, result

    def query(self, *, status: str | None = None, limit: int = 100) -> list[RunState]:
        with self._lock:
            docs = list(self._docs.values())
        states = [RunState.model_validate(d) for d in docs]
        if status:
            states = [s for s in states if s.status == status]
        return sorted(states, key=lambda s: -s.created_at)[:limit]

    def delete(self, doc_id: str) -> None:
        with self._lock:
            self._docs.pop(doc_id, None)
