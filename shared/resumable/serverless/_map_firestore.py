"""Map steps' documents in Firestore, under the run document (see ``_map_state``).

``{runs}/{run}/maps/{map}`` holds the map document; under it
``resumable_map_items/{scatter}-{index}``, ``counts/{shard}`` and ``joins/{marker}``.
Sub-collections do not count against the run document's size, and each item's writes go
to its own document and one of the map's counter shards.

Firestore slows down writes to documents with lexicographically close ids, and to
indexed fields whose values grow in order (timestamps), past about 500 writes per
second: item ids start with a scattered hash of the index (item order is restored by
sorting), and the deployment turns off the single-field indexes of every item field no
query uses (:data:`UNINDEXED_ITEM_FIELDS`, on the :data:`ITEMS` collection group).
Versions are ``update_time`` values, as for run documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from resumable.errors import RunDocumentError
from resumable.serverless._map_state import (
    CountChange,
    Counts,
    ItemKey,
    ItemState,
    MapState,
)

_CONFLICTS: tuple[type[Exception], ...] = ()


def _conflicts() -> tuple[type[Exception], ...]:
    """What a write refused by its precondition raises."""
    global _CONFLICTS
    if not _CONFLICTS:
        from google.api_core import exceptions

        _CONFLICTS = (
            exceptions.AlreadyExists,
            exceptions.FailedPrecondition,
            exceptions.Aborted,
            exceptions.NotFound,
        )
    return _CONFLICTS


ITEMS = "resumable_map_items"
"""The collection group of item documents (a name no user collection is likely to have:
the deployment changes its indexes)."""

UNINDEXED_ITEM_FIELDS = (
    "result",
    "error",
    "lease_owner",
    "lease_expires",
    "started_at",
    "finished_at",
    "attempt",
    "base",
    "failures",
    "generation",
)
"""Item fields no query filters on: written at every claim, renewal and finish, they
would only cost index writes (and, for timestamps, make hotspots). ``status`` stays
indexed (``status`` and the UI count and list failed items)."""


def _item_id(index: int) -> str:
    scatter = (index * 2654435761) % 4294967296  # Knuth's multiplicative hash
    return f"{scatter:08x}-{index:010d}"


def _index_of(document_id: str) -> int:
    return int(document_id.rsplit("-", 1)[1])


class FirestoreMapStore:
    """A :class:`~resumable.serverless._map_state.MapStore` on Firestore."""

    def __init__(self, client: Any, collection: str) -> None:
        self.client = client
        self.runs = client.collection(collection)

    def _map(self, run: str, map_id: str) -> Any:
        return self.runs.document(run).collection("maps").document(map_id)

    def get_map(self, run: str, map_id: str) -> tuple[MapState, Any] | None:
        snapshot = self._map(run, map_id).get()
        if not snapshot.exists:
            return None
        return MapState.model_validate(snapshot.to_dict()), snapshot.update_time

    def create_map(self, run: str, map_id: str, state: MapState) -> bool:
        try:
            self._map(run, map_id).create(state.model_dump())
        except _conflicts():
            return False
        return True

    def update_map(self, run: str, map_id: str, state: MapState, version: Any) -> bool:
        option = self.client.write_option(last_update_time=version)
        try:
            self._map(run, map_id).update(state.model_dump(), option=option)
        except _conflicts():
            return False
        return True

    def get_item(self, key: ItemKey) -> tuple[ItemState, Any] | None:
        snapshot = (
            self._map(key.run, key.map_id).collection(ITEMS).document(_item_id(key.index)).get()
        )
        if not snapshot.exists:
            return None
        return ItemState.model_validate(snapshot.to_dict()), snapshot.update_time

    def put_item(
        self, key: ItemKey, item: ItemState, version: Any, change: CountChange | None = None
    ) -> bool:
        from google.api_core import exceptions
        from google.cloud import firestore

        parent = self._map(key.run, key.map_id)
        reference = parent.collection(ITEMS).document(_item_id(key.index))
        batch = self.client.batch()  # one commit: the item and its counter, or neither
        if version is None:
            batch.create(reference, item.model_dump())
        else:
            option = self.client.write_option(last_update_time=version)
            batch.update(reference, item.model_dump(), option=option)
        if change is not None and (change.completed or change.failed):
            shard = parent.collection("counts").document(str(change.shard))
            batch.set(
                shard,
                {
                    "completed": firestore.Increment(change.completed),
                    "failed": firestore.Increment(change.failed),
                },
                merge=True,
            )
        try:
            batch.commit()
        except _conflicts():
            return False
        except exceptions.InvalidArgument as exc:
            refused = f"Firestore refused item {key.index} of map {key.map_id}: {exc}"
            raise RunDocumentError(refused) from exc
        return True

    def counts(self, run: str, map_id: str, shards: int) -> Counts:
        # One aggregation over the shards: billed as one read, whatever their number.
        query = self._map(run, map_id).collection("counts").sum("completed", alias="completed")
        query.sum("failed", alias="failed")
        results = {r.alias: r.value for r in query.get()[0]}
        return Counts(int(results.get("completed") or 0), int(results.get("failed") or 0))

    def items(self, run: str, map_id: str) -> Iterator[tuple[int, ItemState]]:
        found = [
            (_index_of(s.id), ItemState.model_validate(s.to_dict()))
            for s in self._map(run, map_id).collection(ITEMS).stream()
        ]
        yield from sorted(found, key=lambda pair: pair[0])

    def failed_items(self, run: str, map_id: str, limit: int) -> list[tuple[int, ItemState]]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._map(run, map_id)
            .collection(ITEMS)
            .where(filter=FieldFilter("status", "==", "failed"))
            .limit(limit)
        )
        found = [(_index_of(s.id), ItemState.model_validate(s.to_dict())) for s in query.stream()]
        return sorted(found, key=lambda pair: pair[0])

    def count_status(self, run: str, map_id: str, status: str) -> int:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._map(run, map_id)
            .collection(ITEMS)
            .where(filter=FieldFilter("status", "==", status))
        )
        result = query.count().get()  # an aggregation: no item document is read
        return int(result[0][0].value)

    def create_marker(self, run: str, map_id: str, marker: str) -> bool:
        try:
            self._map(run, map_id).collection("joins").document(marker).create({})
        except _conflicts():
            return False
        return True

    def delete_maps(self, run: str) -> int:
        maps = self.runs.document(run).collection("maps")
        return int(self.client.recursive_delete(maps))
