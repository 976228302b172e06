"""The state of a serverless map step, kept out of the run document.

A map step's items are tracked in documents of their own, so that the run document stays
small (one entry per step, however many items) and takes O(1) writes per map step:

- the **map document** (one per map step and input): how many items, where their list
  is stored, how far the dispatcher got, the generation it serves;
- an **item document** per item, created by the first worker that claims the item: its
  status, lease, attempt and failure counts, and its result (an encoded entry) or error;
- **count shards**: completed and failed counters, incremented in the same atomic batch
  that finishes an item (``S`` shards, so that no counter takes more than its share of
  the writes);
- **join markers**: create-only documents; the worker that finishes the last item (as its
  counts say) creates one before it asks for the join, so that of several workers seeing
  the same final counts, one asks.

On Firestore these are sub-collections of the run document (``maps/{map}``,
``maps/{map}/items/{index}``, ``.../counts/{shard}``, ``.../joins/{marker}``), which do not
count against its size. :class:`MemoryMapStore` keeps them in dicts with the same
semantics (unit tests, the simulation).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from resumable.errors import RunDocumentError

ITEMS_PER_PAGE = 1000  # items per stored page of the item list


class ItemStatus(StrEnum):
    """The status of one item (a string in its document)."""

    QUEUED = "queued"  # to run again (a retryable failure, a redrive): its message comes
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class MapState(BaseModel):
    """The map document."""

    model_config = ConfigDict(extra="allow")

    step: str
    total: int
    pages: list[str]  # the stored pages of the item list, ITEMS_PER_PAGE items each
    shards: int
    generation: int  # the run generation the map serves (redrive: the driver moves it on)
    dispatched: int = 0  # items whose message is published, in item order
    redriven: int = 0  # the generation whose unfinished items were published again
    created_at: float = 0.0


class ItemState(BaseModel):
    """An item document."""

    model_config = ConfigDict(extra="allow")

    status: str = ItemStatus.RUNNING
    generation: int = 0  # the run generation of the claim (a redrive claims a failed item)
    attempt: int = 0  # +1 at every claim: the fencing token of the item's workers
    base: int = 0  # the attempt when it was last redriven (its claim limit counts from it)
    failures: int = 0  # calls that raised, since the item was last redriven
    lease_owner: str | None = None
    lease_expires: float | None = None
    result: str | None = None  # the result, an encoded entry as JSON
    error: str | None = None
    started_at: float | None = None  # of the latest claim
    finished_at: float | None = None


@dataclass(frozen=True)
class Counts:
    """Items finished so far (summed over the shards)."""

    completed: int = 0
    failed: int = 0

    @property
    def finished(self) -> int:
        return self.completed + self.failed


@dataclass(frozen=True)
class CountChange:
    """What finishing (or redriving) one item does to the counters, and to which shard of
    them (the writer picks it: :func:`shard_of` the item's index)."""

    completed: int = 0
    failed: int = 0
    shard: int = 0


@dataclass(frozen=True)
class ItemKey:
    """Where an item document is: its run document's id, its map, its index."""

    run: str
    map_id: str
    index: int


class MapStore(Protocol):
    """Map, item, counter and marker documents of map steps (see the module docstring).

    ``run`` is the run document's id; ``version`` values are opaque.
    """

    def get_map(self, run: str, map_id: str) -> tuple[MapState, Any] | None: ...

    def create_map(self, run: str, map_id: str, state: MapState) -> bool:
        """Create the map document; ``False`` if it exists (nothing written)."""
        ...

    def update_map(self, run: str, map_id: str, state: MapState, version: Any) -> bool:
        """Write ``state`` if the document is still at ``version``."""
        ...

    def get_item(self, key: ItemKey) -> tuple[ItemState, Any] | None: ...

    def put_item(
        self, key: ItemKey, item: ItemState, version: Any, change: CountChange | None = None
    ) -> bool:
        """Atomically: write the item document if it is still at ``version`` (``None``:
        only if it does not exist) and apply ``change`` to its counter shard.
        ``False`` (nothing written) if the item document changed."""
        ...

    def counts(self, run: str, map_id: str, shards: int) -> Counts: ...

    def items(self, run: str, map_id: str) -> Iterator[tuple[int, ItemState]]:
        """Every item document, in item order (page by page)."""
        ...

    def failed_items(self, run: str, map_id: str, limit: int) -> list[tuple[int, ItemState]]:
        """Up to ``limit`` failed items, in item order (for ``status``)."""
        ...

    def count_status(self, run: str, map_id: str, status: str) -> int:
        """How many items have ``status`` (for ``status``: those running)."""
        ...

    def create_marker(self, run: str, map_id: str, marker: str) -> bool:
        """Create the marker; ``False`` if it exists."""
        ...

    def delete_maps(self, run: str) -> int:
        """Delete every map document of run ``run`` and what is under them."""
        ...


def shard_of(index: int, shards: int) -> int:
    return index % max(1, shards)


IoHook = Callable[[str, str], None]


def _item_name(key: ItemKey) -> str:
    return f"{key.run}/maps/{key.map_id}/items/{key.index}"


class MemoryMapStore:
    """A :class:`MapStore` in dicts, with Firestore's semantics where the protocol depends
    on them (versions, create-only writes, atomic item-plus-counter batches, the 1 MiB
    document limit). ``on_io(operation, name)`` runs before every call, without a lock
    held (the simulation yields and injects faults there)."""

    def __init__(self, *, on_io: IoHook | None = None) -> None:
        self._maps: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}
        self._items: dict[ItemKey, tuple[dict[str, Any], int]] = {}
        self._counts: dict[tuple[str, str, int], list[int]] = {}
        self._markers: set[tuple[str, str, str]] = set()
        self._versions = 0
        self._lock = threading.Lock()
        self.on_io = on_io
        self.writes = 0

    def _io(self, operation: str, name: str) -> None:
        if self.on_io is not None:
            self.on_io(operation, name)

    def _next(self) -> int:
        self._versions += 1
        self.writes += 1
        return self._versions

    def get_map(self, run: str, map_id: str) -> tuple[MapState, Any] | None:
        self._io("read", f"{run}/maps/{map_id}")
        with self._lock:
            stored = self._maps.get((run, map_id))
        return None if stored is None else (MapState.model_validate(stored[0]), stored[1])

    def create_map(self, run: str, map_id: str, state: MapState) -> bool:
        self._io("create", f"{run}/maps/{map_id}")
        document = _checked(state)
        with self._lock:
            if (run, map_id) in self._maps:
                return False
            self._maps[(run, map_id)] = (document, self._next())
            return True

    def update_map(self, run: str, map_id: str, state: MapState, version: Any) -> bool:
        self._io("write", f"{run}/maps/{map_id}")
        document = _checked(state)
        with self._lock:
            stored = self._maps.get((run, map_id))
            if stored is None or stored[1] != version:
                return False
            self._maps[(run, map_id)] = (document, self._next())
            return True

    def get_item(self, key: ItemKey) -> tuple[ItemState, Any] | None:
        self._io("read", _item_name(key))
        with self._lock:
            stored = self._items.get(key)
        return None if stored is None else (ItemState.model_validate(stored[0]), stored[1])

    def put_item(
        self, key: ItemKey, item: ItemState, version: Any, change: CountChange | None = None
    ) -> bool:
        self._io("write", _item_name(key))
        document = _checked(item)
        with self._lock:
            stored = self._items.get(key)
            current = None if stored is None else stored[1]
            if current != version:
                return False
            self._items[key] = (document, self._next())
            if change is not None:
                shard = (key.run, key.map_id, change.shard)
                counter = self._counts.setdefault(shard, [0, 0])
                counter[0] += change.completed
                counter[1] += change.failed
            return True

    def counts(self, run: str, map_id: str, shards: int) -> Counts:
        self._io("read", f"{run}/maps/{map_id}/counts")
        with self._lock:
            rows = [self._counts.get((run, map_id, s), [0, 0]) for s in range(max(1, shards))]
        return Counts(sum(r[0] for r in rows), sum(r[1] for r in rows))

    def items(self, run: str, map_id: str) -> Iterator[tuple[int, ItemState]]:
        self._io("query", f"{run}/maps/{map_id}/items")
        with self._lock:
            found = sorted(
                (key.index, document)
                for key, (document, _v) in self._items.items()
                if key.run == run and key.map_id == map_id
            )
        for index, document in found:
            yield index, ItemState.model_validate(document)

    def failed_items(self, run: str, map_id: str, limit: int) -> list[tuple[int, ItemState]]:
        failed = [(i, s) for i, s in self.items(run, map_id) if s.status == ItemStatus.FAILED]
        return failed[:limit]

    def count_status(self, run: str, map_id: str, status: str) -> int:
        return sum(1 for _i, s in self.items(run, map_id) if s.status == status)

    def create_marker(self, run: str, map_id: str, marker: str) -> bool:
        self._io("create", f"{run}/maps/{map_id}/joins/{marker}")
        with self._lock:
            if (run, map_id, marker) in self._markers:
                return False
            self._markers.add((run, map_id, marker))
            self.writes += 1
            return True

    def delete_maps(self, run: str) -> int:
        self._io("delete", f"{run}/maps")
        with self._lock:
            maps = [k for k in self._maps if k[0] == run]
            for key in maps:
                del self._maps[key]
            for item in [k for k in self._items if k.run == run]:
                del self._items[item]
            for shard in [k for k in self._counts if k[0] == run]:
                del self._counts[shard]
            self._markers = {m for m in self._markers if m[0] != run}
        return len(maps)


def _checked(model: BaseModel) -> dict[str, Any]:
    import orjson

    document = model.model_dump()
    size = len(orjson.dumps(document))
    if size > 1024 * 1024:
        raise RunDocumentError(f"a map document would be {size} bytes, over the 1 MiB limit")
    return document
