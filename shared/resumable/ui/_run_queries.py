"""Pages of run documents for the runs page: newest first with a cursor, filtered by
status and pipeline, searched by run id, and counted per status.

Firestore answers with projected queries (a page of runs never reads the runs' step
records) and count aggregations run side by side; any other run store (unit tests) is
read whole and answered in memory, with the same answers.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from resumable._defaults import DEFAULT_TENANT
from resumable.serverless._engine import Engine
from resumable.serverless._run_state import document_id


def _firestore_collection(engine: Engine) -> Any:
    """The Firestore collection of run documents, or ``None`` for another store."""
    return getattr(engine.runs, "collection", None)


# What the runs page shows of a run document: read by projection, so that a page of runs
# costs neither the documents' other fields nor their validation.
SUMMARY_FIELDS = (
    "run_id",
    "pipeline",
    "tenant_id",
    "status",
    "created_at",
    "finished_at",
    "error",
    "cancel_requested",
    "step_counts",
)

RunSummary = dict[str, Any]
"""The :data:`SUMMARY_FIELDS` of a run document; ``step_counts`` holds the numbers of
``completed`` and ``total`` steps."""


def _summary(document: Mapping[str, Any]) -> RunSummary:
    return {name: document.get(name) for name in SUMMARY_FIELDS}


def _with_step_counts(engine: Engine, found: list[RunSummary]) -> list[RunSummary]:
    """Documents written before runs stored their ``step_counts``: counted from their
    ``steps``, read for those documents only."""
    older = [s for s in found if not isinstance(s.get("step_counts"), dict)]
    if not older:
        return found
    runs: Any = engine.runs  # a Firestore store: the caller found its collection
    by_id = {
        document_id(s["tenant_id"] or DEFAULT_TENANT, s["pipeline"], s["run_id"]): s for s in older
    }
    references = [runs.collection.document(doc_id) for doc_id in by_id]
    for snapshot in runs.client.get_all(references, field_paths=["steps"]):
        steps = (snapshot.to_dict() or {}).get("steps") or {}
        completed = sum(1 for r in steps.values() if (r or {}).get("status") == "completed")
        by_id[snapshot.id]["step_counts"] = {"completed": completed, "total": len(steps)}
    return found


def encode_cursor(summary: RunSummary) -> str:
    doc_id = document_id(summary["tenant_id"], summary["pipeline"], summary["run_id"])
    raw = json.dumps([summary["created_at"], doc_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str] | None:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, doc_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return float(created), str(doc_id)
    except (ValueError, TypeError):
        return None


SEARCH_SCAN = 200  # run documents read for a search with other filters, at most

# Shared by the queries of one page, which run side by side.
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ui-query")


def query_runs(
    engine: Engine,
    *,
    pipeline: str | None,
    status: str | None,
    search: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[RunSummary], str | None]:
    """One page of runs, newest first, and the cursor of the next page.

    A search matches run ids that start with ``search`` (ordered by run id, one page).
    On Firestore, a pipeline filter needs the composite indexes of
    ``resumable.firestore_state.COMPOSITE_INDEXES``.
    """
    collection = _firestore_collection(engine)
    if collection is None:
        return _query_in_memory(engine, _Wanted(pipeline, status, search, cursor, limit))
    from google.cloud.firestore_v1.base_query import BaseQuery, FieldFilter

    if search:
        query = (
            collection.select(SUMMARY_FIELDS)
            .where(filter=FieldFilter("run_id", ">=", search))
            .where(filter=FieldFilter("run_id", "<", search + "\uf8ff"))
            .order_by("run_id")
            .limit(SEARCH_SCAN if pipeline or status else limit)
        )
        found = [_summary(s.to_dict()) for s in query.stream()]
        matching = [s for s in found if _matches(s, pipeline, status)][:limit]
        return _with_step_counts(engine, matching), None
    query = collection.select(SUMMARY_FIELDS)
    if status:
        query = query.where(filter=FieldFilter("status", "==", status))
    if pipeline:
        query = query.where(filter=FieldFilter("pipeline", "==", pipeline))
    down = BaseQuery.DESCENDING
    query = query.order_by("created_at", direction=down).order_by("__name__", direction=down)
    after = decode_cursor(cursor) if cursor else None
    if after is not None:
        query = query.start_after(
            {"created_at": after[0], "__name__": collection.document(after[1])}
        )
    found = [_summary(s.to_dict()) for s in query.limit(limit + 1).stream()]
    page = _with_step_counts(engine, found[:limit])
    return page, encode_cursor(page[-1]) if len(found) > limit and page else None


def _matches(summary: RunSummary, pipeline: str | None, status: str | None) -> bool:
    return (not pipeline or summary["pipeline"] == pipeline) and (
        not status or summary["status"] == status
    )


def _all_in_memory(engine: Engine) -> list[RunSummary]:
    """Every run of a store other than Firestore (unit tests), newest first."""
    return [_summary(s.model_dump()) for s in engine.runs.query(limit=1_000_000)]


@dataclass(frozen=True)
class _Wanted:
    """What :func:`query_runs` was asked for."""

    pipeline: str | None
    status: str | None
    search: str | None
    cursor: str | None
    limit: int


def _query_in_memory(engine: Engine, wanted: _Wanted) -> tuple[list[RunSummary], str | None]:
    runs = [s for s in _all_in_memory(engine) if _matches(s, wanted.pipeline, wanted.status)]
    limit = wanted.limit
    if wanted.search:
        prefix = wanted.search
        found = sorted((s for s in runs if s["run_id"].startswith(prefix)), key=_run_id)
        return found[:limit], None
    after = decode_cursor(wanted.cursor) if wanted.cursor else None
    if after is not None:
        runs = [s for s in runs if _position(s) < after]
    return runs[:limit], encode_cursor(runs[limit - 1]) if len(runs) > limit else None


def _run_id(summary: RunSummary) -> str:
    return str(summary["run_id"])


def _position(summary: RunSummary) -> tuple[float, str]:
    doc_id = document_id(summary["tenant_id"], summary["pipeline"], summary["run_id"])
    return float(summary["created_at"]), doc_id


def count_runs(
    engine: Engine, statuses: tuple[str, ...], *, pipeline: str | None
) -> dict[str, int]:
    """How many runs have each status (of the pipeline): Firestore count queries, run
    side by side."""
    return {word: future.result() for word, future in _start_counts(engine, statuses, pipeline)}


def _start_counts(
    engine: Engine, statuses: tuple[str, ...], pipeline: str | None
) -> list[tuple[str, Future[int]]]:
    """One count query per status, each started on the pool at once."""
    collection = _firestore_collection(engine)
    if collection is None:
        runs = [s for s in _all_in_memory(engine) if _matches(s, pipeline, None)]
        done: list[tuple[str, Future[int]]] = []
        for word in statuses:
            future: Future[int] = Future()
            future.set_result(sum(1 for s in runs if s["status"] == word))
            done.append((word, future))
        return done
    from google.cloud.firestore_v1.base_query import FieldFilter

    def count(word: str) -> int:
        query = collection.where(filter=FieldFilter("status", "==", word))
        if pipeline:
            query = query.where(filter=FieldFilter("pipeline", "==", pipeline))
        return int(query.count(alias="n").get()[0][0].value)

    return [(word, _POOL.submit(count, word)) for word in statuses]


def page_of_runs(
    engine: Engine,
    statuses: tuple[str, ...],
    *,
    pipeline: str | None,
    status: str | None,
    search: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[RunSummary], str | None, dict[str, int]]:
    """:func:`query_runs` and :func:`count_runs` at once: a page costs the slower one
    (the counts run on the pool while this thread reads the page)."""
    counting = _start_counts(engine, statuses, pipeline)
    runs, next_cursor = query_runs(
        engine, pipeline=pipeline, status=status, search=search, cursor=cursor, limit=limit
    )
    return runs, next_cursor, {word: future.result() for word, future in counting}
