"""Turn a user's ``storage=`` argument into an object store."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlparse

from resumable.storage.base import ObjectStore
from resumable.storage.local import LocalStore
from resumable.storage.memory import MemoryStore

_MEMORY_STORES: dict[str, MemoryStore] = {}


def open_store(spec: Any) -> ObjectStore:
    """Open ``spec``: a folder path, ``file:///absolute/path``, ``gs://bucket/prefix``,
    ``memory://name``, or an object that already implements :class:`ObjectStore` (returned
    as is). Raises ``ValueError`` for a URL that does not say unambiguously where."""
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
        from resumable.storage.gcs import GCSStore

        parsed = urlparse(spec)
        if not parsed.netloc:
            raise ValueError(f"storage URL {spec!r} names no bucket: use gs://BUCKET/PREFIX")
        return GCSStore(parsed.netloc, parsed.path)
    if spec.startswith("file:"):
        return LocalStore(_file_url_path(spec))
    if spec.startswith("memory://"):
        return _MEMORY_STORES.setdefault(spec, MemoryStore(spec))
    if "://" in spec:
        raise ValueError(f"unsupported storage URL {spec!r}: use a folder, file://, or gs://")
    return LocalStore(spec)


def _file_url_path(url: str) -> str:
    """The folder a ``file:`` URL names: an absolute path on this machine, nothing else
    (``file://rel/x`` would otherwise be the folder ``/x`` on the host ``rel``)."""
    parsed = urlparse(url)
    path = unquote(parsed.path)
    if parsed.netloc not in ("", "localhost") or not path.startswith("/"):
        raise ValueError(
            f"storage URL {url!r} does not name an absolute folder: write file:///ABSOLUTE/PATH "
            "(three slashes), or the folder itself (./relative/path)"
        )
    if parsed.query or parsed.fragment or parsed.params:
        raise ValueError(
            f"storage URL {url!r} has a query or fragment: a file URL takes a path only"
        )
    return path
