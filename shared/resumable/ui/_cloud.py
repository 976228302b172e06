"""Serverless runs: run documents in Firestore, checkpoints in Cloud Storage.

The deployment is the one the CLI finds (``RESUMABLE_*`` variables and application
default credentials, or the running local stack). Reads are what ``resumable status``
and ``checkpoint show`` read; actions are what ``resumable start``, ``cancel`` and
``resume`` do.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from resumable import errors
from resumable.serverless._map_status import item_summaries
from resumable.ui import _data
from resumable.ui import _logs as logs
from resumable.ui._models import (
    RUN_STATUSES,
    CheckpointView,
    ItemCounts,
    RunFilter,
    RunKey,
    RunList,
    RunRow,
    RunView,
    Side,
    StepView,
    ValueView,
)
from resumable.ui._values import value_view

_PROGRESS = re.compile(r"([^/]+)/attempt-(\d+)-progress-[^/]+\.json$")


class CloudRuns:
    """The runs of one serverless deployment."""

    kind = "serverless"
    can_start = True

    def __init__(self, engine: _data.Engine, *, logs_dir: Path | None = None) -> None:
        """``logs_dir``: the local stack's function logs, where tracebacks are found."""
        self.engine = engine
        self.logs_dir = logs_dir
        self.description = _data.describe_deployment(engine)
        self._pipelines: list[str] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> CloudRuns:
        engine = _data.open_engine()
        return cls(engine, logs_dir=_data.local_logs_dir(engine))

    # -- the runs page ----------------------------------------------------------------------

    def pipelines(self) -> list[str]:
        with self._lock:
            if self._pipelines is None:
                self._pipelines = _data.served_pipelines(self.engine)
            return list(self._pipelines)

    def list_runs(self, wanted: RunFilter, *, cursor: str | None, limit: int) -> RunList:
        summaries, next_cursor, counts = _data.page_of_runs(
            self.engine,
            RUN_STATUSES,
            pipeline=wanted.pipeline,
            status=wanted.status,
            search=wanted.search,
            cursor=cursor,
            limit=limit,
        )
        rows = [_row(s) for s in summaries]
        names = sorted(set(self.pipelines()) | {r.key.pipeline for r in rows})
        return RunList(rows=rows, counts=counts, pipelines=names, next_cursor=next_cursor)

    # -- the run page ---------------------------------------------------------------------------

    def run(self, key: RunKey) -> RunView | None:
        state = _data.run_document(self.engine, key.tenant, key.pipeline, key.run_id)
        if state is None:
            return None
        spec = _data.served_spec(self.engine, state.pipeline)
        saves = self._progress_saves(state)
        trace_id, trace_url = _data.trace_of(self.engine, state)
        items = _item_counts(self.engine, state)
        steps = []
        for name in _order(state, spec):
            record = state.steps[name]
            extra = record.model_extra or {}
            steps.append(
                StepView(
                    name=name,
                    status=record.status,
                    dependencies=list(spec.steps[name].dependencies) if spec else [],
                    description=spec.steps[name].description if spec else "",
                    attempt=record.attempt,
                    failures=record.failures,
                    queued_at=record.queued_at,
                    started_at=record.started_at,
                    finished_at=record.finished_at,
                    checkpoint_bytes=record.checkpoint_bytes,
                    progress_saves=saves.get(name, 0) if not state.checkpoints_gone else None,
                    output_keys=list(record.output_keys),
                    error=record.error,
                    traceback=extra.get("traceback"),
                    has_output=bool(record.manifest) and not state.checkpoints_gone,
                    items=items.get(name),
                    spans=[(h.started_at, h.ended_at, h.outcome or "") for h in record.history],
                )
            )
        notes = []
        if spec is None:
            notes.append(
                f"pipeline {state.pipeline!r} does not load here: the graph shows no edges "
                "and step inputs cannot be built (add it to RESUMABLE_PIPELINES)"
            )
        if state.checkpoints_gone:
            notes.append("the run's checkpoints were deleted (completed, or past retention)")
        return RunView(
            key=key,
            kind="serverless",
            status=state.status,
            steps=steps,
            created_at=state.created_at,
            updated_at=state.updated_at,
            finished_at=state.finished_at,
            error=state.error,
            cancel_requested=state.cancel_requested,
            generation=state.generation,
            revision=f"{state.revision}-{state.updated_at}",
            graph_known=spec is not None,
            run_folder=self.engine.files(state).run_folder,
            trace_id=trace_id,
            trace_url=trace_url,
            log_filter=logs.cloud_logging_filter(state.run_id),
            notes=notes,
            can_cancel=not state.finished,
            can_resume=state.status in ("error", "cancelled") and not state.checkpoints_gone,
            can_resume_from=spec is not None and not state.checkpoints_gone,
        )

    def _progress_saves(self, state: _data.RunState) -> dict[str, int]:
        """Progress saves per step, counted from the stored manifests of all attempts."""
        counts: Counter[str] = Counter()
        try:
            names = _data.attempt_objects(self.engine, state)
        except errors.ResumableError:
            return {}
        for name in names:
            match = _PROGRESS.search(name)
            if match:
                counts[match.group(1)] += 1
        return dict(counts)

    def traceback(self, key: RunKey, step: str) -> str | None:
        return logs.find_traceback(key.run_id, step, logs_dir=self.logs_dir)

    # -- the checkpoint browser ---------------------------------------------------------------

    def _state_and_spec(self, key: RunKey) -> tuple[_data.RunState, Any]:
        state = _data.run_document(self.engine, key.tenant, key.pipeline, key.run_id)
        if state is None:
            raise errors.RunControlError(f"no run {key.run_id!r} of pipeline {key.pipeline!r}")
        return state, _data.served_spec(self.engine, state.pipeline)

    def checkpoint(self, key: RunKey, step: str, side: Side) -> CheckpointView:
        state, spec = self._state_and_spec(key)
        if step not in state.steps:
            raise errors.RunControlError(f"run {key.run_id!r} has no step {step!r}")
        entries, deleted, built, manifest = _data.serverless_entries(
            self.engine, state, spec, step, side
        )
        decoded = _data.decode_serverless(self.engine, state, entries)
        values = [value_view(k, decoded[k], entries[k]) for k in entries]
        values += [_deleted(k) for k in deleted]
        return CheckpointView(
            key=key, step=step, side=side, values=values, built_from=built, manifest=manifest
        )

    def value(self, key: RunKey, step: str, side: Side, name: str) -> Any:
        state, spec = self._state_and_spec(key)
        entries, _deleted_keys, _built, _manifest = _data.serverless_entries(
            self.engine, state, spec, step, side
        )
        if name not in entries:
            raise KeyError(name)
        return _data.decode_serverless(self.engine, state, {name: entries[name]})[name]

    # -- actions ----------------------------------------------------------------------------------

    def _state(self, key: RunKey) -> _data.RunState:
        return self._state_and_spec(key)[0]

    def cancel(self, key: RunKey) -> str:
        state = self._state(key)
        if state.finished:
            return f"run {key.run_id} is already {state.status}; nothing to cancel"
        after = _data.cancel(self.engine, state)
        if after.status == "cancelled":
            return f"run {key.run_id} cancelled"
        return f"cancel requested for run {key.run_id}: running steps finish first"

    def resume(self, key: RunKey, from_step: str | None) -> str:
        published = _data.resume(self.engine, self._state(key), from_step)
        where = f" from step {from_step}" if from_step else ""
        return f"run {key.run_id} resumed{where}; published {', '.join(published) or 'nothing'}"

    def start(self, pipeline: str, params: dict[str, Any], run_id: str | None) -> RunKey:
        served = self.pipelines()
        if served and pipeline not in served:
            raise errors.RunControlError(
                f"unknown pipeline {pipeline!r}: this deployment serves {', '.join(served)}"
            )
        started = _data.publish_start(self.engine, pipeline, params, run_id, None)
        return RunKey("default", pipeline, started)


def _order(state: _data.RunState, spec: Any) -> list[str]:
    known = [n for n in spec.order if n in state.steps] if spec else []
    return known + [n for n in state.steps if n not in known]


def _row(summary: _data.RunSummary) -> RunRow:
    counts = summary.get("step_counts") or {}
    return RunRow(
        key=RunKey(summary["tenant_id"] or "default", summary["pipeline"], summary["run_id"]),
        status=str(summary["status"]),
        created_at=summary.get("created_at"),
        finished_at=summary.get("finished_at"),
        steps_completed=int(counts.get("completed", 0)),
        steps_total=int(counts.get("total", 0)),
        error=summary.get("error"),
        cancel_requested=bool(summary.get("cancel_requested")),
    )


def _deleted(key: str) -> ValueView:
    return ValueView(key=key, type="(removed)", deleted=True)


def _item_counts(engine: Any, state: Any) -> dict[str, ItemCounts]:
    """Map steps' items; none when the item documents cannot be read (the page still
    shows the run)."""
    try:
        summaries = item_summaries(engine, state)
    except Exception:
        return {}
    return {
        name: ItemCounts(
            total=s.total,
            completed=s.completed,
            failed=s.failed,
            running=s.running,
            failed_items=[
                f"#{f.index}" + (f" {f.item}" if f.item is not None else "") + f" ({f.error})"
                for f in s.failed_items
            ],
        )
        for name, s in summaries.items()
    }
