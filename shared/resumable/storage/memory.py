"""An in-memory object store: for unit tests and for counting what a checkpoint writes."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from resumable.errors import ObjectNotFoundError, PreconditionFailedError
from resumable.storage.base import Buffer, WriteStats, join_buffers


class MemoryStore:
    """Objects in a dict. Same guarantees as the other stores, within one process."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.stats = WriteStats()
        self._objects: dict[str, tuple[bytes, int]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def read(self, name: str) -> bytes:
        return self.read_with_generation(name)[0]

    def read_buffer(self, name: str) -> bytearray:
        return bytearray(self.read(name))

    def read_with_generation(self, name: str) -> tuple[bytes, int]:
        with self._lock:
            try:
                data, generation = self._objects[name]
            except KeyError:
                raise ObjectNotFoundError(f"{self.url}/{name}") from None
            self.stats.objects_read += 1
            self.stats.bytes_read += len(data)
            return data, generation

    def write(
        self, name: str, data: Buffer | Sequence[Buffer], *, if_generation_match: int | None = None
    ) -> int:
        payload = b"".join(join_buffers(data))
        with self._lock:
            current = self._objects.get(name)
            if if_generation_match is not None:
                current_generation = current[1] if current else 0
                if current_generation != if_generation_match:
                    if current and current[0] == payload:
                        return current_generation  # our own bytes: a retried write
                    raise PreconditionFailedError(
                        f"{self.url}/{name}: generation is {current_generation}, "
                        f"expected {if_generation_match}"
                    )
            self._generation += 1
            self._objects[name] = (payload, self._generation)
            self.stats.objects_written += 1
            self.stats.bytes_written += len(payload)
            return self._generation

    def flush(self) -> None:
        """Nothing to do: memory is as durable as it gets."""

    def exists(self, name: str) -> bool:
        with self._lock:
            return name in self._objects

    def list(self, prefix: str = "") -> Iterator[str]:
        with self._lock:
            names = sorted(n for n in self._objects if n.startswith(prefix))
        return iter(names)

    def delete(self, name: str) -> None:
        with self._lock:
            self._objects.pop(name, None)

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            doomed = [n for n in self._objects if n.startswith(prefix)]
            for n in doomed:
                del self._objects[n]
        return len(doomed)

    def corrupt(self, name: str, data: bytes) -> None:
        """Replace an object's bytes behind the store's back (tests of corruption)."""
        with self._lock:
            _, generation = self._objects[name]
            self._objects[name] = (data, generation)
