"""The event-driven runner: the step protocol each Cloud Run function follows (claim,
load, run, write, commit, publish), the pure transitions of the run document behind it,
starting, cancelling and resuming runs, and the watchdog."""

from resumable.serverless._control import (
    cancel_run,
    collect_garbage,
    describe,
    get_run,
    resume_run,
    start_run,
    watchdog_sweep,
)
from resumable.serverless._engine import Engine
from resumable.serverless._messages import StartMessage, StepMessage
from resumable.serverless._replay import load_outputs
from resumable.serverless._run_files import RunFiles
from resumable.serverless._run_state import RunState, StepState
from resumable.serverless._runtime import Runtime
from resumable.serverless._settings import Settings

__all__ = [
    "Engine",
    "RunFiles",
    "RunState",
    "Runtime",
    "Settings",
    "StartMessage",
    "StepMessage",
    "StepState",
    "cancel_run",
    "collect_garbage",
    "describe",
    "get_run",
    "load_outputs",
    "resume_run",
    "start_run",
    "watchdog_sweep",
]
