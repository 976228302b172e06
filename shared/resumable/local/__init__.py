"""The in-process runner: ``Pipeline.run`` runs a pipeline's steps in this process,
checkpointing to a folder or a bucket after each."""

from resumable.local._events import RunEvent, RunOptions
from resumable.local._pipeline import Pipeline
from resumable.local._result import RunResult

__all__ = ["Pipeline", "RunEvent", "RunOptions", "RunResult"]
