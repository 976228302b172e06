"""Map steps, serverless: one message per item, item state in documents of its own.

This module is the map step's own delivery, the **driver** (inside the usual step attempt,
under the run document's lease — see ``_worker``); ``_map_items`` is an item's delivery,
``_map_status`` what ``status`` and the UI show, ``_map_state`` the documents.

1. **list** the items once (the context key's list or the objects under the prefix) and
   record them: pages of items in Cloud Storage, and a map document naming them. The map
   is named after the step's definition and input, so a resumed run finds its map again
   and a changed input (``resume --from-step`` upstream) starts a new one;
2. **redrive** (a resumed run): failed items are queued afresh, and every unfinished item's
   message is published again with the run's new generation;
3. **dispatch**: item messages in batches, in item order, the map document's cursor moved
   on after each batch (a crashed dispatcher resumes from the cursor; an item published
   twice runs once: its claim decides);
4. **wait**: while items are unfinished the step goes back to ``queued`` without a
   message (no attempt counted); the worker that finishes the last item publishes the
   step's message again — of several seeing the final counts, the one that creates the
   generation's join marker — and the watchdog re-publishes a step queued too long, a
   safety net;
5. **join**: every item finished: more failures than tolerated fail the step (listing
   them; ``resume`` redrives only those), else the results in item order become the
   step's output, committed as any step's output is (once: the run document decides).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from resumable._log import logger
from resumable.checkpoint._segments import Entry
from resumable.definition._map import list_items, map_output
from resumable.definition._spec import PipelineSpec, StepSpec
from resumable.errors import ContentionError
from resumable.serverless._engine import Engine, log_fields
from resumable.serverless._map_items import update_item
from resumable.serverless._map_state import ITEMS_PER_PAGE, ItemStatus, MapState
from resumable.serverless._run_files import RunFiles
from resumable.serverless._run_state import RunState, StepState
from resumable.serverless.transitions._item import ItemDecision, ItemVerdict, redrive_item

# Item messages published per move of the dispatch cursor: the map document takes one
# write per batch, well under Firestore's sustained one write per second per document.
DISPATCH_BATCH = 5000
MAX_SHARDS = 1000
GATHER_LIMIT = 100_000  # items whose results a join can gather within one delivery
_CAS_TRIES = 20


def map_id_of(spec: PipelineSpec, step: str, before: Mapping[str, Entry], record: StepState) -> str:
    """The map's name: the step's definition and input, and how many times the step
    committed and was rolled back before — a resumed run whose map step failed finds its
    map again (and redrives it); ``resume --from-step`` or a changed input starts a new
    one, whose items all run."""
    rounds = f"{spec.step_fingerprints[step]}:{record.commits}:{record.rollbacks}"
    digest = hashlib.sha256(rounds.encode())
    digest.update(orjson.dumps(dict(before), option=orjson.OPT_SORT_KEYS))
    return f"{step[:40]}-{digest.hexdigest()[:24]}"


def shards_for(step: StepSpec) -> int:
    """Counter shards: one per item running at once (bounded), so that a shard takes one
    write per item duration at most — under a write per second for items of a second or
    more."""
    return max(1, min(MAX_SHARDS, step.concurrency or 1))


@dataclass(frozen=True)
class Waiting:
    """The driver's answer while items are unfinished (or still to dispatch)."""

    map_id: str
    total: int
    completed: int
    failed: int
    dispatching: bool = False  # the deadline came before every item was dispatched


# -- the driver ------------------------------------------------------------------------------


class MapDriver:
    """The map step's own delivery: list, redrive, dispatch, then wait or join."""

    def __init__(
        self,
        engine: Engine,
        state: RunState,
        spec: PipelineSpec,
        step: StepSpec,
        files: RunFiles,
        before: Mapping[str, Entry],
        context: Mapping[str, Any],
        time_left: Callable[[], float],
        doc_id: str,
    ) -> None:
        assert step.map is not None
        self.engine = engine
        self.state = state
        self.spec = spec
        self.step = step
        self.files = files
        self.context = context
        self.time_left = time_left
        self.doc_id = doc_id
        self.map_id = map_id_of(spec, step.name, before, state.steps[step.name])
        self.generation = state.generation

    def drive(self) -> dict[str, Any] | Waiting:
        current, version = self._map()
        if current.redriven < self.generation:
            current, version = self._redrive(current, version)
        while current.dispatched < current.total:
            if self.time_left() <= 0:
                counts = self.engine.maps.counts(self.doc_id, self.map_id, current.shards)
                return Waiting(self.map_id, current.total, counts.completed, counts.failed, True)
            current, version = self._dispatch(current, version)
        counts = self.engine.maps.counts(self.doc_id, self.map_id, current.shards)
        if counts.finished < current.total:
            return Waiting(self.map_id, current.total, counts.completed, counts.failed)
        return self._join(current)

    def _map(self) -> tuple[MapState, Any]:
        """The map document, created (with the item pages) by the first driver."""
        maps = self.engine.maps
        got = maps.get_map(self.doc_id, self.map_id)
        if got is not None:
            return got
        assert self.step.map is not None
        items = list_items(self.step.map, self.step.name, self.context)
        pages = [
            self.files.write_items_page(
                self.step.name, self.map_id, n, items[start : start + ITEMS_PER_PAGE]
            )
            for n, start in enumerate(range(0, len(items), ITEMS_PER_PAGE))
        ]
        logger.info(f"map step {self.step.name}: {len(items)} items", extra=log_fields(self.state))
        maps.create_map(
            self.doc_id,
            self.map_id,
            MapState(
                step=self.step.name,
                total=len(items),
                pages=pages,
                shards=shards_for(self.step),
                generation=self.generation,
                redriven=self.generation,
                created_at=self.engine.runtime.now(),
            ),
        )  # a concurrent driver's map may have won: the stored one counts
        got = maps.get_map(self.doc_id, self.map_id)
        if got is None:
            raise ContentionError(f"map {self.map_id} vanished after it was created")
        return got

    def _redrive(self, current: MapState, version: Any) -> tuple[MapState, Any]:
        """The run was resumed: failed items queued afresh, and every unfinished item
        published again under the run's new generation."""
        again: list[int] = []
        seen: set[int] = set()
        for index, item in self.engine.maps.items(self.doc_id, self.map_id):
            seen.add(index)
            if item.status == ItemStatus.COMPLETED:
                continue
            if item.status == ItemStatus.FAILED:
                update_item(
                    self.engine,
                    self.doc_id,
                    self.map_id,
                    index,
                    current.shards,
                    lambda i: (
                        redrive_item(i, generation=self.generation)
                        if i is not None
                        else ItemDecision(ItemVerdict.UNCHANGED)
                    ),
                )
            again.append(index)
        # Dispatched items never claimed have no document: their messages went stale.
        again += [i for i in range(current.dispatched) if i not in seen]
        again.sort()
        for start in range(0, len(again), DISPATCH_BATCH):
            self.engine.publish_items(
                self.state, self.step.name, self.map_id, again[start : start + DISPATCH_BATCH]
            )
        logger.info(
            f"map step {self.step.name}: {len(again)} unfinished items published again",
            extra=log_fields(self.state),
        )
        return self._move(current, version, redriven=self.generation)

    def _dispatch(self, current: MapState, version: Any) -> tuple[MapState, Any]:
        """Publish the next batch, then move the cursor past it."""
        start = current.dispatched
        end = min(current.total, start + DISPATCH_BATCH)
        self.engine.publish_items(self.state, self.step.name, self.map_id, range(start, end))
        return self._move(current, version, dispatched=end)

    def _move(self, current: MapState, version: Any, **changes: int) -> tuple[MapState, Any]:
        """Write ``changes`` to the map document unless another driver moved it further."""
        for _ in range(_CAS_TRIES):
            if all(getattr(current, k) >= v for k, v in changes.items()):
                return current, version
            new = current.model_copy(update=changes)
            if self.engine.maps.update_map(self.doc_id, self.map_id, new, version):
                got = self.engine.maps.get_map(self.doc_id, self.map_id)
                if got is not None:
                    return got
            got = self.engine.maps.get_map(self.doc_id, self.map_id)
            if got is None:
                raise ContentionError(f"map {self.map_id} vanished")
            current, version = got
        raise ContentionError(f"map {self.map_id} kept changing ({_CAS_TRIES} tries)")

    def _join(self, current: MapState) -> dict[str, Any]:
        """Every item finished: the step's output, or a failure listing the failed items.
        Counting maps read only the failed items; gathering ones read every result."""
        assert self.step.map is not None
        items: list[Any] = []
        for page in current.pages:
            items += self.files.read_items_page(page)
        maps = self.engine.maps
        if self.step.map.output == "count":
            counts = maps.counts(self.doc_id, self.map_id, current.shards)
            limit = min(self.step.map.tolerance(current.total), counts.failed) + 10
            failed = {
                index: item.error or "failed"
                for index, item in maps.failed_items(self.doc_id, self.map_id, limit)
            }
            done = dict.fromkeys(range(counts.completed))  # only their number counts
            return map_output(
                self.step.map, self.step.name, items, done, failed, failed_total=counts.failed
            )
        encoded: dict[int, str] = {}
        failed = {}
        for index, item in maps.items(self.doc_id, self.map_id):
            if item.status == ItemStatus.COMPLETED and item.result is not None:
                encoded[index] = item.result
            elif item.status == ItemStatus.FAILED:
                failed[index] = item.error or "failed"
        with ThreadPoolExecutor(16, thread_name_prefix="resumable-join") as pool:
            decoded = pool.map(
                lambda pair: (pair[0], self.files.decode_result(pair[1], f"item {pair[0]}")),
                encoded.items(),
            )
            results = dict(decoded)
        return map_output(self.step.map, self.step.name, items, results, failed)
