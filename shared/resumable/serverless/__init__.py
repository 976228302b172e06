"""The event-driven runner: the step protocol each Cloud Run function follows (claim,
load, run, write, commit, publish), the pure transitions of the run document behind it,
starting, cancelling and resuming runs, and the watchdog."""

from resumable.serverless._messages import StartMessage, StepMessage
from resumable.serverless._replay import load_outputs
from resumable.serverless._runtime import Runtime
from resumable.serverless._settings import Settings

__all__ = ["Runtime", "Settings", "StartMessage", "StepMessage", "load_outputs"]
