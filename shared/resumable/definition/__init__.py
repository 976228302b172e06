"""What a pipeline is: its steps and their graph (and the graph's fingerprint), the API a
running step uses (``save_progress``, ``Continue``, ``should_stop``), and loading a
pipeline from a ``MODULE:ATTR`` reference."""

from resumable.definition._loader import load_pipeline
from resumable.definition._spec import (
    MAX_DELIVERY_SECONDS,
    PipelineSpec,
    StepSpec,
    build_pipeline_spec,
    delivery_seconds,
    step_updates,
)
from resumable.definition._step_api import Continue, save_progress

__all__ = [
    "MAX_DELIVERY_SECONDS",
    "Continue",
    "PipelineSpec",
    "StepSpec",
    "build_pipeline_spec",
    "delivery_seconds",
    "load_pipeline",
    "save_progress",
    "step_updates",
]
