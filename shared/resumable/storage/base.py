"""The object-store interface the checkpoint store is written against."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Buffer = bytes | bytearray | memoryview


@dataclass
class WriteStats:
    """Counters of what a store has written and read: tests and benchmarks count bytes."""

    objects_written: int = 0
    bytes_written: int = 0
    objects_read: int = 0
    bytes_read: int = 0


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of immutable-or-replaced objects, addressed by ``/``-separated names.

    Writes are atomic: a reader sees the old object or the new one, never a torn one.
    ``if_generation_match`` makes a write conditional: ``0`` means "only if absent", any
    other value "only if the object's current generation is this one"; a lost condition
    raises :class:`~resumable.errors.PreconditionFailedError` — unless the object already
    holds exactly the bytes being written: then the write succeeds and returns that
    object's generation. A client retries a conditional write whose response was lost, and
    the retry must not read as another writer having won. Every replace gives the object a
    new generation.
    """

    url: str
    stats: WriteStats

    def read(self, name: str) -> bytes:
        """The object's bytes; :class:`~resumable.errors.ObjectNotFoundError` if absent."""
        ...

    def read_buffer(self, name: str) -> bytearray:
        """The object's bytes in a writable buffer (numpy arrays are views into it)."""
        ...

    def read_with_generation(self, name: str) -> tuple[bytes, int]:
        """The object's bytes and its generation, for a later conditional write."""
        ...

    def write(
        self, name: str, data: Buffer | Sequence[Buffer], *, if_generation_match: int | None = None
    ) -> int:
        """Write the object atomically (``data`` may be a list of buffers, written in order).

        Returns the new generation.
        """
        ...

    def flush(self) -> None:
        """Make every object written so far durable (a no-op where writes already are)."""
        ...

    def exists(self, name: str) -> bool:
        """Whether the object exists."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Names under ``prefix``, in lexicographic order."""
        ...

    def delete(self, name: str) -> None:
        """Delete the object; deleting a missing object is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many were deleted."""
        ...


def join_buffers(data: Buffer | Sequence[Buffer]) -> list[memoryview]:
    """Normalise ``data`` into a list of byte-format memoryviews."""
    if isinstance(data, bytes | bytearray | memoryview):
        parts: Sequence[Buffer] = [data]
    else:
        parts = data
    return [
        memoryview(p).cast("B") if memoryview(p).format != "B" else memoryview(p) for p in parts
    ]


def total_size(parts: Sequence[memoryview]) -> int:
    """The number of bytes of ``parts`` together."""
    return sum(p.nbytes for p in parts)
