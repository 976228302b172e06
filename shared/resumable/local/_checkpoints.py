"""Writing an in-process run's checkpoints: after each commit, for a step's saved
progress, and at the end.

Every checkpoint is composed from the run's entries (its base, each completed step's
delta, each unfinished step's progress), so nothing is encoded twice. A checkpoint that
cannot be written is a warning and the run goes on, unless the run's options say
``fail_on_checkpoint_error``; another writer of the same run always stops it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from resumable.checkpoint._manifest import now_iso
from resumable.checkpoint._store import CheckpointStore
from resumable.definition._spec import PipelineSpec
from resumable.errors import ConcurrentWriterError
from resumable.local._events import CheckpointKind, EventKind, RunOptions, RunReport
from resumable.local._run_context import RunContext, StepInput
from resumable.status import RunStatus

if TYPE_CHECKING:
    from resumable.local._runner import _State


class RunCheckpoints(RunReport):
    """The part of :class:`~resumable.local._runner.InProcessRun` that writes checkpoints."""

    spec: PipelineSpec
    checkpoints: CheckpointStore
    options: RunOptions
    context: RunContext
    run_id: str
    _lock: threading.RLock
    _state: _State
    _saves: dict[str, int]

    if TYPE_CHECKING:  # provided by the runner

        def _warn(self, message: str) -> None: ...

    def save_progress(self, attempt: StepInput, given: Mapping[str, Any] | None) -> bool:
        """Checkpoint a running step's progress without marking the step completed.

        ``given`` is put into the step's context (as the serverless runner does), and what
        the step changed so far is saved as that step's progress: the next attempt of the
        step, in this process or after a resume, starts from it.
        """
        with self._lock:
            try:
                self.context.save_progress(attempt, given)
            except ConcurrentWriterError:
                raise
            except Exception as exc:
                self._checkpoint_failed(exc)
                return False
            self._state.records[attempt.step].progress_saved_at = now_iso()
            saved = self._checkpoint("progress", step=attempt.step)
            if saved:
                self._saves[attempt.step] = self._saves.get(attempt.step, 0) + 1
            return saved

    def _checkpoint(
        self,
        kind: CheckpointKind,
        status: RunStatus = RunStatus.RUNNING,
        step: str | None = None,
    ) -> bool:
        state = self._state
        context = self.context
        try:
            context.rebase()
            before = self.checkpoints.blobs.bytes_uploaded
            manifest = self.checkpoints.save_entries(
                context.committed(),
                spec=self.spec,
                completed_steps=state.completed,
                steps_summary=state.records,
                status=status,
                errors=state.errors,
                kind=kind,
                base=context.base,
                outputs=context.outputs,
                progress=context.progress,
            )
        except ConcurrentWriterError:
            raise
        except Exception as exc:
            self._checkpoint_failed(exc)
            return False
        written = self.checkpoints.blobs.bytes_uploaded - before
        self._log(logging.DEBUG, f"checkpoint #{manifest.sequence} saved ({written} new bytes)")
        self._emit(
            EventKind.CHECKPOINT_SAVED,
            step=step,
            detail=f"#{manifest.sequence}",
            bytes_written=written,
            checkpoint=kind,
        )
        return True

    def _checkpoint_failed(self, exc: Exception) -> None:
        message = f"checkpoint of run {self.run_id} failed: {type(exc).__name__}: {exc}"
        if self.options.fail_on_checkpoint_error:
            raise exc
        self._warn(message + " (the run goes on)")
        self._emit(EventKind.CHECKPOINT_FAILED, detail=message)
