"""Run documents in Firestore, changed by compare-and-set on ``update_time``.

A finished run's document carries :data:`EXPIRE_AT`, the time after which the
deployment's TTL policy may delete it; :data:`COMPOSITE_INDEXES` are the indexes the
queries here need. The deployment tools (``resumable.deploy``) provision both from these
constants.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from .runstate import (
    ContentionError,
    RunNotFoundError,
    RunState,
    Unchanged,
    backoff_delays,
)

T = TypeVar("T")

EXPIRE_AT = "expire_at"
"""Timestamp field of finished run documents: Firestore's TTL policy deletes them after it."""

COMPOSITE_INDEXES: tuple[tuple[tuple[str, str], ...], ...] = (
    # query(status=...): newest runs first.
    (("status", "ASCENDING"), ("created_at", "DESCENDING")),
)
"""Composite indexes of the run collection, as ``(field, "ASCENDING" | "DESCENDING")``."""


def make_firestore_client(project: str | None = None, database: str = "(default)") -> Any:
    """A Firestore client; anonymous when ``FIRESTORE_EMULATOR_HOST`` is set."""
    from google.cloud import firestore

    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return firestore.Client(
            project=project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "resumable-local",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            database=database,
        )
    return firestore.Client(project=project, database=database)


class FirestoreRunStateStore:
    """Run documents in ``collection``. Each write is atomic on its one document."""

    def __init__(
        self,
        client: Any,
        collection: str = "resumable_runs",
        *,
        max_attempts: int = 12,
        retention_seconds: float | None = None,
    ) -> None:
        """``retention_seconds``: how long a finished run's document is kept (``None``:
        forever); the TTL policy on :data:`EXPIRE_AT` deletes it after that."""
        self.client = client
        self.collection = client.collection(collection)
        self.max_attempts = max_attempts
        self.retention_seconds = retention_seconds

    def get(self, doc_id: str) -> RunState | None:
        snapshot = self.collection.document(doc_id).get()
        return _state(snapshot.to_dict()) if snapshot.exists else None

    def _document(self, state: RunState, *, update: bool) -> dict[str, Any]:
        """The stored form of ``state``: with its expiry when finished, without otherwise."""
        document = state.model_dump()
        if state.finished and self.retention_seconds is not None:
            finished = state.finished_at or state.updated_at
            document[EXPIRE_AT] = datetime.fromtimestamp(finished + self.retention_seconds, UTC)
        elif update:
            from google.cloud import firestore

            document[EXPIRE_AT] = firestore.DELETE_FIELD  # a resumed run lives on
        return document

    def create(self, doc_id: str, state: RunState) -> bool:
        from google.api_core import exceptions

        try:
            self.collection.document(doc_id).create(self._document(state, update=False))
        except exceptions.AlreadyExists:
            return False
        return True

    def mutate(self, doc_id: str, change: Callable[[RunState], T]) -> tuple[RunState, T]:
        from google.api_core import exceptions

        ref = self.collection.document(doc_id)
        for delay in [0.0, *backoff_delays(self.max_attempts - 1)]:
            if delay:
                time.sleep(delay)
            snapshot = ref.get()
            if not snapshot.exists:
                raise RunNotFoundError(f"no run document {doc_id!r}")
            state = _state(snapshot.to_dict())
            try:
                result = change(state)
            except Unchanged as unchanged:
                return state, unchanged.args[0] if unchanged.args else None  # type: ignore[return-value]
            state.revision += 1
            state.updated_at = time.time()
            option = self.client.write_option(last_update_time=snapshot.update_time)
            try:
                # Every top-level field is written, so the update replaces the document.
                ref.update(self._document(state, update=True), option=option)
            except (exceptions.FailedPrecondition, exceptions.Aborted, exceptions.NotFound):
                continue
            return state, result
        raise ContentionError(
            f"run document {doc_id!r} changed {self.max_attempts} times while being updated"
        )

    def query(self, *, status: str | None = None, limit: int = 100) -> list[RunState]:
        """The newest ``limit`` runs (with ``status``), newest first."""
        from google.cloud.firestore_v1.base_query import BaseQuery, FieldFilter

        query = self.collection
        if status:
            query = query.where(filter=FieldFilter("status", "==", status))
        query = query.order_by("created_at", direction=BaseQuery.DESCENDING)
        return [_state(s.to_dict()) for s in query.limit(limit).stream()]

    def delete(self, doc_id: str) -> None:
        self.collection.document(doc_id).delete()


def _state(document: dict[str, Any]) -> RunState:
    document.pop(EXPIRE_AT, None)  # storage bookkeeping, not part of the run's state
    return RunState.model_validate(document)
