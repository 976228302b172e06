"""The status words, the same in-process and serverless (the original's vocabulary)."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    NOT_STARTED = "not_started"
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.ERROR, RunStatus.CANCELLED)


class StepStatus(StrEnum):
    NOT_STARTED = "not_started"
    QUEUED = "queued"  # serverless only: its message is published, no worker has it yet
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"
    SKIPPED = "skipped"  # completed in an earlier attempt of the run, not run again
    CANCELLED = "cancelled"
