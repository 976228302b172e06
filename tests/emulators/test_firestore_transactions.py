"""Firestore read-write transactions and preconditions, as the run-state guard uses them.

Measured on the Firestore emulator (google-cloud-cli 528) through google-cloud-firestore:
- Transactions lock pessimistically; a waiter gives up after a 2 s lock timeout with
  ABORTED ("Transaction lock timeout."), which the client retries at once, up to 5 attempts.
  So on one document about one contended transaction commits per 2 s round, and at most
  ~5 of N concurrent ones commit before the rest fail with
  `ValueError("Failed to commit transaction in 5 attempts.")` after ~10 s.
- Single-document writes with preconditions (`exists`, `last_update_time`) take no locks:
  among N racing writers exactly one wins at once and the others get a precondition error.

EMULATOR DIFFERS from production, which resolves two contending transactions well under a
second (the loser gets ABORTED at commit and its retry succeeds); production's limit is about
one sustained write per second per document. The engine must work with both: few writers
per document, a failed transaction means "retry later" (non-2xx, Pub/Sub redelivers), and
compare-and-set writes where a transaction is not needed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core.exceptions import Aborted, AlreadyExists, FailedPrecondition, NotFound
from google.cloud import firestore
from probe_support import ProbeFacts

from emulators import LocalCloud

pytestmark = pytest.mark.emulators

CLIENT_ATTEMPTS = 5  # google-cloud-firestore's default max_attempts


@pytest.fixture
def db(clean_cloud: LocalCloud, firestore_client: firestore.Client) -> firestore.Client:
    return firestore_client


def _increment(db: firestore.Client, ref: Any, on_first_read: Callable[[], object]) -> None:
    """Read-modify-write `ref.n` in a transaction; call `on_first_read` after the first read."""
    attempts = 0

    @firestore.transactional
    def body(transaction: Any) -> None:
        nonlocal attempts
        attempts += 1
        snapshot = ref.get(transaction=transaction)
        if attempts == 1:
            on_first_read()
        transaction.update(ref, {"n": snapshot.get("n") + 1})

    body(db.transaction())


def _race(workers: int, work: Callable[[int], None]) -> list[BaseException | None]:
    """Run `work(i)` in `workers` threads at once; return each one's error."""
    errors: list[BaseException | None] = [None] * workers

    def run(i: int) -> None:
        try:
            work(i)
        except Exception as error:
            errors[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_read_write_transaction_commits_reads_and_writes_atomically(
    db: firestore.Client,
) -> None:
    run = db.collection("runs").document("r-1")
    step = db.collection("runs").document("r-1").collection("steps").document("s1")
    run.set({"n": 0, "status": "running"})
    for _ in range(5):
        _increment(db, run, lambda: None)

    @firestore.transactional
    def finish(transaction: Any) -> None:
        snapshot = run.get(transaction=transaction)
        transaction.update(run, {"status": "completed", "n": snapshot.get("n") + 1})
        transaction.set(step, {"status": "completed"})

    finish(db.transaction())
    run_snapshot, step_snapshot = run.get(), step.get()
    assert run_snapshot.to_dict() == {"n": 6, "status": "completed"}
    assert step_snapshot.get("status") == "completed"
    assert run_snapshot.update_time == step_snapshot.update_time  # one commit time


def test_preconditions_refuse_with_distinct_errors(db: firestore.Client) -> None:
    doc = db.collection("runs").document("r-2")
    created = doc.create({"status": "running"})
    with pytest.raises(AlreadyExists):
        doc.create({"status": "running"})
    with pytest.raises(NotFound):
        db.collection("runs").document("missing").update({"status": "x"})
    with pytest.raises(NotFound):
        db.collection("runs").document("missing").delete(option=db.write_option(exists=True))
    db.collection("runs").document("missing").delete()  # no precondition: succeeds

    doc.update({"status": "completed"})
    with pytest.raises(FailedPrecondition):
        doc.update(
            {"status": "error"}, option=db.write_option(last_update_time=created.update_time)
        )
    current = doc.get()
    doc.update({"status": "error"}, option=db.write_option(last_update_time=current.update_time))
    assert doc.get().get("status") == "error"


def test_precondition_failure_inside_a_transaction_is_raised_not_retried(
    db: firestore.Client,
) -> None:
    """The client retries only ABORTED; AlreadyExists and FailedPrecondition surface at once."""
    doc = db.collection("runs").document("r-3")
    first = doc.create({"n": 1})
    doc.update({"n": 2})
    calls = 0

    @firestore.transactional
    def create_again(transaction: Any) -> None:
        nonlocal calls
        calls += 1
        transaction.create(doc, {"n": 0})

    @firestore.transactional
    def stale_update(transaction: Any) -> None:
        nonlocal calls
        calls += 1
        transaction.update(
            doc, {"n": 0}, option=db.write_option(last_update_time=first.update_time)
        )

    with pytest.raises(AlreadyExists):
        create_again(db.transaction())
    with pytest.raises(FailedPrecondition):
        stale_update(db.transaction())
    assert calls == 2
    assert doc.get().get("n") == 2


def test_compare_and_set_lets_exactly_one_of_many_writers_win_without_waiting(
    db: firestore.Client,
) -> None:
    """The losers get a precondition error, not a lock timeout (ABORTED): no one waits.
    How long the race takes: benchmarks/emulator_probes.py."""
    writers = 10
    doc = db.collection("runs").document("r-4")
    doc.set({"owner": None})
    base = doc.get().update_time
    barrier = threading.Barrier(writers)

    def claim(i: int) -> None:
        barrier.wait()
        doc.update({"owner": i}, option=db.write_option(last_update_time=base))

    errors = _race(writers, claim)
    assert errors.count(None) == 1
    assert all(isinstance(e, FailedPrecondition) for e in errors if e is not None)
    assert doc.get().get("owner") == errors.index(None)

    barrier = threading.Barrier(writers)
    fresh = db.collection("runs").document("r-5")

    def create(i: int) -> None:
        barrier.wait()
        fresh.create({"owner": i})

    errors = _race(writers, create)
    assert errors.count(None) == 1
    assert all(isinstance(e, AlreadyExists) for e in errors if e is not None)


def test_failed_transaction_releases_its_locks_at_once(db: firestore.Client) -> None:
    doc = db.collection("runs").document("r-6")
    doc.set({"n": 0})

    def fail() -> None:
        raise RuntimeError("step claim failed")

    with pytest.raises(RuntimeError):
        _increment(db, doc, fail)
    # A lock still held would make this plain write fail with ABORTED after the lock
    # timeout (see the next test); it is written.
    doc.update({"n": 10})
    _increment(db, doc, lambda: None)
    assert doc.get().get("n") == 11


def test_plain_write_to_a_document_read_in_an_open_transaction_aborts_after_lock_timeout(
    db: firestore.Client,
) -> None:
    """EMULATOR: the transaction's read lock makes a plain write wait 2 s, then fail with
    ABORTED, which the client does not retry for plain writes. In production a plain write
    also waits for the lock. The engine treats ABORTED from any write as retryable."""
    doc = db.collection("runs").document("r-7")
    doc.set({"n": 0})
    read_done, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        read_done.set()
        release.wait(timeout=30)

    holder = threading.Thread(target=_increment, args=(db, doc, hold_lock))
    holder.start()
    try:
        assert read_done.wait(timeout=60)
        with pytest.raises(Aborted, match="lock timeout"):
            doc.update({"n": 100})
    finally:
        release.set()
        holder.join(timeout=60)
    assert doc.get().get("n") == 1  # the transaction committed afterwards


@pytest.mark.slow
@pytest.mark.parametrize("writers", [2, 10])
def test_contended_transactions_on_one_document(
    writers: int, db: firestore.Client, probe_facts: ProbeFacts
) -> None:
    """N threads each increment one counter in a read-write transaction, all reading before
    any writes (a barrier), so every one of them contends.

    Measured (2 cores, idle): N=2 → both commit. N=10 → 2 to 5 commit, the others fail
    with ValueError after their 5 attempts (on a loaded machine up to all 10 commit). No
    update is ever lost: the counter equals the number of commits. How long it takes:
    benchmarks/emulator_probes.py.
    """
    doc = db.collection("counters").document(f"n{writers}")
    doc.set({"n": 0})
    barrier = threading.Barrier(writers)
    errors = _race(writers, lambda _: _increment(db, doc, lambda: barrier.wait(60)))
    commits = errors.count(None)
    probe_facts.record(f"contended transactions on one document, N={writers}: committed", commits)
    assert doc.get().get("n") == commits
    failures = [e for e in errors if e is not None]
    assert all(isinstance(e, ValueError) and "5 attempts" in str(e) for e in failures)
    if writers == 2:
        assert commits == 2
    else:
        # How many commit depends on timing (on an idle machine 2 to 5: one per lock-timeout
        # round, the client giving up after 5; on a loaded one the transactions may not
        # overlap at all, and all commit): what holds is that one does, and none is lost.
        assert commits >= 1
