"""The video data-prep pipeline: a real example of a resumable pipeline.

frames (PyAV) → detections → crops → background removal → augmentation → train/val
split → dataset on storage. See README.md; load it as
``examples.dataprep.pipeline:build``.
"""

from .clip import Params, process_clip
from .dataset import read_dataset
from .pipeline import DEFAULT_PARAMS, DataPrepPipeline, build
from .video import make_test_clip

__all__ = [
    "DEFAULT_PARAMS",
    "DataPrepPipeline",
    "Params",
    "build",
    "make_test_clip",
    "process_clip",
    "read_dataset",
]
