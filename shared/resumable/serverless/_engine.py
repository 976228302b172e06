"""What every serverless component shares: settings, pipelines, and the three services.

An :class:`Engine` is built once per function instance (the clients are reused across
requests, as Cloud Run recommends) or injected with in-memory fakes by unit tests.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from resumable import tracing
from resumable.definition._loader import PipelineLike as Pipeline
from resumable.errors import BadMessageError
from resumable.serverless import _naming as naming
from resumable.serverless._map_state import MapStore, MemoryMapStore
from resumable.serverless._messages import StepMessage, encode
from resumable.serverless._publisher import Publisher
from resumable.serverless._run_files import RunFiles
from resumable.serverless._run_state import RunState, RunStateStore, document_id
from resumable.serverless._runtime import SYSTEM, Runtime
from resumable.serverless._settings import Settings
from resumable.storage.base import ObjectStore


class PipelineRegistry:
    """The deployment's pipelines by name, from ``MODULE:ATTR`` references."""

    def __init__(self, references: Iterable[str] = (), pipelines: Iterable[Pipeline] = ()) -> None:
        self._references = list(references)
        self._pipelines: dict[str, Pipeline] = {p.pipeline_name: p for p in pipelines}
        self._loaded = False
        self._lock = threading.Lock()

    def register(self, pipeline: Pipeline) -> None:
        self._pipelines[pipeline.pipeline_name] = pipeline

    def _load(self) -> None:
        from resumable.definition._loader import load_pipeline

        with self._lock:
            if self._loaded:
                return
            for reference in self._references:
                pipeline = load_pipeline(reference)
                self._pipelines.setdefault(pipeline.pipeline_name, pipeline)
            self._loaded = True

    def get(self, name: str) -> Pipeline:
        if name not in self._pipelines:
            self._load()
        try:
            return self._pipelines[name]
        except KeyError:
            known = ", ".join(sorted(self._pipelines)) or "none"
            raise BadMessageError(
                f"unknown pipeline {name!r}: this deployment serves {known}", pipeline=name
            ) from None

    def all(self) -> list[Pipeline]:
        self._load()
        return list(self._pipelines.values())


@dataclass
class Engine:
    """Settings plus the run-state store, object store and publisher."""

    settings: Settings
    registry: PipelineRegistry
    runs: RunStateStore
    store: ObjectStore
    publisher: Publisher
    maps: MapStore = field(default_factory=MemoryMapStore)  # map steps' item documents
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    runtime: Runtime = SYSTEM

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        """The production wiring: Firestore, Cloud Storage and Pub/Sub clients."""
        from resumable.serverless._firestore import FirestoreRunStateStore, make_firestore_client
        from resumable.serverless._map_firestore import FirestoreMapStore
        from resumable.serverless._publisher import PubSubPublisher
        from resumable.storage import open_store

        settings.require()
        client = make_firestore_client(settings.project, settings.database)
        return cls(
            settings=settings,
            registry=PipelineRegistry(settings.pipelines),
            runs=FirestoreRunStateStore(
                client, settings.collection, retention_seconds=settings.retention_seconds
            ),
            store=open_store(settings.storage),
            publisher=PubSubPublisher(settings.project),
            maps=FirestoreMapStore(client, settings.collection),
        )

    def files(self, state: RunState) -> RunFiles:
        return RunFiles(self.store, state.tenant_id, state.pipeline, state.run_id)

    def doc_id(self, tenant_id: str, pipeline: str, run_id: str) -> str:
        return document_id(tenant_id, pipeline, run_id)

    def record_rejection(self, tenant_id: str, pipeline: str, run_id: str, reason: str) -> bool:
        """Note on the run why a message about it was acked unused; ``False`` if there is no
        such run. Recorded, never fatal: a stray message cannot fail a healthy run."""
        from resumable._ids import validate_id
        from resumable.errors import (
            ContentionError,
            InvalidIdError,
            RunDocumentError,
            RunNotFoundError,
        )
        from resumable.serverless.transitions import reject_message

        try:  # ids from a rejected message may be what made it invalid
            for value, what in ((tenant_id, "tenant"), (pipeline, "pipeline"), (run_id, "run")):
                validate_id(value, what)
        except InvalidIdError:
            return False
        try:
            self.runs.mutate(
                self.doc_id(tenant_id, pipeline, run_id), lambda s: reject_message(s, reason)
            )
        except (RunNotFoundError, ContentionError, RunDocumentError):
            return False
        return True

    def publish_steps(self, state: RunState, steps: Iterable[str]) -> list[str]:
        """Publish one message per step; returns the steps published."""
        published = []
        for step in steps:
            message = StepMessage(
                pipeline=state.pipeline,
                run_id=state.run_id,
                step=step,
                tenant_id=state.tenant_id,
                generation=state.generation,
            )
            topic = naming.step_topic(self.settings.topic_prefix, state.pipeline, step)
            attributes = tracing.inject(state, {"run_id": state.run_id, "step": step})
            self.publisher.publish(topic, encode(message), attributes)
            published.append(step)
        return published

    def publish_items(self, state: RunState, step: str, map_id: str, indexes: Iterable[int]) -> int:
        """Publish one message per item of map step ``step``, batched; returns how many."""
        topic = naming.step_topic(self.settings.topic_prefix, state.pipeline, step)
        attributes = tracing.inject(state, {"run_id": state.run_id, "step": step})
        messages = [
            (
                encode(
                    StepMessage(
                        pipeline=state.pipeline,
                        run_id=state.run_id,
                        step=step,
                        tenant_id=state.tenant_id,
                        generation=state.generation,
                        item=index,
                        map_id=map_id,
                    )
                ),
                {**attributes, "item": str(index)},
            )
            for index in indexes
        ]
        if messages:
            self.publisher.publish_many(topic, messages)
        return len(messages)


def log_fields(state: RunState | StepMessage | None, **extra: Any) -> dict[str, Any]:
    """``extra=`` fields for a log line about a run."""
    values: dict[str, Any] = {}
    if state is not None:
        values = {"pipeline": state.pipeline, "run_id": state.run_id, "tenant_id": state.tenant_id}
    values.update({k: v for k, v in extra.items() if v is not None})
    return values
