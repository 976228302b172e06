"""Checkpoints: the exact codec of context values, content-addressed blobs, per-key
segments, manifests with their integrity hash, what a step changed (deltas), and the
checkpoint store of an in-process run. Nothing here knows how a run is scheduled."""

from resumable.checkpoint._registry import register_codec, unregister_codec
from resumable.checkpoint._store import CheckpointStore, LoadedCheckpoint

__all__ = ["CheckpointStore", "LoadedCheckpoint", "register_codec", "unregister_codec"]
