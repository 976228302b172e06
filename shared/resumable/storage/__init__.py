"""Object storage backends: where checkpoints live.

``open_store`` turns what users pass as ``storage=`` into an :class:`ObjectStore`: a folder
path or ``file://`` URL (:class:`LocalStore`), a ``gs://bucket/prefix`` URL
(:class:`GCSStore`), ``memory://`` (:class:`MemoryStore`, for tests), or a store object.
"""

from resumable.storage.base import ObjectStore, WriteStats
from resumable.storage.factory import open_store
from resumable.storage.local import LocalStore
from resumable.storage.memory import MemoryStore

__all__ = ["LocalStore", "MemoryStore", "ObjectStore", "WriteStats", "open_store"]
