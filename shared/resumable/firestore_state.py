"""Run documents in Firestore, changed by compare-and-set on ``update_time``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .runstate import (
    ContentionError,
    RunNotFoundError,
    RunState,
    Unchanged,
    backoff_delays,
)

T = TypeVar("T")


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
        self, client: Any, collection: str = "resumable_runs", *, max_attempts: int = 12
    ) -> None:
        self.client = client
        self.collection = client.collection(collection)
        self.max_attempts = max_attempts

    def get(self, doc_id: str) -> RunState | None:
        snapshot = self.collection.document(doc_id).get()
        return RunState.model_validate(snapshot.to_dict()) if snapshot.exists else None

    def create(self, doc_id: str, state: RunState) -> bool:
        from google.api_core import exceptions

        try:
            self.collection.document(doc_id).create(state.model_dump())
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
            state = RunState.model_validate(snapshot.to_dict())
            try:
                result = change(state)
            except Unchanged as unchanged:
                return state, unchanged.args[0] if unchanged.args else None  # type: ignore[return-value]
            state.revision += 1
            state.updated_at = time.time()
            option = self.client.write_option(last_update_time=snapshot.update_time)
            try:
                # Every top-level field is written, so the update replaces the document.
                ref.update(state.model_dump(), option=option)
            except (exceptions.FailedPrecondition, exceptions.Aborted, exceptions.NotFound):
                continue
            return state, result
        raise ContentionError(
            f"run document {doc_id!r} changed {self.max_attempts} times while being updated"
        )

    def query(self, *, status: str | None = None, limit: int = 100) -> list[RunState]:
        query = self.collection
        if status:
            from google.cloud.firestore_v1.base_query import FieldFilter

            query = query.where(filter=FieldFilter("status", "==", status))
        states = [RunState.model_validate(s.to_dict()) for s in query.limit(limit).stream()]
        return sorted(states, key=lambda s: -s.created_at)

    def delete(self, doc_id: str) -> None:
        self.collection.document(doc_id).delete()
