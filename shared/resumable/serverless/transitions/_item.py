"""Transitions of one item of a map step: claim, renew, finish, redrive, dead letter.

Like the run document's transitions, each is a pure function of the item document as
read (``None``: not created yet); the map code writes the result back only if the
document did not change since (compare-and-set on its version), together with the change
to the item counters, and re-reads and re-applies on a conflict.

Invariants:

- *one owner per item attempt* — :func:`claim_item` hands out attempt numbers; every
  later change by a worker checks owner **and** attempt;
- *each item finishes once per generation* — an item counts as completed or failed in
  the counters exactly when its document turns ``completed`` or ``failed``; only a redrive
  (a resumed run) turns a failed item back, and takes it off the failed counter then;
- *a crashed item is taken over* once its lease expired, and given up (failed) after
  ``retries + 1 + CRASH_ALLOWANCE`` claims, as a step is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from resumable.serverless._map_state import CountChange, ItemState, ItemStatus
from resumable.serverless.transitions._rules import CRASH_ALLOWANCE, bounded


class ItemVerdict(StrEnum):
    CLAIMED = "claimed"  # run the item under this attempt
    DONE = "done"  # completed or failed before: nothing to run (check the join, ack)
    BUSY = "busy"  # another worker holds a live lease: retry later
    GAVE_UP = "gave_up"  # past the claim limit: the item failed
    COMPLETED = "completed"
    RETRY = "retry"  # raised a retryable error within its retries: queued, retry later
    FAILED = "failed"
    STALE = "stale"  # no longer ours: nothing changed
    OWNED = "owned"  # a renewal: still ours
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class ItemDecision:
    """What a transition decided: the new item document (``None``: keep), the change to
    the counters that goes with it, and for a claim the attempt."""

    verdict: ItemVerdict
    item: ItemState | None = None
    change: CountChange | None = None
    attempt: int = 0
    reason: str = ""


def max_item_claims(retries: int) -> int:
    return retries + 1 + CRASH_ALLOWANCE


def _live(item: ItemState, now: float) -> bool:
    return item.status == ItemStatus.RUNNING and (item.lease_expires or 0) > now


def _owns(item: ItemState | None, owner: str, attempt: int) -> bool:
    return (
        item is not None
        and item.status == ItemStatus.RUNNING
        and item.lease_owner == owner
        and item.attempt == attempt
    )


def claim_item(
    item: ItemState | None,
    *,
    owner: str,
    now: float,
    lease_seconds: float,
    generation: int,
    retries: int,
) -> ItemDecision:
    """A delivery of an item's message asks for the item's lease."""
    if item is None:
        new = ItemState(
            status=ItemStatus.RUNNING,
            generation=generation,
            attempt=1,
            lease_owner=owner,
            lease_expires=now + lease_seconds,
            started_at=now,
        )
        return ItemDecision(ItemVerdict.CLAIMED, new, attempt=1)
    if item.status in (ItemStatus.COMPLETED, ItemStatus.FAILED):
        return ItemDecision(ItemVerdict.DONE, reason=f"item is {item.status}")
    if _live(item, now):
        return ItemDecision(ItemVerdict.BUSY, reason="another worker holds the item's lease")
    new = item.model_copy()
    used = item.attempt - item.base
    if used >= max_item_claims(retries):
        reason = (
            f"gave up after {used} attempts ({item.failures} raised; the others lost their "
            "lease: the worker crashed or timed out)"
        )
        new.status = ItemStatus.FAILED
        new.error = bounded(item.error + "; " + reason if item.error else reason)
        new.lease_owner = None
        new.lease_expires = None
        new.finished_at = now
        return ItemDecision(ItemVerdict.GAVE_UP, new, CountChange(failed=1), reason=reason)
    new.status = ItemStatus.RUNNING
    new.attempt += 1
    new.generation = max(new.generation, generation)
    new.lease_owner = owner
    new.lease_expires = now + lease_seconds
    new.started_at = now
    return ItemDecision(ItemVerdict.CLAIMED, new, attempt=new.attempt)


def renew_item(
    item: ItemState | None, *, owner: str, attempt: int, now: float, lease_seconds: float
) -> ItemDecision:
    """The item's heartbeat: extend its lease while it is ours."""
    if item is None or not _owns(item, owner, attempt):
        return ItemDecision(ItemVerdict.STALE)
    new = item.model_copy()
    new.lease_expires = now + lease_seconds
    return ItemDecision(ItemVerdict.OWNED, new)


def finish_item(
    item: ItemState | None,
    *,
    owner: str,
    attempt: int,
    now: float,
    result: str | None = None,
    error: str | None = None,
    retryable: bool = False,
    retries: int = 0,
) -> ItemDecision:
    """The item's call ended: with ``result`` (an encoded entry), or raised ``error``.
    Refused (``STALE``) unless we still own the attempt: a worker whose lease expired
    and whose item was taken over loses its result."""
    if item is None or not _owns(item, owner, attempt):
        return ItemDecision(ItemVerdict.STALE)
    new = item.model_copy()
    new.lease_owner = None
    new.lease_expires = None
    if error is None:
        new.status = ItemStatus.COMPLETED
        new.result = result
        new.error = None
        new.finished_at = now
        return ItemDecision(ItemVerdict.COMPLETED, new, CountChange(completed=1))
    new.failures += 1
    new.error = bounded(error)
    if retryable and new.failures <= retries:
        new.status = ItemStatus.QUEUED
        return ItemDecision(ItemVerdict.RETRY, new)
    new.status = ItemStatus.FAILED
    new.finished_at = now
    return ItemDecision(ItemVerdict.FAILED, new, CountChange(failed=1))


def redrive_item(item: ItemState, *, generation: int) -> ItemDecision:
    """A resumed run runs its failed items again: a failed item is queued afresh (its
    retries and claims counted anew) and taken off the failed counter."""
    if item.status != ItemStatus.FAILED or item.generation >= generation:
        return ItemDecision(ItemVerdict.UNCHANGED)
    new = item.model_copy()
    new.status = ItemStatus.QUEUED
    new.generation = generation
    new.failures = 0
    new.base = item.attempt
    new.finished_at = None
    return ItemDecision(ItemVerdict.RETRY, new, CountChange(failed=-1))


def dead_letter_item(
    item: ItemState | None, *, now: float, generation: int, deliveries: str | None
) -> ItemDecision:
    """The item's message exhausted its delivery attempts: the item failed, unless it
    finished or is still running under a live lease (its worker will finish it)."""
    reason = (
        f"its message was dead-lettered after {deliveries or 'too many'} delivery attempts "
        "(the function kept failing to answer)"
    )
    if item is None:
        new = ItemState(
            status=ItemStatus.FAILED, generation=generation, error=reason, finished_at=now
        )
        return ItemDecision(ItemVerdict.FAILED, new, CountChange(failed=1), reason=reason)
    if item.status in (ItemStatus.COMPLETED, ItemStatus.FAILED) or _live(item, now):
        return ItemDecision(ItemVerdict.UNCHANGED, reason=f"item is {item.status}")
    new = item.model_copy()
    new.status = ItemStatus.FAILED
    new.error = bounded(f"{item.error}; {reason}" if item.error else reason)
    new.lease_owner = None
    new.lease_expires = None
    new.finished_at = now
    return ItemDecision(ItemVerdict.FAILED, new, CountChange(failed=1), reason=reason)
