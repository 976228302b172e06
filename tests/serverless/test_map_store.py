"""The map stores — in memory and on the Firestore emulator — held to the same behaviour:
create-only maps and markers, compare-and-set items with their counter change in the same
write, counts summed over shards, item order, failed items, and deletion with the run.
Plus the item transitions alone (``transitions._item``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from resumable.serverless._map_state import (
    CountChange,
    Counts,
    ItemKey,
    ItemState,
    ItemStatus,
    MapState,
    MemoryMapStore,
)
from resumable.serverless.transitions._item import (
    ItemVerdict,
    claim_item,
    dead_letter_item,
    finish_item,
    max_item_claims,
    redrive_item,
    renew_item,
)

NOW = 1000.0


@pytest.fixture(params=["memory", pytest.param("firestore", marks=pytest.mark.emulators)])
def maps(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryMapStore()
        return
    request.getfixturevalue("local_cloud")
    from resumable.serverless._firestore import make_firestore_client
    from resumable.serverless._map_firestore import FirestoreMapStore

    client = make_firestore_client()
    yield FirestoreMapStore(client, f"runs-{uuid.uuid4().hex[:8]}")
    client.close()


def a_map(total: int = 5) -> MapState:
    return MapState(step="m", total=total, pages=["p0"], shards=3, generation=0)


def test_a_map_document_is_created_once_and_changed_only_at_its_version(maps: Any) -> None:
    assert maps.get_map("run", "m1") is None
    assert maps.create_map("run", "m1", a_map())
    assert not maps.create_map("run", "m1", a_map(total=9))  # the first one stays
    state, version = maps.get_map("run", "m1")
    assert state.total == 5
    assert maps.update_map("run", "m1", state.model_copy(update={"dispatched": 3}), version)
    assert not maps.update_map("run", "m1", state.model_copy(update={"dispatched": 4}), version)
    assert maps.get_map("run", "m1")[0].dispatched == 3


def test_items_are_written_by_compare_and_set_with_their_counter(maps: Any) -> None:
    maps.create_map("run", "m1", a_map())
    running = ItemState(status=ItemStatus.RUNNING, attempt=1, lease_owner="w")
    assert maps.put_item(ItemKey("run", "m1", 4), running, None)
    assert not maps.put_item(ItemKey("run", "m1", 4), running, None)  # exists already
    item, version = maps.get_item(ItemKey("run", "m1", 4))
    done = item.model_copy(update={"status": ItemStatus.COMPLETED, "result": '{"v": 1}'})
    assert maps.put_item(ItemKey("run", "m1", 4), done, version, CountChange(completed=1))
    # A stale writer's version no longer matches: nothing written, the counter unchanged.
    stale = item.model_copy(update={"status": ItemStatus.FAILED})
    assert not maps.put_item(ItemKey("run", "m1", 4), stale, version, CountChange(failed=1))
    for index in (0, 2):
        failed = ItemState(status=ItemStatus.FAILED, error=f"broken {index}")
        assert maps.put_item(ItemKey("run", "m1", index), failed, None, CountChange(failed=1))
    assert maps.counts("run", "m1", 3) == Counts(completed=1, failed=2)
    assert [i for i, _ in maps.items("run", "m1")] == [0, 2, 4]  # item order
    assert [(i, s.error) for i, s in maps.failed_items("run", "m1", 10)] == [
        (0, "broken 0"),
        (2, "broken 2"),
    ]
    assert len(maps.failed_items("run", "m1", 1)) == 1
    assert maps.count_status("run", "m1", ItemStatus.COMPLETED) == 1
    assert maps.count_status("run", "m1", ItemStatus.RUNNING) == 0


def test_counts_of_a_map_without_finished_items_are_zero(maps: Any) -> None:
    maps.create_map("run", "empty", a_map())
    assert maps.counts("run", "empty", 3) == Counts(0, 0)


def test_a_join_marker_is_created_once(maps: Any) -> None:
    assert maps.create_marker("run", "m1", "g0")
    assert not maps.create_marker("run", "m1", "g0")
    assert maps.create_marker("run", "m1", "g1")


def test_deleting_a_runs_maps_deletes_their_items_and_counters(maps: Any) -> None:
    maps.create_map("run", "m1", a_map())
    maps.create_map("other", "m1", a_map())
    item = ItemState(status=ItemStatus.COMPLETED)
    maps.put_item(ItemKey("run", "m1", 1), item, None, CountChange(completed=1))
    maps.put_item(ItemKey("other", "m1", 1), item, None, CountChange(completed=1))
    assert maps.delete_maps("run") >= 1
    assert maps.get_map("run", "m1") is None and list(maps.items("run", "m1")) == []
    assert maps.counts("run", "m1", 3) == Counts(0, 0)
    assert maps.get_map("other", "m1") is not None  # another run's map stays
    assert maps.counts("other", "m1", 3) == Counts(1, 0)


def test_a_map_document_over_1_mib_is_refused() -> None:
    from resumable.errors import RunDocumentError

    huge = a_map().model_copy(update={"pages": ["x" * 1000] * 1200})
    with pytest.raises(RunDocumentError, match="1 MiB"):
        MemoryMapStore().create_map("run", "m1", huge)


# -- the item transitions ---------------------------------------------------------------------


def claim(item: ItemState | None, owner: str = "w", retries: int = 1) -> Any:
    return claim_item(item, owner=owner, now=NOW, lease_seconds=10.0, generation=0, retries=retries)


def test_claims_create_take_over_expired_leases_and_give_up_past_the_limit() -> None:
    first = claim(None)
    assert first.verdict is ItemVerdict.CLAIMED and first.attempt == 1
    assert first.item.started_at == NOW and first.item.lease_expires == NOW + 10
    live = first.item
    assert claim(live, owner="other").verdict is ItemVerdict.BUSY
    expired = live.model_copy(update={"lease_expires": NOW - 1})
    taken = claim(expired, owner="other")
    assert taken.verdict is ItemVerdict.CLAIMED and taken.attempt == 2
    queued = ItemState(status=ItemStatus.QUEUED, attempt=2, failures=1)
    assert claim(queued).verdict is ItemVerdict.CLAIMED
    worn = ItemState(status=ItemStatus.QUEUED, attempt=max_item_claims(1), error="E")
    gave_up = claim(worn)
    assert gave_up.verdict is ItemVerdict.GAVE_UP and gave_up.item.status == ItemStatus.FAILED
    assert gave_up.change == CountChange(failed=1) and "gave up after" in gave_up.item.error
    for status in (ItemStatus.COMPLETED, ItemStatus.FAILED):
        assert claim(ItemState(status=status)).verdict is ItemVerdict.DONE


def test_renewals_and_finishes_need_the_owner_of_the_attempt() -> None:
    item = claim(None).item
    renewed = renew_item(item, owner="w", attempt=1, now=NOW + 5, lease_seconds=10.0)
    assert renewed.verdict is ItemVerdict.OWNED and renewed.item.lease_expires == NOW + 15
    for owner, attempt in (("other", 1), ("w", 2)):
        assert renew_item(item, owner=owner, attempt=attempt, now=NOW, lease_seconds=1).verdict is (
            ItemVerdict.STALE
        )
        assert finish_item(item, owner=owner, attempt=attempt, now=NOW).verdict is (
            ItemVerdict.STALE
        )
    assert renew_item(None, owner="w", attempt=1, now=NOW, lease_seconds=1).verdict is (
        ItemVerdict.STALE
    )
    done = finish_item(item, owner="w", attempt=1, now=NOW, result="r")
    assert done.verdict is ItemVerdict.COMPLETED and done.change == CountChange(completed=1)
    retry = finish_item(item, owner="w", attempt=1, now=NOW, error="E", retryable=True, retries=1)
    assert retry.verdict is ItemVerdict.RETRY and retry.change is None
    assert retry.item.status == ItemStatus.QUEUED and retry.item.failures == 1
    failed = finish_item(
        retry.item.model_copy(update={"status": ItemStatus.RUNNING, "lease_owner": "w"}),
        owner="w", attempt=1, now=NOW, error="E2", retryable=True, retries=1,
    )  # fmt: skip
    assert failed.verdict is ItemVerdict.FAILED and failed.change == CountChange(failed=1)


def test_a_redrive_requeues_failed_items_of_an_earlier_generation_only() -> None:
    failed = ItemState(status=ItemStatus.FAILED, attempt=3, failures=2, generation=0)
    redriven = redrive_item(failed, generation=1)
    assert redriven.verdict is ItemVerdict.RETRY and redriven.change == CountChange(failed=-1)
    assert (redriven.item.status, redriven.item.failures, redriven.item.base) == ("queued", 0, 3)
    assert redrive_item(redriven.item, generation=1).verdict is ItemVerdict.UNCHANGED
    same = ItemState(status=ItemStatus.FAILED, generation=1)
    assert redrive_item(same, generation=1).verdict is ItemVerdict.UNCHANGED


def test_a_dead_letter_fails_an_unfinished_item_unless_it_still_runs() -> None:
    new = dead_letter_item(None, now=NOW, generation=0, deliveries="5")
    assert new.verdict is ItemVerdict.FAILED and "after 5 delivery attempts" in new.item.error
    queued = ItemState(status=ItemStatus.QUEUED, error="earlier")
    failed = dead_letter_item(queued, now=NOW, generation=0, deliveries=None)
    assert failed.verdict is ItemVerdict.FAILED and failed.item.error.startswith("earlier; ")
    live = ItemState(status=ItemStatus.RUNNING, lease_expires=NOW + 5)
    assert dead_letter_item(live, now=NOW, generation=0, deliveries="5").verdict is (
        ItemVerdict.UNCHANGED
    )
    done = ItemState(status=ItemStatus.COMPLETED)
    assert dead_letter_item(done, now=NOW, generation=0, deliveries="5").verdict is (
        ItemVerdict.UNCHANGED
    )
