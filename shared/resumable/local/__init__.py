"""The in-process runner: ``Pipeline.run`` runs a pipeline's steps in this process,
checkpointing to a folder or a bucket after each."""

from resumable.local._pipeline import Pipeline
from resumable.local._runner import RunEvent, RunOptions

__all__ = ["Pipeline", "RunEvent", "RunOptions"]
