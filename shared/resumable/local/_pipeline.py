"""``Pipeline``: the public API, compatible with the original.

.. code-block:: python

    class VideoPipeline(Pipeline):
        def __init__(self, storage):
            super().__init__(
                pipeline_name="video",
                step_definitions={
                    "extract_frames": {"function": self.extract_frames, "description": "..."},
                    "detect": {"function": self.detect, "retries": 2},
                },
                storage=storage,
            )

    result = VideoPipeline("gs://bucket/pipelines").run({"video_path": "in.mp4"})
    # after a crash, in a new process:
    VideoPipeline(storage).run(resume_from_checkpoint=True, run_guid=result["run_guid"])
"""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
from collections.abc import Mapping
from typing import Any, Self

from resumable._defaults import DEFAULT_TENANT
from resumable._ids import chosen_run_id, validate_id
from resumable._log import configure_logging
from resumable.checkpoint._store import CheckpointStore, LoadedCheckpoint
from resumable.definition._spec import PipelineSpec, build_pipeline_spec
from resumable.definition._step_api import save_progress
from resumable.local._events import EventHandler, RunOptions
from resumable.local._result import RunResult
from resumable.local._runner import InProcessRun
from resumable.storage import ObjectStore, open_store

DEFAULT_STORAGE_ENV = "RESUMABLE_STORAGE"
DEFAULT_STORAGE = ".resumable"


class Pipeline:
    """A named set of steps over a shared context, checkpointed after every step.

    Args:
        pipeline_name: a safe id; part of every checkpoint's path.
        step_definitions: ``{"step": {"function": f, "description": ..., "dependencies":
            [...], "retries": n, "timeout": s, "version": v}}``. A step is called as
            ``f(context)`` and returns a dict merged into the context (another value is
            stored as ``"{step}_result"``). A step that declares a ``should_stop`` parameter
            gets a callable telling it a stop was requested; one that declares
            ``save_progress`` gets the function that checkpoints its progress mid-step.
            A map step (``"map": "key"`` or ``"map": "gs://bucket/prefix/*.mp4"``) calls
            ``f(item, context)`` per item on ``concurrency`` threads (default
            ``max_workers``), retries each item ``retries`` times, tolerates
            ``tolerated_failures``, and checkpoints finished items in batches: a resume
            runs only the items not finished or failed (see ``resumable.definition._map``).
        storage: a folder, ``file://`` or ``gs://bucket/prefix`` URL, or an
            :class:`~resumable.storage.ObjectStore`. Default: ``$RESUMABLE_STORAGE`` or
            ``./.resumable``.
        run_guid: the run to start or resume. ``None`` draws a new one; pass a run's id
            to resume it from any process. ``run_id`` is an alias.
        verbose: log every step and checkpoint at DEBUG level, as the original did.
        tenant_id: separates runs of different tenants in storage.
        max_workers: how many independent steps may run at once (default 1).
        strict: raise instead of starting fresh when a checkpoint is unusable.
        cleanup_on_success: delete the run's checkpoints once it completes.
        fail_on_checkpoint_error: make a failed checkpoint save fatal (default: log a
            warning and go on, as the original did).
        retry_backoff: first delay in seconds between a step's retries (doubles each time).
        compression_level: zstd level for compressible blobs (0 disables compression).
        detect_in_place_changes: encode every context value at every checkpoint (default),
            so that a value a step changed in place without returning it is saved too.
            ``False`` trusts the steps: a value neither returned by the step nor rebound
            to a new object keeps its previous encoding — cheaper for large contexts, and
            exact for steps that return what they change.
    """

    def __init__(
        self,
        pipeline_name: str,
        step_definitions: Mapping[str, Any],
        storage: Any = None,
        run_guid: str | None = None,
        verbose: bool = False,
        *,
        run_id: str | None = None,
        tenant_id: str = DEFAULT_TENANT,
        max_workers: int = 1,
        strict: bool = False,
        cleanup_on_success: bool = True,
        fail_on_checkpoint_error: bool = False,
        retry_backoff: float = 1.0,
        compression_level: int = 3,
        detect_in_place_changes: bool = True,
    ) -> None:
        self.pipeline_name = pipeline_name
        self.step_definitions = dict(step_definitions)
        self.spec: PipelineSpec = build_pipeline_spec(pipeline_name, self.step_definitions)
        self.tenant_id = validate_id(tenant_id, "tenant id")
        self.run_guid = chosen_run_id(run_guid, run_id)
        self.verbose = verbose
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.options = RunOptions(
            max_workers=max_workers,
            strict=strict,
            cleanup_on_success=cleanup_on_success,
            fail_on_checkpoint_error=fail_on_checkpoint_error,
            retry_backoff=retry_backoff,
            detect_in_place_changes=detect_in_place_changes,
        )
        self.compression_level = compression_level
        if storage is None:
            storage = os.environ.get(DEFAULT_STORAGE_ENV, DEFAULT_STORAGE)
        self.storage: ObjectStore = open_store(storage)
        self._stop = threading.Event()
        self._checkpoints = self._make_checkpoint_store()
        if verbose:
            configure_logging(verbose=True)

    # Recognised as a pipeline by the loader and the serverless runner, which do not
    # import this class (they sit in other layers).
    __resumable_pipeline__ = True

    def replace(self, **overrides: Any) -> Self:
        """A copy of this pipeline with some settings changed — ``storage``,
        ``run_id``/``run_guid``, ``tenant_id``, ``compression_level``, ``verbose``, and
        the run options (``max_workers``, ``strict``, ``cleanup_on_success``,
        ``fail_on_checkpoint_error``, ``retry_backoff``, ``detect_in_place_changes``).
        The steps, and so the fingerprint, stay the same; a subclass stays itself (its
        constructor is not called again)."""
        options = {f.name for f in dataclasses.fields(RunOptions)}
        plain = {"storage", "run_id", "run_guid", "tenant_id", "compression_level", "verbose"}
        unknown = set(overrides) - options - plain
        if unknown:
            raise TypeError(f"Pipeline.replace() got unknown setting(s) {sorted(unknown)}")
        new = copy.copy(self)
        new.options = dataclasses.replace(
            self.options, **{k: v for k, v in overrides.items() if k in options}
        )
        if new.options.max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if "storage" in overrides:
            new.storage = open_store(overrides["storage"])
        if "run_guid" in overrides or "run_id" in overrides:
            new.run_guid = chosen_run_id(overrides.get("run_guid"), overrides.get("run_id"))
        if "tenant_id" in overrides:
            new.tenant_id = validate_id(overrides["tenant_id"], "tenant id")
        new.compression_level = overrides.get("compression_level", self.compression_level)
        new.verbose = overrides.get("verbose", self.verbose)
        new._stop = threading.Event()
        new._checkpoints = new._make_checkpoint_store()
        return new

    @property
    def cleanup_on_success(self) -> bool:
        """Whether a completed run's checkpoints are deleted (in either runner)."""
        return self.options.cleanup_on_success

    def _make_checkpoint_store(self) -> CheckpointStore:
        return CheckpointStore(
            self.storage,
            pipeline_name=self.pipeline_name,
            run_id=self.run_guid,
            tenant_id=self.tenant_id,
            compression_level=self.compression_level,
        )

    @property
    def run_id(self) -> str:
        return self.run_guid

    @property
    def run_folder(self) -> str:
        return self._checkpoints.run_folder

    @property
    def fingerprint(self) -> str:
        return self.spec.fingerprint

    def run(
        self,
        context: Mapping[str, Any] | None = None,
        resume_from_checkpoint: bool = False,
        *,
        run_guid: str | None = None,
        on_event: EventHandler | None = None,
    ) -> RunResult:
        """Run the pipeline; with ``resume_from_checkpoint``, continue the run's checkpoint.

        Returns a dict with ``pipeline_name``, ``status`` (``completed``, ``error`` or
        ``cancelled``), ``run_guid``/``run_id``, ``run_folder``, ``steps_completed`` (run
        now), ``steps_failed``, ``steps_skipped`` (completed before, not run again),
        ``errors``, ``warnings``, ``context``, ``resumed_from_checkpoint`` and ``steps``
        (per-step status, attempts, times). Step failures do not raise: they end the run
        with status ``error`` and keep its checkpoint for a resume.
        """
        if run_guid is not None and run_guid != self.run_guid:
            self.run_guid = validate_id(run_guid, "run id")
            self._checkpoints = self._make_checkpoint_store()
        self._stop.clear()
        run = InProcessRun(
            self.spec, self._checkpoints, self.options, stop_event=self._stop, on_event=on_event
        )
        try:
            return run.execute(context, resume_from_checkpoint)
        finally:
            # The next run() of this object continues the same run's checkpoint history.
            self._checkpoints = self._make_checkpoint_store()

    def save_checkpoint(self, context: Mapping[str, Any] | None = None) -> bool:
        """Checkpoint the running step's progress (call from inside a step).

        After an interruption, that step runs again with the context saved here. Returns
        whether the checkpoint was written (a failure is logged, unless
        ``fail_on_checkpoint_error``).
        """
        return save_progress(context)

    def load_checkpoint(self) -> LoadedCheckpoint | None:
        """The run's latest checkpoint (manifest and context), or ``None``."""
        return self._make_checkpoint_store().load_latest()

    def request_stop(self) -> None:
        """Ask the run to stop: no new step starts; running steps see ``should_stop()``."""
        self._stop.set()

    stop = request_stop

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()
