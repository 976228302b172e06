"""The UI's one door into the rest of the library.

Every other module of ``resumable.ui`` reaches run documents, checkpoints, pipelines and
the control functions through the names defined or re-exported here, so that a change of
the library's layout touches this file only. What the library does not offer yet (paged
and counted queries of run documents, listing in-process runs) is written here, against
the stores' documented layouts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from google.api_core.exceptions import GoogleAPIError

from resumable import errors, tracing
from resumable._ids import chosen_run_id, validate_id
from resumable.checkpoint._deltas import Delta, compose
from resumable.checkpoint._manifest import Manifest, parse_manifest
from resumable.checkpoint._segments import Entry, decode_context
from resumable.checkpoint._store import LATEST, CheckpointStore, run_prefix
from resumable.checkpoint._summary import summarize
from resumable.definition._loader import load_pipeline
from resumable.definition._spec import PipelineSpec
from resumable.dev import _stack as devstack
from resumable.dev._discovery import engine_from_env
from resumable.serverless import _naming as naming
from resumable.serverless._control import cancel_run, resume_run
from resumable.serverless._engine import Engine
from resumable.serverless._messages import StartMessage, encode
from resumable.serverless._run_state import RunState, StepState, document_id
from resumable.storage import LocalStore, ObjectStore, open_store
from resumable.ui._run_queries import (
    SUMMARY_FIELDS,
    RunSummary,
    count_runs,
    decode_cursor,
    encode_cursor,
    page_of_runs,
    query_runs,
)

__all__ = [
    "LATEST",
    "SUMMARY_FIELDS",
    "CheckpointStore",
    "Delta",
    "Engine",
    "Entry",
    "GoogleAPIError",
    "Manifest",
    "ObjectStore",
    "PipelineSpec",
    "RunState",
    "RunSummary",
    "StepState",
    "compose",
    "count_runs",
    "decode_context",
    "decode_cursor",
    "encode_cursor",
    "page_of_runs",
    "query_runs",
    "summarize",
    "validate_id",
]

# -- the serverless deployment ------------------------------------------------------------


def open_engine() -> Engine:
    """The deployment the CLI would use (the environment, or the running local stack).
    Raises :class:`NotConfiguredError` saying what is missing."""
    return engine_from_env()


def describe_deployment(engine: Engine) -> str:
    settings = engine.settings
    return f"project {settings.project} · {settings.storage}"


def local_logs_dir(engine: Engine) -> Path | None:
    """The function logs of the local stack (``resumable dev up``) ``engine`` talks to;
    ``None`` for any other deployment."""
    try:
        state = devstack.read_state() or {}
    except ValueError:
        return None
    env = dict(state.get("env") or {})
    logs = state.get("logs")
    if not logs or env.get("RESUMABLE_PROJECT") != engine.settings.project:
        return None
    return Path(str(logs))


def trace_of(engine: Engine, state: RunState) -> tuple[str, str | None]:
    """The run's trace id (the same in every process: ``resumable.tracing``) and its
    Cloud Trace page (``None`` on the local emulators, whose traces go elsewhere)."""
    trace_id = tracing.trace_hex(state.tenant_id, state.pipeline, state.run_id)
    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        return trace_id, None
    project = engine.settings.project
    return (
        trace_id,
        f"https://console.cloud.google.com/traces/list?project={project}&tid={trace_id}",
    )


def served_pipelines(engine: Engine) -> list[str]:
    """The deployment's pipelines; empty when their code does not load here."""
    try:
        return sorted(p.pipeline_name for p in engine.registry.all())
    except (errors.PipelineLoadError, errors.BadMessageError, ImportError):
        return []


def served_spec(engine: Engine, pipeline: str) -> PipelineSpec | None:
    """The deployed pipeline's step graph, or ``None`` when its code is not loadable."""
    try:
        return engine.registry.get(pipeline).spec
    except (errors.PipelineLoadError, errors.BadMessageError, ImportError):
        return None


def run_document(engine: Engine, tenant: str, pipeline: str, run_id: str) -> RunState | None:
    return engine.runs.get(document_id(tenant, pipeline, run_id))


def attempt_objects(engine: Engine, state: RunState) -> list[str]:
    """The run's stored step manifests (``steps/{step}/attempt-....json``), relative to
    the run folder; empty once its checkpoints are deleted."""
    if state.checkpoints_gone:
        return []
    files = engine.files(state)
    return [name.removeprefix(files.prefix) for name in engine.store.list(files.prefix + "steps/")]


def serverless_entries(
    engine: Engine, state: RunState, spec: PipelineSpec | None, step: str, side: str
) -> tuple[dict[str, Entry], list[str], list[str], str | None]:
    """A step's input or output as checkpoint entries: ``(entries, deleted keys, steps
    the input is built from, manifest read)``. The input needs the step graph."""
    files = engine.files(state)
    if side == "output":
        name = state.steps[step].manifest
        if not name:
            raise errors.RunControlError(f"step {step!r} has no committed output")
        manifest = files.read_manifest(name)
        return dict(manifest.outputs), list(manifest.deleted), [], name
    if spec is None:
        raise errors.RunControlError(
            f"the input of step {step!r} is built from the step graph, and pipeline "
            f"{state.pipeline!r} does not load here (add it to RESUMABLE_PIPELINES)"
        )
    built = [
        n for n in spec.order if n in spec.ancestors(step) and state.steps[n].status == "completed"
    ]
    return files.input_entries(state, spec, step), [], built, None


def decode_serverless(engine: Engine, state: RunState, entries: Mapping[str, Entry]) -> Any:
    return engine.files(state).decode(entries)


def cancel(engine: Engine, state: RunState) -> RunState:
    return cancel_run(engine, state)


def resume(engine: Engine, state: RunState, from_step: str | None) -> list[str]:
    """Resume as ``resumable resume`` does; returns the steps published."""
    if not engine.store.exists(state.params_manifest):
        raise errors.RunControlError(
            f"run {state.run_id!r} has no stored checkpoints left (a completed run's are "
            "deleted unless its pipeline has cleanup_on_success=False): start a new run"
        )
    _state, published = resume_run(engine, state, from_step=from_step)
    return published


def publish_start(
    engine: Engine, pipeline: str, params: dict[str, Any], run_id: str | None, tenant: str | None
) -> str:
    """Publish a start message, as ``resumable start`` does; returns the run id."""
    message = StartMessage(
        pipeline=validate_id(pipeline, "pipeline"),
        params=params,
        run_id=chosen_run_id(run_id or None),
        tenant_id=validate_id(tenant, "tenant id") if tenant else None,
    )
    topic = naming.start_topic(engine.settings.topic_prefix)
    engine.publisher.publish(topic, encode(message))
    assert message.run_id is not None
    return message.run_id


# -- in-process runs in a storage folder ---------------------------------------------------


def open_folder(storage: str) -> ObjectStore:
    return open_store(storage)


def load_spec(reference: str) -> PipelineSpec:
    """The step graph of ``MODULE:ATTR``. Raises :class:`PipelineLoadError`."""
    spec: PipelineSpec = load_pipeline(reference).spec
    return spec


_LATEST_NAME = re.compile(r"runs/([^/]+)/([^/]+)/([^/]+)/" + re.escape(LATEST) + "$")


def latest_manifests(store: ObjectStore) -> Iterator[tuple[str, str, str, int | None]]:
    """``(tenant, pipeline, run_id, generation)`` of every in-process run's latest
    manifest; ``generation`` is ``None`` where the store cannot tell it without a read.

    A folder is scanned three levels deep without reading a file; a bucket is listed
    with the objects' generations; another store lists every object under ``runs/``.
    """
    if isinstance(store, LocalStore):
        yield from _local_latest(store.root / "runs")
        return
    bucket = getattr(store, "bucket", None)
    prefix = getattr(store, "prefix", None)
    if bucket is not None and isinstance(prefix, str):
        for blob in bucket.list_blobs(prefix=prefix + "runs/", match_glob=f"**/{LATEST}"):
            match = _LATEST_NAME.match(blob.name.removeprefix(prefix))
            if match:
                yield match.group(1), match.group(2), match.group(3), int(blob.generation)
        return
    for name in store.list("runs/"):
        match = _LATEST_NAME.match(name)
        if match:
            yield match.group(1), match.group(2), match.group(3), None


def _local_latest(root: Path) -> Iterator[tuple[str, str, str, int | None]]:
    def folders(path: Path) -> Iterator[os.DirEntry[str]]:
        try:
            with os.scandir(path) as entries:
                yield from (e for e in entries if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return

    for tenant in folders(root):
        for pipeline in folders(Path(tenant.path)):
            for run in folders(Path(pipeline.path)):
                try:
                    stat = os.stat(os.path.join(run.path, LATEST))
                except FileNotFoundError:
                    continue
                yield tenant.name, pipeline.name, run.name, stat.st_mtime_ns


def checkpoint_store(
    store: ObjectStore, tenant: str, pipeline: str, run_id: str
) -> CheckpointStore:
    return CheckpointStore(store, pipeline_name=pipeline, run_id=run_id, tenant_id=tenant)


def read_latest_manifest(
    store: ObjectStore, tenant: str, pipeline: str, run_id: str
) -> Manifest | None:
    """The run's latest manifest (without decoding its context), or ``None``."""
    loaded = checkpoint_store(store, tenant, pipeline, run_id).load_latest(decode=False)
    return loaded.manifest if loaded is not None else None


def peek_latest_manifest(
    store: ObjectStore, tenant: str, pipeline: str, run_id: str
) -> Manifest | None:
    """The run's latest manifest object alone, parsed and checked (one read, no listing):
    ``None`` if absent or of the original format. Raises :class:`CheckpointError`."""
    name = run_prefix(tenant, pipeline, run_id) + LATEST
    try:
        data = store.read(name)
    except errors.ObjectNotFoundError:
        return None
    manifest, _raw = parse_manifest(data, name)
    return manifest


def run_folder_prefix(tenant: str, pipeline: str, run_id: str) -> str:
    return run_prefix(tenant, pipeline, run_id)
