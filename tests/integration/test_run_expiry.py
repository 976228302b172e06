"""Run documents on the Firestore emulator: what the deployment's TTL policy and index
rely on — a finished run carries its expiry time, a resumed one loses it, and a status
query returns the newest runs first."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from resumable.serverless._firestore import (
    DOCUMENT_GRACE_SECONDS,
    EXPIRE_AT,
    FirestoreRunStateStore,
    make_firestore_client,
)
from resumable.serverless._run_state import Decision, RunState, StepState

pytestmark = pytest.mark.emulators

DAY = 86400.0


@pytest.fixture
def store(local_cloud: object) -> FirestoreRunStateStore:
    client = make_firestore_client("resumable-expiry")
    return FirestoreRunStateStore(
        client, f"runs_{uuid.uuid4().hex[:8]}", retention_seconds=30 * DAY
    )


def running(run_id: str, created_at: float) -> RunState:
    return RunState(
        run_id=run_id,
        pipeline="p",
        fingerprint="f",
        params_manifest="m",
        params_hash="h",
        created_at=created_at,
        updated_at=created_at,
        steps={"a": StepState()},
    )


def stored(store: FirestoreRunStateStore, doc_id: str) -> dict[str, object]:
    return dict(store.collection.document(doc_id).get().to_dict())


def test_finished_run_expires_retention_after_it_finished(store: FirestoreRunStateStore) -> None:
    store.create("r1", running("r1", time.time()))
    assert EXPIRE_AT not in stored(store, "r1")
    finished_at = time.time()

    def finish(state: RunState) -> Decision[None]:
        new = state.model_copy(deep=True)
        new.status = "completed"
        new.finished_at = finished_at
        return Decision(None, new)

    store.mutate("r1", finish)
    expire_at = stored(store, "r1")[EXPIRE_AT]
    assert isinstance(expire_at, datetime)
    expected = datetime.fromtimestamp(finished_at + 30 * DAY + DOCUMENT_GRACE_SECONDS, UTC)
    assert abs((expire_at - expected).total_seconds()) < 0.01
    state = store.get("r1")
    assert state is not None and EXPIRE_AT not in (state.model_extra or {})


def test_resumed_run_no_longer_expires(store: FirestoreRunStateStore) -> None:
    state = running("r2", time.time())
    state.status, state.finished_at = "error", time.time()
    store.create("r2", state)
    assert EXPIRE_AT in stored(store, "r2")

    def resume(state: RunState) -> Decision[None]:
        new = state.model_copy(deep=True)
        new.status, new.finished_at = "running", None
        return Decision(None, new)

    store.mutate("r2", resume)
    assert EXPIRE_AT not in stored(store, "r2")


def test_status_query_returns_newest_runs_first(store: FirestoreRunStateStore) -> None:
    now = time.time()
    for n in range(5):
        store.create(f"q{n}", running(f"q{n}", now + n))
    done = running("done", now + 10)
    done.status = "completed"
    store.create("done", done)
    newest = store.query(status="running", limit=3)
    assert [s.run_id for s in newest] == ["q4", "q3", "q2"]


def test_finished_runs_whose_checkpoints_remain_are_found_oldest_first(
    store: FirestoreRunStateStore,
) -> None:
    now = time.time()
    runs = [
        ("error", now - 100, False),
        ("cancelled", now - 300, False),
        ("completed", now - 200, True),
        ("running", None, False),
        ("completed", now - 5, False),
    ]
    for n, (status, finished, deleted) in enumerate(runs):
        state = running(f"f{n}", now - 1000 + n)
        state.status, state.finished_at, state.files_deleted = status, finished, deleted
        store.create(f"f{n}", state)
    found = store.finished_before(now - 50, limit=10)
    assert [s.run_id for s in found] == ["f1", "f0"]
