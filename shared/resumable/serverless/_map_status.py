"""A map step's items as ``status``, ``watch`` and the UI show them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resumable.serverless._engine import Engine
from resumable.serverless._map_items import item_at
from resumable.serverless._map_state import ItemStatus
from resumable.serverless._run_state import RunState


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
            FailedItem(index, item_at(engine.files(state), current, index), item.error or "")
            for index, item in failed
        ]
        running = engine.maps.count_status(doc_id, record.map_id, ItemStatus.RUNNING)
        summaries[name] = ItemSummary(
            current.total, counts.completed, counts.failed, running, tuple(listed)
        )
    return summaries
