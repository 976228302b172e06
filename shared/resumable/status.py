"""The status words, the same in-process and serverless (the original's vocabulary), and
the exit codes the command line gives them."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """The status of a run."""

    NOT_STARTED = "not_started"
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """The run ended: ``completed``, ``error`` or ``cancelled``."""
        return self in (RunStatus.COMPLETED, RunStatus.ERROR, RunStatus.CANCELLED)


class StepStatus(StrEnum):
    """The status of a step (in a run's record or document)."""

    NOT_STARTED = "not_started"
    QUEUED = "queued"  # serverless only: its message is published, no worker has it yet
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"
    SKIPPED = "skipped"  # completed in an earlier attempt of the run, not run again
    CANCELLED = "cancelled"


# Exit codes of the ``resumable`` commands: the same for a run in this process
# (``resumable run``) and for a serverless run being followed (``resumable watch``).
EXIT_COMPLETED = 0
EXIT_FAILED = 1  # the run ended in error (or the command failed)
EXIT_USAGE = 2  # a wrong command line, reference or run id: nothing was done
EXIT_CANCELLED = 130  # the run was cancelled (as after Ctrl-C)


def exit_code(status: str) -> int:
    """The exit code for a finished run's status: 0 completed, 130 cancelled, else 1."""
    if status == RunStatus.COMPLETED:
        return EXIT_COMPLETED
    if status == RunStatus.CANCELLED:
        return EXIT_CANCELLED
    return EXIT_FAILED
