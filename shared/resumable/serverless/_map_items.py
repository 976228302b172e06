"""A map item's delivery (a step message with ``item`` and ``map_id`` set).

:class:`ItemAttempt` claims the item document (its lease, renewed by a heartbeat on the
item document, never on the run document), calls the function with the item and the
step's read-only input context, stores the result as an encoded entry (content-addressed
like any context value) and finishes the item and its counter shard in one atomic write;
the worker that sees the last item finish asks for the join (``_map``). Every item write
is a compare-and-set (:func:`update_item`) of a pure transition (``transitions._item``).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from resumable._log import logger
from resumable.definition._map import CONTINUE_IN_ITEM
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
from resumable.serverless._lease import Heartbeat
from resumable.serverless._map_state import (
    ITEMS_PER_PAGE,
    ItemKey,
    ItemState,
    MapState,
    shard_of,
)
from resumable.serverless._messages import StepMessage
from resumable.serverless._run_files import RunFiles
from resumable.serverless._run_state import RunState
from resumable.serverless.transitions._item import (
    ItemDecision,
    ItemVerdict,
    claim_item,
    dead_letter_item,
    finish_item,
    renew_item,
)
from resumable.status import StepStatus

_CAS_TRIES = 20


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
    key = ItemKey(run, map_id, index)
    for _ in range(_CAS_TRIES):
        got = engine.maps.get_item(key)
        item, version = got if got is not None else (None, None)
        decision = transition(item)
        if decision.item is None:
            return decision
        change = decision.change
        if change is not None:
            change = replace(change, shard=shard_of(index, shards))
        if engine.maps.put_item(key, decision.item, version, change):
            return decision
    raise ContentionError(f"item {index} of map {map_id} kept changing ({_CAS_TRIES} tries)")


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
        self.deadline = float("inf")
        self.lease: ItemLease | None = None

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
        with ItemLease(self, map_id, index, current.shards) as lease:
            self.lease = lease
            finished = self._run(map_id, index, current)
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
        if self.lease is not None and self.lease.lost:
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
        if self.lease is not None:
            return self.lease.should_stop()
        return self.engine.runtime.now() >= self.deadline

    def time_left(self) -> float:
        return max(0.0, self.deadline - self.engine.runtime.now())

    def _fields(self, **extra: Any) -> dict[str, Any]:
        return log_fields(self.state, step=self.step.name, attempt=self.attempt, **extra)


class ItemLease(Heartbeat):
    """An item attempt's heartbeat: renews the item's lease on its item document (never
    on the run document) and notices a cancel or a resume of the run (a read)."""

    def __init__(self, attempt: ItemAttempt, map_id: str, index: int, shards: int) -> None:
        super().__init__(
            attempt.engine,
            f"{attempt.step.name}-{index}",
            deadline=attempt.deadline,
            log_fields=attempt._fields(item=index),
        )
        self.attempt = attempt
        self.map_id = map_id
        self.index = index
        self.shards = shards

    def __enter__(self) -> ItemLease:
        super().__enter__()
        return self

    def renew(self) -> tuple[bool, bool]:
        engine, attempt = self.engine, self.attempt
        decision = update_item(
            engine,
            attempt.doc_id,
            self.map_id,
            self.index,
            self.shards,
            lambda i: renew_item(
                i,
                owner=attempt.owner,
                attempt=attempt.attempt,
                now=engine.runtime.now(),
                lease_seconds=engine.settings.lease_seconds,
            ),
        )
        run = engine.runs.get(attempt.doc_id)
        stop = self.cancelled or run is None or run.finished or run.cancel_requested
        return decision.verdict is ItemVerdict.OWNED, stop


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


def item_at(files: RunFiles, current: MapState, index: int) -> Any:
    """Item ``index`` of the map, ``None`` if its pages are gone (a cleaned-up run)."""
    page = current.pages[index // ITEMS_PER_PAGE]
    try:
        items = _PAGES.get(page, lambda: files.read_items_page(page))
    except Exception:
        return None
    return items[index % ITEMS_PER_PAGE]
