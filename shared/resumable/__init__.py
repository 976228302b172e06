"""resumable: crash-safe, resumable multi-step pipelines.

After every step the run's context is checkpointed; an interrupted run resumes at the
first unfinished step with its context restored exactly, and no finished step runs
twice. In-process (``Pipeline.run``) or event-driven on Google Cloud.
"""

from resumable._ids import validate_id
from resumable.checkpoint._registry import register_codec, unregister_codec
from resumable.definition._step_api import Continue, save_progress
from resumable.errors import (
    CheckpointError,
    CorruptCheckpointError,
    EncodingError,
    IncompatibleCheckpointError,
    InvalidIdError,
    NonRetryableError,
    PipelineDefinitionError,
    ResumableError,
    RetryableError,
    StepError,
)
from resumable.local._events import RunEvent
from resumable.local._pipeline import Pipeline
from resumable.status import RunStatus, StepStatus

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "Continue",
    "CorruptCheckpointError",
    "EncodingError",
    "IncompatibleCheckpointError",
    "InvalidIdError",
    "NonRetryableError",
    "Pipeline",
    "PipelineDefinitionError",
    "ResumableError",
    "RetryableError",
    "RunEvent",
    "RunStatus",
    "StepError",
    "StepStatus",
    "register_codec",
    "save_progress",
    "unregister_codec",
    "validate_id",
]
