"""A Cloud Storage bucket (or a prefix in one) as an object store."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from resumable.errors import ObjectNotFoundError, PreconditionFailedError, StorageError
from resumable.storage.base import Buffer, WriteStats, join_buffers


def make_storage_client(project: str | None = None) -> Any:
    """A google-cloud-storage client; anonymous when ``STORAGE_EMULATOR_HOST`` is set."""
    from google.cloud import storage  # type: ignore[attr-defined,unused-ignore]

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "resumable-local"
        return storage.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    return storage.Client(project=project)


class GCSStore:
    """Objects in ``gs://bucket/prefix``.

    Writes use generation preconditions (``if_generation_match``), so a conditional write
    never overwrites an object another writer replaced, and content-addressed blobs are
    created only once. The client's default retry applies to conditional writes only,
    which makes them safe to retry.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        self.bucket_name = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"gs://{bucket}/{self.prefix}".rstrip("/")
        self.stats = WriteStats()
        self._client = client
        self._bucket: Any = None
        self._lock = threading.Lock()

    @property
    def bucket(self) -> Any:
        if self._bucket is None:
            with self._lock:
                if self._client is None:
                    self._client = make_storage_client()
                self._bucket = self._client.bucket(self.bucket_name)
        return self._bucket

    def _blob(self, name: str) -> Any:
        if not name or name.startswith("/") or any(p in (".", "..") for p in name.split("/")):
            raise StorageError(f"unsafe object name {name!r}")
        return self.bucket.blob(self.prefix + name)

    def read(self, name: str) -> bytes:
        return self.read_with_generation(name)[0]

    def read_buffer(self, name: str) -> bytearray:
        return bytearray(self.read(name))

    def read_with_generation(self, name: str) -> tuple[bytes, int]:
        from google.api_core import exceptions

        blob = self._blob(name)
        try:
            data: bytes = blob.download_as_bytes()
        except exceptions.NotFound:
            raise ObjectNotFoundError(f"{self.url}/{name}") from None
        with self._lock:
            self.stats.objects_read += 1
            self.stats.bytes_read += len(data)
        return data, int(blob.generation or 0)

    def write(
        self, name: str, data: Buffer | Sequence[Buffer], *, if_generation_match: int | None = None
    ) -> int:
        from google.api_core import exceptions

        parts = join_buffers(data)
        payload = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
        blob = self._blob(name)
        try:
            blob.upload_from_string(
                payload,
                content_type="application/octet-stream",
                if_generation_match=if_generation_match,
            )
        except exceptions.PreconditionFailed:
            # The client retries a conditional upload whose response was lost; the retry
            # then fails the condition that our own first attempt changed.
            held = self._holding(name, payload)
            if held is None:
                raise PreconditionFailedError(
                    f"{self.url}/{name}: precondition if_generation_match={if_generation_match} "
                    "failed"
                ) from None
            return held
        with self._lock:
            self.stats.objects_written += 1
            self.stats.bytes_written += len(payload)
        return int(blob.generation or 0)

    def _holding(self, name: str, payload: bytes) -> int | None:
        """The object's generation if it holds exactly ``payload``, else ``None``: its size
        and MD5 (metadata, no download) decide; our uploads are never composite, so they
        have an MD5."""
        current = self.bucket.get_blob(self.prefix + name)
        digest = base64.b64encode(hashlib.md5(payload, usedforsecurity=False).digest()).decode()
        if current is None or current.size != len(payload) or current.md5_hash != digest:
            return None
        return int(current.generation)

    def flush(self) -> None:
        """Nothing to do: an upload is durable once it returns."""

    def exists(self, name: str) -> bool:
        return bool(self._blob(name).exists())

    def list(self, prefix: str = "") -> Iterator[str]:
        full = self.prefix + prefix
        names = [b.name[len(self.prefix) :] for b in self.bucket.list_blobs(prefix=full)]
        return iter(sorted(names))

    def delete(self, name: str) -> None:
        from google.api_core import exceptions

        with contextlib.suppress(exceptions.NotFound):
            self._blob(name).delete()

    def delete_prefix(self, prefix: str) -> int:
        names = list(self.list(prefix))
        for name in names:
            self.delete(name)
        return len(names)
