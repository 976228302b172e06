"""In-process runs: the checkpoints ``Pipeline.run`` keeps in a folder or a bucket.

Each run is its latest manifest, ``runs/{tenant}/{pipeline}/{run_id}/.checkpoint.json``.
The runs page is served from an index of those manifests kept in memory and refreshed at
most every :data:`REFRESH_SECONDS`, re-reading only the manifests that changed (a folder
is scanned without reading a file; a bucket listed with its objects' generations). The
step graph is not stored in a checkpoint: it comes from the pipelines given with
``--pipeline``, and without it the graph shows no edges and step inputs cannot be built.

These runs are steered by the process that runs them, so the pages offer no actions:
they say how to resume a run from the command line.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from typing import Any

from resumable import errors
from resumable.ui import _data, _models
from resumable.ui._values import stored_bytes, value_view

REFRESH_SECONDS = 1.0


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class FolderRuns:
    """The in-process runs checkpointed under one storage root."""

    kind = "in-process"
    can_start = False

    def __init__(self, storage: str, pipelines: Sequence[str] = ()) -> None:
        self.store = _data.open_folder(storage)
        self.specs: dict[str, _data.PipelineSpec] = {}
        for reference in pipelines:
            spec = _data.load_spec(reference)
            self.specs[spec.name] = spec
        self.description = f"in-process runs in {self.store.url}"
        self._index: dict[_models.RunKey, tuple[int | None, _models.RunRow]] = {}
        self._refreshed = float("-inf")
        self._lock = threading.Lock()

    # -- the runs page ----------------------------------------------------------------------

    def pipelines(self) -> list[str]:
        self._refresh()
        return sorted(set(self.specs) | {k.pipeline for k in self._index})

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._refreshed < REFRESH_SECONDS:
                return
            seen = set()
            for tenant, pipeline, run_id, generation in _data.latest_manifests(self.store):
                key = _models.RunKey(tenant, pipeline, run_id)
                seen.add(key)
                cached = self._index.get(key)
                if cached is not None and generation is not None and cached[0] == generation:
                    continue
                self._index[key] = (generation, self._row(key))
            for gone in set(self._index) - seen:
                del self._index[gone]
            self._refreshed = time.monotonic()

    def _row(self, key: _models.RunKey) -> _models.RunRow:
        try:
            manifest = _data.peek_latest_manifest(self.store, key.tenant, key.pipeline, key.run_id)
        except errors.ResumableError as exc:
            return _models.RunRow(
                key, "error", None, None, 0, 0, error=f"unreadable checkpoint: {exc}"
            )
        if manifest is None:
            return _models.RunRow(key, "error", None, None, 0, 0, error="no checkpoint")
        times = [_epoch(r.started_at) for r in manifest.steps_summary.values()]
        stamp = _epoch(manifest.timestamp)
        created = min([t for t in times if t is not None], default=stamp)
        return _models.RunRow(
            key=key,
            status=manifest.status,
            created_at=created,
            finished_at=stamp if manifest.status in ("completed", "error", "cancelled") else None,
            steps_completed=len(manifest.completed_steps),
            steps_total=len(manifest.step_fingerprints or manifest.steps_summary),
            error=manifest.errors[-1] if manifest.errors else None,
        )

    def list_runs(
        self, wanted: _models.RunFilter, *, cursor: str | None, limit: int
    ) -> _models.RunList:
        self._refresh()
        rows = [row for _gen, row in self._index.values()]
        if wanted.pipeline:
            rows = [r for r in rows if r.key.pipeline == wanted.pipeline]
        counts = {word: sum(1 for r in rows if r.status == word) for word in _models.RUN_STATUSES}
        if wanted.status:
            rows = [r for r in rows if r.status == wanted.status]
        if wanted.search:
            rows = sorted(
                (r for r in rows if r.key.run_id.startswith(wanted.search)),
                key=lambda r: r.key.run_id,
            )
        else:
            rows.sort(key=lambda r: (r.created_at or 0.0, r.key.run_id), reverse=True)
        start = int(cursor) if cursor and cursor.isdigit() else 0
        page = rows[start : start + limit]
        more = start + limit < len(rows)
        return _models.RunList(
            rows=page,
            counts=counts,
            pipelines=self.pipelines(),
            next_cursor=str(start + limit) if more else None,
        )

    # -- the run page ---------------------------------------------------------------------------

    def _manifest(self, key: _models.RunKey) -> _data.Manifest | None:
        return _data.read_latest_manifest(self.store, key.tenant, key.pipeline, key.run_id)

    def run(self, key: _models.RunKey) -> _models.RunView | None:
        manifest = self._manifest(key)
        if manifest is None:
            return None
        spec = self.specs.get(key.pipeline)
        if spec is not None and not set(manifest.completed_steps) <= set(spec.order):
            spec = None  # another version of the pipeline: its graph would mislead
        order = list(spec.order) if spec else list(manifest.step_fingerprints or [])
        order += [n for n in manifest.steps_summary if n not in order]
        outputs = manifest.outputs or {}
        steps = []
        for name in order:
            record = manifest.steps_summary.get(name)
            delta = outputs.get(name)
            extra = (record.model_extra or {}) if record else {}
            steps.append(
                _models.StepView(
                    name=name,
                    status=record.status if record else "not_started",
                    dependencies=list(spec.steps[name].dependencies) if spec else [],
                    description=spec.steps[name].description if spec else "",
                    attempt=record.attempts if record else 0,
                    started_at=_epoch(record.started_at) if record else None,
                    finished_at=_epoch(record.finished_at) if record else None,
                    checkpoint_bytes=_delta_bytes(delta) if delta is not None else None,
                    progress_saves=None,
                    last_progress_at=_epoch(record.progress_saved_at) if record else None,
                    output_keys=list(record.output_keys) if record else [],
                    error=record.error if record else None,
                    traceback=extra.get("traceback"),
                    has_output=delta is not None,
                )
            )
        notes = [
            "an in-process run is steered by the process that runs it: resume it with "
            f"`resumable run MODULE:ATTR --run-id {key.run_id} --resume --storage "
            f"{self.store.url}`" + (f" --tenant {key.tenant}" if key.tenant != "default" else "")
        ]
        if spec is None:
            notes.append(
                "the step graph is not stored in a checkpoint: start the UI with "
                f"--pipeline MODULE:ATTR for {key.pipeline!r} to see its edges and step inputs"
            )
        if manifest.status == "running":
            notes.append(
                f"last checkpoint at {manifest.timestamp}: if the process that ran it stopped, "
                "the run stays running until it is resumed"
            )
        finished = manifest.status in ("completed", "error", "cancelled")
        return _models.RunView(
            key=key,
            kind="in-process",
            status=manifest.status,
            steps=steps,
            created_at=min(
                [s.started_at for s in steps if s.started_at is not None],
                default=_epoch(manifest.timestamp),
            ),
            updated_at=_epoch(manifest.timestamp),
            finished_at=_epoch(manifest.timestamp) if finished else None,
            error="; ".join(manifest.errors) or None,
            revision=f"{manifest.sequence}-{manifest.integrity}",
            graph_known=spec is not None,
            run_folder=manifest.run_folder,
            notes=notes,
        )

    def traceback(self, key: _models.RunKey, step: str) -> str | None:
        return None  # only what the step summary keeps (shown with the error)

    # -- the checkpoint browser ---------------------------------------------------------------

    def _entries(
        self, key: _models.RunKey, step: str, side: _models.Side
    ) -> tuple[_data.CheckpointStore, dict[str, Any], list[str], list[str]]:
        checkpoints = _data.checkpoint_store(self.store, key.tenant, key.pipeline, key.run_id)
        loaded = checkpoints.load_latest(decode=False)
        if loaded is None:
            raise errors.RunControlError(f"run {key.run_id!r} has no checkpoint")
        manifest = loaded.manifest
        outputs = manifest.outputs
        if outputs is None or manifest.base is None:
            raise errors.RunControlError(
                "this checkpoint was written by an earlier release and keeps no per-step "
                "outputs: only its whole context is stored"
            )
        if side == "output":
            delta = outputs.get(step)
            if delta is None:
                raise errors.RunControlError(f"step {step!r} has no committed output")
            return checkpoints, dict(delta.outputs), list(delta.deleted), []
        spec = self.specs.get(key.pipeline)
        if spec is None or step not in spec.steps:
            raise errors.RunControlError(
                f"the input of step {step!r} is built from the step graph: start the UI with "
                f"--pipeline MODULE:ATTR for pipeline {key.pipeline!r}"
            )
        built = [n for n in spec.order if n in spec.ancestors(step) and n in outputs]
        entries = _data.compose(manifest.base, (outputs[n] for n in built))
        return checkpoints, entries, [], built

    def checkpoint(
        self, key: _models.RunKey, step: str, side: _models.Side
    ) -> _models.CheckpointView:
        checkpoints, entries, deleted, built = self._entries(key, step, side)
        decoded = _data.decode_context(entries, checkpoints.blobs)
        values = [value_view(k, decoded[k], entries[k]) for k in entries]
        values += [_models.ValueView(key=k, type="(removed)", deleted=True) for k in deleted]
        return _models.CheckpointView(
            key=key, step=step, side=side, values=values, built_from=built
        )

    def value(self, key: _models.RunKey, step: str, side: _models.Side, name: str) -> Any:
        checkpoints, entries, _deleted, _built = self._entries(key, step, side)
        if name not in entries:
            raise KeyError(name)
        return _data.decode_context({name: entries[name]}, checkpoints.blobs)[name]

    # -- actions ----------------------------------------------------------------------------------

    def cancel(self, key: _models.RunKey) -> str:
        raise errors.RunControlError("in-process runs are cancelled by the process running them")

    def resume(self, key: _models.RunKey, from_step: str | None) -> str:
        raise errors.RunControlError("in-process runs are resumed with `resumable run --resume`")

    def start(self, pipeline: str, params: dict[str, Any], run_id: str | None) -> _models.RunKey:
        raise errors.RunControlError("in-process runs are started with `resumable run`")


def _delta_bytes(delta: _data.Delta) -> int:
    return sum(stored_bytes(entry) or 0 for entry in delta.outputs.values())
