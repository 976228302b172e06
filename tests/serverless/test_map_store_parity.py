"""The map steps' document store, in memory and on the Firestore emulator through the
official client, held to the same create-once and compare-and-set answers: a map, an
item and a join marker are created once; a write at a stale version changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from resumable.serverless._firestore import make_firestore_client
from resumable.serverless._map_firestore import FirestoreMapStore
from resumable.serverless._map_state import ItemKey, ItemState, MapState, MemoryMapStore

RUN = "default~p~r-1"


@pytest.fixture(params=["memory", pytest.param("firestore", marks=pytest.mark.emulators)])
def store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryMapStore()
    request.getfixturevalue("local_cloud")
    return FirestoreMapStore(
        make_firestore_client("resumable-maps"), f"runs_{uuid.uuid4().hex[:8]}"
    )


def _map(total: int) -> MapState:
    return MapState(step="objects", total=total, pages=[], shards=1, generation=0)


def test_a_map_is_created_once_and_changed_only_at_its_current_version(store: Any) -> None:
    assert store.create_map(RUN, "m-1", _map(10))
    assert not store.create_map(RUN, "m-1", _map(99))
    state, version = store.get_map(RUN, "m-1")
    assert state.total == 10
    moved = state.model_copy(update={"dispatched": 5})
    assert store.update_map(RUN, "m-1", moved, version)
    stale = state.model_copy(update={"dispatched": 7})
    assert not store.update_map(RUN, "m-1", stale, version)  # another writer came first
    assert store.get_map(RUN, "m-1")[0].dispatched == 5
    assert store.get_map(RUN, "absent") is None


def test_an_item_is_created_once_and_a_stale_write_changes_nothing(store: Any) -> None:
    store.create_map(RUN, "m-1", _map(3))
    assert store.put_item(ItemKey(RUN, "m-1", 2), ItemState(attempt=1), None)
    assert not store.put_item(ItemKey(RUN, "m-1", 2), ItemState(attempt=9), None)
    item, version = store.get_item(ItemKey(RUN, "m-1", 2))
    assert item.attempt == 1
    assert store.put_item(ItemKey(RUN, "m-1", 2), ItemState(attempt=2), version)
    assert not store.put_item(ItemKey(RUN, "m-1", 2), ItemState(attempt=3), version)
    assert store.get_item(ItemKey(RUN, "m-1", 2))[0].attempt == 2


def test_the_join_marker_is_created_once(store: Any) -> None:
    store.create_map(RUN, "m-1", _map(1))
    assert store.create_marker(RUN, "m-1", "join-0")
    assert not store.create_marker(RUN, "m-1", "join-0")
    assert store.create_marker(RUN, "m-1", "join-1")
