"""What an in-process run tells a display about itself (and its log: :class:`RunReport`),
and the options it runs with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from resumable._log import fields, logger
from resumable.definition._spec import PipelineSpec

CheckpointKind = Literal["commit", "progress", "final"]


class EventKind(StrEnum):
    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    STEP_RETRYING = "step_retrying"
    STEP_SKIPPED = "step_skipped"
    CHECKPOINT_SAVED = "checkpoint_saved"
    CHECKPOINT_FAILED = "checkpoint_failed"
    RUN_FINISHED = "run_finished"


@dataclass(frozen=True)
class RunEvent:
    """Something that happened in a run, for progress displays. A checkpoint event says
    what it was taken for (``checkpoint``): a step's ``commit``, a step's ``progress``
    save, or the run's ``final`` status; ``step`` is the step it was taken for."""

    kind: EventKind
    run_id: str
    step: str | None = None
    attempt: int | None = None
    detail: str = ""
    bytes_written: int | None = None
    checkpoint: CheckpointKind | None = None


EventHandler = Callable[[RunEvent], None]


@dataclass
class RunOptions:
    """How a run behaves (``Pipeline``'s keyword options of the same names)."""

    max_workers: int = 1
    strict: bool = False
    cleanup_on_success: bool = True
    fail_on_checkpoint_error: bool = False
    retry_backoff: float = 1.0
    retry_backoff_max: float = 60.0
    detect_in_place_changes: bool = True


class RunReport:
    """What every part of an in-process run (the runner, :class:`StepCalls`,
    :class:`RunCheckpoints`) reports: events to the display, lines to the log."""

    spec: PipelineSpec
    run_id: str
    on_event: EventHandler | None

    def _emit(self, kind: EventKind, **kw: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(RunEvent(kind=kind, run_id=self.run_id, **kw))
            except Exception:  # a broken display must not break the run
                logger.debug("progress handler failed", exc_info=True)

    def _log(
        self, level: int, message: str, step: str | None = None, attempt: int | None = None
    ) -> None:
        logger.log(
            level,
            message,
            extra=fields(pipeline=self.spec.name, run_id=self.run_id, step=step, attempt=attempt),
        )
