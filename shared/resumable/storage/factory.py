"""Turn a user's ``storage=`` argument into an object store."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlparse

from .base import ObjectStore
from .local import LocalStore
from .memory import MemoryStore

_MEMORY_STORES: dict[str, MemoryStore] = {}


def open_store(spec: Any) -> ObjectStore:
    """Open ``spec``: a folder path, ``file://``, ``gs://bucket/prefix``, ``memory://name``,
    or an object that already implements :class:`ObjectStore` (returned as is)."""
    if isinstance(spec, ObjectStore):
        return spec
    if isinstance(spec, os.PathLike):
        return LocalStore(spec)
    if not isinstance(spec, str) or not spec:
        raise TypeError(
            "storage must be a folder path, a file:// or gs:// URL, or an ObjectStore; "
            f"got {spec!r}"
        )
    if spec.startswith("gs://"):
        from .gcs import GCSStore

        parsed = urlparse(spec)
        if not parsed.netloc:
            raise ValueError(f"storage URL {spec!r} names no bucket: use gs://BUCKET/PREFIX")
        return GCSStore(parsed.netloc, parsed.path)
    if spec.startswith("file://"):
        return LocalStore(unquote(urlparse(spec).path))
    if spec.startswith("memory://"):
        return _MEMORY_STORES.setdefault(spec, MemoryStore(spec))
    if "://" in spec:
        raise ValueError(f"unsupported storage URL {spec!r}: use a folder, file://, or gs://")
    return LocalStore(spec)
