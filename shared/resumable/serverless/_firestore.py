"""Run documents in Firestore, changed by compare-and-set on ``update_time``.

A finished run's document carries :data:`EXPIRE_AT`, the time after which the
deployment's TTL policy may delete it; :data:`COMPOSITE_INDEXES` are the indexes the
queries here need. The deployment tools (``resumable.deploy``) provision both from these
constants.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from resumable._defaults import DEFAULT_COLLECTION
from resumable.errors import RunDocumentError
from resumable.serverless._run_state import CompareAndSetStore, RunState
from resumable.serverless._runtime import SYSTEM, Runtime

EXPIRE_AT = "expire_at"
"""Timestamp field of finished run documents: Firestore's TTL policy deletes them after it."""

DOCUMENT_GRACE_SECONDS = 86400.0

COMPOSITE_INDEXES: tuple[tuple[tuple[str, str], ...], ...] = (
    # query(status=...): newest runs first; scan(status=...): oldest first.
    (("status", "ASCENDING"), ("created_at", "DESCENDING")),
    (("status", "ASCENDING"), ("created_at", "ASCENDING")),
    # finished_before(): finished runs whose checkpoints are still stored, oldest first.
    (("files_deleted", "ASCENDING"), ("finished_at", "ASCENDING")),
    # `resumable ui`'s pipeline filter: a pipeline's newest runs, with or without a status.
    (("pipeline", "ASCENDING"), ("created_at", "DESCENDING")),
    (("pipeline", "ASCENDING"), ("status", "ASCENDING"), ("created_at", "DESCENDING")),
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


class FirestoreDocuments:
    """Run documents in one collection; the version of a document is its ``update_time``."""

    def __init__(
        self, client: Any, collection: str, *, retention_seconds: float | None = None
    ) -> None:
        self.client = client
        self.collection = client.collection(collection)
        self.retention_seconds = retention_seconds

    def _stored(self, state: RunState, *, update: bool) -> dict[str, Any]:
        """The stored form of ``state``: with its expiry when finished, without otherwise."""
        document = state.model_dump()
        if state.finished and self.retention_seconds is not None:
            # A day after the watchdog deletes the run's checkpoints (at the retention): the
            # document outlives its objects, so that nothing is left without an owner.
            finished = state.finished_at or state.updated_at
            expiry = finished + self.retention_seconds + DOCUMENT_GRACE_SECONDS
            document[EXPIRE_AT] = datetime.fromtimestamp(expiry, UTC)
        elif update:
            from google.cloud import firestore

            document[EXPIRE_AT] = firestore.DELETE_FIELD  # a resumed run lives on
        return document

    def read(self, doc_id: str) -> tuple[RunState, Any] | None:
        snapshot = self.collection.document(doc_id).get()
        if not snapshot.exists:
            return None
        return _state(snapshot.to_dict()), snapshot.update_time

    def write_if(self, doc_id: str, state: RunState, version: Any) -> bool:
        from google.api_core import exceptions

        option = self.client.write_option(last_update_time=version)
        try:
            # Every top-level field is written, so the update replaces the document.
            self.collection.document(doc_id).update(self._stored(state, update=True), option=option)
        except (exceptions.FailedPrecondition, exceptions.Aborted, exceptions.NotFound):
            return False
        except exceptions.InvalidArgument as exc:
            raise RunDocumentError(f"Firestore refused run document {doc_id!r}: {exc}") from exc
        return True

    def create(self, doc_id: str, state: RunState) -> bool:
        from google.api_core import exceptions

        try:
            self.collection.document(doc_id).create(self._stored(state, update=False))
        except exceptions.AlreadyExists:
            return False
        except exceptions.InvalidArgument as exc:
            raise RunDocumentError(f"Firestore refused run document {doc_id!r}: {exc}") from exc
        return True

    def delete(self, doc_id: str) -> None:
        self.collection.document(doc_id).delete()

    def page(
        self, *, status: str | None, limit: int, newest_first: bool, after: RunState | None
    ) -> list[RunState]:
        from google.cloud.firestore_v1.base_query import BaseQuery, FieldFilter

        query = self.collection
        if status:
            query = query.where(filter=FieldFilter("status", "==", status))
        direction = BaseQuery.DESCENDING if newest_first else BaseQuery.ASCENDING
        query = query.order_by("created_at", direction=direction).order_by(
            "__name__", direction=direction
        )
        if after is not None:
            from resumable.serverless._run_state import document_id

            name = self.collection.document(
                document_id(after.tenant_id, after.pipeline, after.run_id)
            )
            query = query.start_after({"created_at": after.created_at, "__name__": name})
        return [_state(s.to_dict()) for s in query.limit(limit).stream()]

    def finished_before(self, cutoff: float, *, limit: int) -> list[RunState]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self.collection.where(filter=FieldFilter("files_deleted", "==", False))
            .where(filter=FieldFilter("finished_at", "<", cutoff))
            .order_by("finished_at")
            .limit(limit)
        )
        return [_state(s.to_dict()) for s in query.stream()]


class FirestoreRunStateStore(CompareAndSetStore):
    """Run documents in ``collection``. Each write is atomic on its one document."""

    def __init__(
        self,
        client: Any,
        collection: str = DEFAULT_COLLECTION,
        *,
        max_attempts: int = 12,
        retention_seconds: float | None = None,
        runtime: Runtime = SYSTEM,
    ) -> None:
        """``retention_seconds``: how long a finished run's document is kept (``None``:
        forever); the TTL policy on :data:`EXPIRE_AT` deletes it after that."""
        self.documents = FirestoreDocuments(client, collection, retention_seconds=retention_seconds)
        super().__init__(self.documents, runtime=runtime, max_attempts=max_attempts)
        self.client = client
        self.collection = self.documents.collection


def _state(document: dict[str, Any]) -> RunState:
    document.pop(EXPIRE_AT, None)  # storage bookkeeping, not part of the run's state
    return RunState.model_validate(document)
