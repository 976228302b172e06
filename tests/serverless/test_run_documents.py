"""The run-document stores, in memory and on the Firestore emulator through the official
client, held to the same behaviour: create once, compare-and-set retried on a fresh read
when another writer got in between (and given up with a clear error when that never
stops), a write whose answer was lost not applied twice, the 1 MiB limit as a clear error
that changes nothing, paging, the expiry sweep's query; and the production client's
credentials."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from resumable.errors import ContentionError, RunDocumentError, RunNotFoundError
from resumable.serverless._firestore import FirestoreRunStateStore, make_firestore_client
from resumable.serverless._run_state import (
    CompareAndSetStore,
    Decision,
    MemoryRunStateStore,
    RunState,
    StepState,
)


@pytest.fixture(params=["memory", pytest.param("firestore", marks=pytest.mark.emulators)])
def store(request: pytest.FixtureRequest) -> CompareAndSetStore:
    if request.param == "memory":
        return MemoryRunStateStore()
    request.getfixturevalue("local_cloud")
    return FirestoreRunStateStore(
        make_firestore_client("resumable-state"), f"runs_{uuid.uuid4().hex[:8]}"
    )


def another_writer(store: CompareAndSetStore) -> CompareAndSetStore:
    """A second client of the same documents (another function instance)."""
    if isinstance(store, FirestoreRunStateStore):
        return FirestoreRunStateStore(store.client, store.collection.id)
    return CompareAndSetStore(store.backend)


def running(run_id: str, created_at: float, status: str = "running") -> RunState:
    return RunState(
        run_id=run_id,
        pipeline="p",
        status=status,
        fingerprint="f",
        params_manifest="m",
        params_hash="h",
        created_at=created_at,
        updated_at=created_at,
        steps={"a": StepState(), "b": StepState()},
    )


def test_a_run_document_is_created_once(store: CompareAndSetStore) -> None:
    first = running("r1", 1000.0)
    assert store.create("r1", first)
    second = running("r1", 2000.0)
    second.error = "the second start"
    assert not store.create("r1", second)
    stored = store.get("r1")
    assert stored is not None and stored.created_at == 1000.0 and stored.error is None
    assert store.get("absent") is None


def test_mutate_of_a_missing_document_says_so(store: CompareAndSetStore) -> None:
    with pytest.raises(RunNotFoundError, match="no run document 'absent'"):
        store.mutate("absent", lambda s: Decision(None, s.model_copy()))


def test_a_write_between_read_and_write_makes_the_transition_run_again_on_it(
    store: CompareAndSetStore,
) -> None:
    store.create("r1", running("r1", 1000.0))
    other = another_writer(store)
    seen: list[int] = []

    def add_rejection(state: RunState) -> Decision[str]:
        seen.append(state.revision)
        if len(seen) == 1:  # another writer commits after our read, before our write
            other.mutate("r1", lambda s: Decision(None, _with(s, "from the other writer")))
        return Decision("ours", _with(state, "from us"))

    state, result = store.mutate("r1", add_rejection)
    assert result == "ours"
    assert seen == [0, 1]  # the first write was refused; the retry read the other's
    assert state.rejected_messages == ["from the other writer", "from us"]
    assert state.revision == 2
    assert store.get("r1") == state


def _with(state: RunState, message: str) -> RunState:
    new = state.model_copy(deep=True)
    new.rejected_messages.append(message)
    return new


def test_concurrent_writers_each_apply_their_change_once(store: CompareAndSetStore) -> None:
    store.create("r1", running("r1", 1000.0))
    writers = 3
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        mine = another_writer(store)
        barrier.wait(timeout=60)
        try:
            mine.mutate("r1", lambda s: Decision(None, _with(s, f"writer {n}")))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    final = store.get("r1")
    assert final is not None
    assert sorted(final.rejected_messages) == [f"writer {n}" for n in range(writers)]
    assert final.revision == writers


def test_a_document_over_the_limit_is_a_clear_error_and_changes_nothing(
    store: CompareAndSetStore,
) -> None:
    huge = running("big", 1000.0)
    huge.rejected_messages = ["x" * 1_100_000]
    with pytest.raises(RunDocumentError, match="'big'"):
        store.create("big", huge)
    assert store.get("big") is None

    store.create("r1", running("r1", 1000.0))
    before = store.get("r1")
    with pytest.raises(RunDocumentError, match="'r1'"):
        store.mutate("r1", lambda s: Decision(None, _with(s, "y" * 1_100_000)))
    assert store.get("r1") == before


def test_delete(store: CompareAndSetStore) -> None:
    store.create("r1", running("r1", 1000.0))
    store.delete("r1")
    assert store.get("r1") is None
    store.delete("r1")  # deleting what is gone is no error


def test_scan_pages_through_every_run_of_a_status_oldest_first(
    store: CompareAndSetStore,
) -> None:
    for n in range(5):
        store.create(f"default~p~r{n}", running(f"r{n}", 1000.0 + n))
    store.create("default~p~done", running("done", 999.0, status="completed"))
    # two runs created at the same instant are told apart by their document name
    store.create("default~p~r5", running("r5", 1004.0))
    scanned = [s.run_id for s in store.scan(status="running", page_size=2)]
    assert scanned == ["r0", "r1", "r2", "r3", "r4", "r5"]
    newest = [s.run_id for s in store.query(limit=3)]
    assert newest == ["r5", "r4", "r3"]
    assert [s.run_id for s in store.query(status="completed")] == ["done"]


def test_finished_before_lists_the_runs_whose_files_are_still_kept(
    store: CompareAndSetStore,
) -> None:
    for run_id, finished_at, deleted in [
        ("old", 100.0, False),
        ("older", 50.0, False),
        ("cleaned", 60.0, True),
        ("recent", 900.0, False),
    ]:
        state = running(run_id, 10.0, status="completed")
        state.finished_at, state.files_deleted = finished_at, deleted
        store.create(run_id, state)
    store.create("live", running("live", 10.0))
    assert [s.run_id for s in store.finished_before(500.0)] == ["older", "old"]
    assert [s.run_id for s in store.finished_before(500.0, limit=1)] == ["older"]


def test_without_the_emulator_the_client_uses_the_environments_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.auth.credentials import AnonymousCredentials

    credentials = tmp_path / "adc.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "id.apps.googleusercontent.com",
                "client_secret": "secret",
                "refresh_token": "token",
            }
        )
    )
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
    client = make_firestore_client("acme-video", database="runs-db")
    assert client.project == "acme-video"
    assert client._database == "runs-db"
    assert not isinstance(client._credentials, AnonymousCredentials)


def test_a_run_document_that_never_stops_changing_is_given_up_with_a_clear_error(
    store: CompareAndSetStore,
) -> None:
    store.create("r1", running("r1", 1000.0))
    other = another_writer(store)
    impatient = CompareAndSetStore(store.backend, max_attempts=3)
    calls: list[int] = []

    def ours(state: RunState) -> Decision[None]:
        calls.append(state.revision)
        other.mutate("r1", lambda s: Decision(None, _with(s, f"other {len(calls)}")))
        return Decision(None, _with(state, "ours"))

    with pytest.raises(ContentionError, match="'r1' changed 3 times while being updated"):
        impatient.mutate("r1", ours)
    assert calls == [0, 1, 2]
    final = store.get("r1")
    assert final is not None
    assert final.rejected_messages == ["other 1", "other 2", "other 3"]  # none of ours


class _AnswerLost:
    """A backend whose first conditional write is applied but answered ``False``, as when
    the service committed it and the reply was lost."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.lost = backend, 0

    def write_if(self, doc_id: str, state: RunState, version: Any) -> bool:
        written = self.backend.write_if(doc_id, state, version)
        if written and self.lost == 0:
            self.lost += 1
            return False
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


def test_a_write_whose_answer_was_lost_is_recognised_and_not_applied_twice(
    store: CompareAndSetStore,
) -> None:
    store.create("r1", running("r1", 1000.0))
    lossy = CompareAndSetStore(_AnswerLost(store.backend))  # type: ignore[arg-type]
    calls: list[int] = []

    def ours(state: RunState) -> Decision[str]:
        calls.append(state.revision)
        return Decision("done", _with(state, "ours"))

    state, result = lossy.mutate("r1", ours)
    assert (result, calls) == ("done", [0])
    assert state.rejected_messages == ["ours"] and state.revision == 1
    assert store.get("r1") == state


def test_a_transition_that_changes_nothing_writes_nothing(store: CompareAndSetStore) -> None:
    store.create("r1", running("r1", 1000.0))
    state, result = store.mutate("r1", lambda s: Decision("unchanged"))
    assert result == "unchanged" and state.revision == 0
    assert store.get("r1") == state
