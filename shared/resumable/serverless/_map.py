"""Map steps, serverless: one message per item, item state in documents of its own.

The map step's own message drives the map (inside the usual step attempt, under the run
document's lease — see ``_worker``):

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

An item's message (``item`` and ``map_id`` set) runs :class:`ItemAttempt`: claim the item
document (its lease, renewed by a heartbeat on the item document, never on the run
document), call the function with the item and the step's read-only input context, store
the result as an encoded entry (content-addressed like any context value) and finish the
item and its counter shard in one atomic write.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from resumable._log import logger
from resumable.checkpoint._segments import Entry
from resumable.definition._map import CONTINUE_IN_ITEM, list_items, map_output
from resumable.definition._spec import PipelineSpec, StepSpec, delivery_seconds
from resumable.definition._step_api import Continue, step_kwargs
from resumable.errors import (
    BadMessageError,
    ContentionError,
    EncodingError,
    NonRetryableError,
    RunNotFoundError,
    is_retryable,
)
from resumable.serverless._engine import Engine, log_fields
from resumable.serverless._map_state import (
    ITEMS_PER_PAGE,
    ItemState,
    ItemStatus,
    MapState,
)
from resumable.serverless._messages import StepMessage
from resumable.serverless._run_files import RunFiles
from resumable.serverless._run_state import RunState, StepState
from resumable.serverless.transitions._item import (
    ItemDecision,
    ItemVerdict,
    claim_item,
    dead_letter_item,
    finish_item,
    redrive_item,
    renew_item,
)
from resumable.status import StepStatus

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


def update_item(
    engine: Engine,
    run: str,
    map_id: str,
    index: int,
    shards: int,
    transition: Callable[[ItemState | None], ItemDecision],
) -> ItemDecision:
    """Read the item, apply ``transition``, write the result if the item did not change
    meanwhile (with its counter change, atomically); on a conflict, again."""
    for _ in range(_CAS_TRIES):
        got = engine.maps.get_item(run, map_id, index)
        item, version = got if got is not None else (None, None)
        decision = transition(item)
        if decision.item is None:
            return decision
        if engine.maps.put_item(
            run, map_id, index, decision.item, version, shards=shards, change=decision.change
        ):
            return decision
    raise ContentionError(f"item {index} of map {map_id} kept changing ({_CAS_TRIES} tries)")


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


# -- an item's delivery ----------------------------------------------------------------------


class _Cache:
    """A few decoded values per function instance (input contexts, item pages), by a
    key that names immutable content."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = load()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value


_CONTEXTS = _Cache(2)  # a map's input context: read once per instance, not once per item
_PAGES = _Cache(8)


@dataclass(frozen=True)
class ItemOutcome:
    ack: bool
    reason: str


class ItemAttempt:
    """One delivery of an item's message."""

    def __init__(
        self, engine: Engine, spec: PipelineSpec, step: StepSpec, doc_id: str, state: RunState
    ) -> None:
        self.engine = engine
        self.spec = spec
        self.step = step
        self.doc_id = doc_id
        self.state = state
        self.owner = f"{engine.worker_id}-{uuid.uuid4().hex[:8]}"
        self.attempt = 0
        self.lost = False
        self.stopping = False
        self.deadline = float("inf")

    def execute(self, map_id: str, index: int) -> ItemOutcome:
        engine, state = self.engine, self.state
        record = state.steps[self.step.name]
        if record.status in (StepStatus.COMPLETED, StepStatus.ERROR, StepStatus.CANCELLED):
            return ItemOutcome(True, f"step is {record.status}")
        got = engine.maps.get_map(self.doc_id, map_id)
        if got is None:
            logger.error(f"item message for unknown map {map_id}: acked", extra=self._fields())
            return ItemOutcome(True, f"no map {map_id}")
        current = got[0]
        if index >= current.total:
            logger.error(f"item {index} of a map of {current.total}: acked", extra=self._fields())
            return ItemOutcome(True, f"no item {index}")
        now = engine.runtime.now()
        decision = update_item(
            engine,
            self.doc_id,
            map_id,
            index,
            current.shards,
            lambda i: claim_item(
                i,
                owner=self.owner,
                now=now,
                lease_seconds=engine.settings.lease_seconds,
                generation=state.generation,
                retries=self.step.retries,
            ),
        )
        if decision.verdict is ItemVerdict.BUSY:
            return ItemOutcome(False, decision.reason)
        if decision.verdict is not ItemVerdict.CLAIMED:
            request_join_if_done(engine, self.doc_id, state, self.step.name, map_id, current)
            return ItemOutcome(True, f"item {decision.verdict}: {decision.reason}")
        self.attempt = decision.attempt
        limit = delivery_seconds(self.step)
        self.deadline = now + limit - engine.settings.deadline_margin_seconds
        heartbeat = engine.runtime.every(
            engine.settings.heartbeat_seconds,
            lambda: self._beat(map_id, index, current.shards),
            f"heartbeat-{self.step.name}-{index}",
        )
        try:
            finished = self._run(map_id, index, current)
        finally:
            heartbeat.stop()
        if finished.verdict is ItemVerdict.RETRY:
            return ItemOutcome(False, f"item {index} raised; retry later")
        if finished.verdict in (ItemVerdict.COMPLETED, ItemVerdict.FAILED):
            request_join_if_done(engine, self.doc_id, state, self.step.name, map_id, current)
        return ItemOutcome(True, f"item {index} {finished.verdict}")

    def _run(self, map_id: str, index: int, current: MapState) -> ItemDecision:
        files = self.engine.files(self.state)
        page = current.pages[index // ITEMS_PER_PAGE]
        item = _PAGES.get(page, lambda: files.read_items_page(page))[index % ITEMS_PER_PAGE]
        context = _CONTEXTS.get((self.doc_id, map_id), lambda: self._input(files))
        kwargs = step_kwargs(self.step.function, self.should_stop, self.time_left)
        kwargs.pop("save_progress", None)  # an item's progress is its result
        result: str | None = None
        error: str | None = None
        retryable = False
        try:
            value = self.step.function(item, context, **kwargs)
            if isinstance(value, Continue):
                raise NonRetryableError(CONTINUE_IN_ITEM)
            result = files.encode_result(value)
        except (EncodingError, NonRetryableError) as exc:  # no retry can fix these
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            retryable = is_retryable(exc)
            logger.warning(
                f"item {index} of step {self.step.name} raised {error}",
                exc_info=exc,
                extra=self._fields(item=index),
            )
        if self.lost:
            logger.warning(f"item {index}: lease lost, result discarded", extra=self._fields())
            return ItemDecision(ItemVerdict.STALE)
        now = self.engine.runtime.now()
        return update_item(
            self.engine,
            self.doc_id,
            map_id,
            index,
            current.shards,
            lambda i: finish_item(
                i,
                owner=self.owner,
                attempt=self.attempt,
                now=now,
                result=result,
                error=error,
                retryable=retryable,
                retries=self.step.retries,
            ),
        )

    def _input(self, files: RunFiles) -> Mapping[str, Any]:
        entries = files.input_entries(self.state, self.spec, self.step.name)
        return MappingProxyType(files.decode(entries))

    def should_stop(self) -> bool:
        return self.lost or self.stopping or self.engine.runtime.now() >= self.deadline

    def time_left(self) -> float:
        return max(0.0, self.deadline - self.engine.runtime.now())

    def _beat(self, map_id: str, index: int, shards: int) -> bool:
        """Renew the item's lease; notice a cancel or a resume of the run (a read)."""
        engine = self.engine
        try:
            decision = update_item(
                engine,
                self.doc_id,
                map_id,
                index,
                shards,
                lambda i: renew_item(
                    i,
                    owner=self.owner,
                    attempt=self.attempt,
                    now=engine.runtime.now(),
                    lease_seconds=engine.settings.lease_seconds,
                ),
            )
            run = engine.runs.get(self.doc_id)
        except Exception:  # retried at the next beat
            logger.warning("item heartbeat failed; will retry", exc_info=True)
            return True
        if run is None or run.finished or run.cancel_requested:
            self.stopping = True
        if decision.verdict is not ItemVerdict.OWNED:
            self.lost = True
            return False
        return True

    def _fields(self, **extra: Any) -> dict[str, Any]:
        return log_fields(self.state, step=self.step.name, attempt=self.attempt, **extra)


def request_join_if_done(
    engine: Engine, doc_id: str, state: RunState, step: str, map_id: str, current: MapState
) -> bool:
    """If every item finished, ask for the join: the step's message, published by the
    one worker that creates this generation's join marker. Returns whether it asked."""
    counts = engine.maps.counts(doc_id, map_id, current.shards)
    if counts.finished < current.total:
        return False
    if not engine.maps.create_marker(doc_id, map_id, f"g{state.generation}"):
        return False
    engine.publish_steps(state, [step])
    logger.info(f"map step {step}: every item finished; join requested", extra=log_fields(state))
    return True


def handle_item(engine: Engine, spec: PipelineSpec, message: StepMessage) -> ItemOutcome:
    """One delivery of an item's message (``message.item`` set)."""
    step = spec.steps[message.step]
    if step.map is None or message.map_id is None or message.item is None:
        raise BadMessageError(
            f"an item message needs 'item' and 'map_id', for a map step ({message.step!r} "
            + ("is one)" if step.map is not None else "is not)")
        )
    doc_id = engine.doc_id(message.tenant_id, message.pipeline, message.run_id)
    state = engine.runs.get(doc_id)
    if state is None:
        raise RunNotFoundError(message.run_id)
    if message.generation is not None and message.generation != state.generation:
        return ItemOutcome(True, f"stale: generation {message.generation} of {state.generation}")
    if state.finished or state.cancel_requested:
        return ItemOutcome(True, f"run is {state.status}")
    return ItemAttempt(engine, spec, step, doc_id, state).execute(message.map_id, message.item)


def record_item_dead_letter(
    engine: Engine, spec: PipelineSpec, message: StepMessage, deliveries: str | None
) -> str:
    """An item's message exhausted its delivery attempts: the item failed (unless it
    finished or still runs), and the join is asked for if it was the last."""
    assert message.item is not None and message.map_id is not None
    doc_id = engine.doc_id(message.tenant_id, message.pipeline, message.run_id)
    state = engine.runs.get(doc_id)
    if state is None:
        return "no such run"
    if message.generation is not None and message.generation != state.generation:
        return "stale item message"
    got = engine.maps.get_map(doc_id, message.map_id)
    if got is None or message.item >= got[0].total:
        return f"no item {message.item} in map {message.map_id}"
    current = got[0]
    now = engine.runtime.now()
    decision = update_item(
        engine,
        doc_id,
        message.map_id,
        message.item,
        current.shards,
        lambda i: dead_letter_item(i, now=now, generation=state.generation, deliveries=deliveries),
    )
    if decision.verdict is ItemVerdict.FAILED and not state.finished:
        request_join_if_done(engine, doc_id, state, message.step, message.map_id, current)
    return f"item {message.item}: {decision.verdict} {decision.reason}".strip()


# -- what status shows -----------------------------------------------------------------------


@dataclass(frozen=True)
class FailedItem:
    index: int
    item: Any
    error: str


@dataclass(frozen=True)
class ItemSummary:
    """A map step's items as ``status``, ``watch`` and the UI show them."""

    total: int
    completed: int
    failed: int
    running: int
    failed_items: tuple[FailedItem, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "completed": self.completed,
            "failed": self.failed,
            "running": self.running,
            "failed_items": [
                {"index": f.index, "item": _jsonable(f.item), "error": f.error}
                for f in self.failed_items
            ],
        }


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


def item_summaries(
    engine: Engine, state: RunState, *, failed_limit: int = 10
) -> dict[str, ItemSummary]:
    """The item counts of every map step of the run that started its map: live from the
    item documents while they exist, else as the run document last recorded them."""
    summaries: dict[str, ItemSummary] = {}
    doc_id = engine.doc_id(state.tenant_id, state.pipeline, state.run_id)
    for name, record in state.steps.items():
        if not record.map_id:
            continue
        recorded = record.items or {}
        got = engine.maps.get_map(doc_id, record.map_id)
        if got is None:  # the run's map documents are gone (cleaned up): as recorded
            summaries[name] = ItemSummary(
                recorded.get("total", 0), recorded.get("completed", 0), recorded.get("failed", 0), 0
            )
            continue
        current = got[0]
        counts = engine.maps.counts(doc_id, record.map_id, current.shards)
        failed = engine.maps.failed_items(doc_id, record.map_id, failed_limit)
        listed = [
            FailedItem(index, _item_at(engine.files(state), current, index), item.error or "")
            for index, item in failed
        ]
        running = engine.maps.count_status(doc_id, record.map_id, ItemStatus.RUNNING)
        summaries[name] = ItemSummary(
            current.total, counts.completed, counts.failed, running, tuple(listed)
        )
    return summaries


def _item_at(files: RunFiles, current: MapState, index: int) -> Any:
    """Item ``index`` of the map, ``None`` if its pages are gone (a cleaned-up run)."""
    page = current.pages[index // ITEMS_PER_PAGE]
    try:
        items = _PAGES.get(page, lambda: files.read_items_page(page))
    except Exception:
        return None
    return items[index % ITEMS_PER_PAGE]
