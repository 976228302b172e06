"""A step's input context whose values are read and decoded when first used.

A serverless step gets its input as a :class:`LazyContext`: every key is there from the
start, but a value is read from storage only when the step first reads it (or anything
that needs every value, such as ``items()``, ``copy()`` or ``==``). A value the step never
read cannot have changed, so its entry is stored again as it was, without reading or
encoding it: what a step reads and writes follows what it uses and changes, not the size
of the context.

It is a ``dict``: item access, ``get``, ``in``, iteration over keys, ``update``, ``del``,
``dict(context)``, ``{**context}``, ``copy.deepcopy`` and ``json.dumps`` behave as on the
decoded dict. (A C extension that reads a dict's slots directly, such as ``orjson``, sees
values not read yet as an unserializable placeholder and says so: give it
``dict(context)``.) A value that cannot be read raises when it is read (a damaged one
:class:`~resumable.errors.CorruptCheckpointError`) and is noted in ``read_failure``.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from typing import Any

from resumable.checkpoint._blobs import BlobStore
from resumable.checkpoint._segments import Entry, decode_entry, entry_addresses, expect_checks


class _Unread:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<not read yet>"


_UNREAD = _Unread()


class LazyContext(dict[str, Any]):
    """A context decoded value by value, on first use."""

    def __init__(self, entries: Mapping[str, Entry], blobs: BlobStore) -> None:
        super().__init__(dict.fromkeys(entries, _UNREAD))
        self._entries = dict(entries)
        self._blobs = blobs
        # The first value that could not be read: the step ran on a broken input, whatever
        # it did with the error (its runner retries or fails the attempt accordingly).
        self.read_failure: Exception | None = None

    def _read(self, key: str) -> Any:
        value = dict.__getitem__(self, key)
        if value is _UNREAD:
            try:
                value = decode_entry(key, self._entries[key], self._blobs)
            except Exception as exc:
                self.read_failure = self.read_failure or exc
                raise
            dict.__setitem__(self, key, value)
        return value

    def _read_all(self) -> None:
        unread = [k for k, v in dict.items(self) if v is _UNREAD]
        entries = [self._entries[k] for k in unread]
        expect_checks(entries, self._blobs)
        self._blobs.prefetch(
            (a for e in entries for a in entry_addresses(e)),
            sizes={e["segment"]: e["bytes"] for e in entries if "segment" in e},
        )
        for key in unread:
            self._read(key)

    def unread_entries(self) -> dict[str, Entry]:
        """The entries of the values never read: unchanged, whatever the step did."""
        return {k: self._entries[k] for k, v in dict.items(self) if v is _UNREAD}

    def read_values(self) -> dict[str, Any]:
        """The values read (or set) so far, in the context's order."""
        return {k: v for k, v in dict.items(self) if v is not _UNREAD}

    # -- every way of reading a value ----------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._read(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self._read(key) if key in self else default

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self._read(key)
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, Any]:
        if self:
            self._read(next(reversed(self)))
        return dict.popitem(self)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key in self:
            return self._read(key)
        return dict.setdefault(self, key, default)

    def __iter__(self) -> Iterator[str]:
        # Defined so that dict(), {**context} and update() go through keys() and item
        # access (CPython copies a dict subclass's slots directly otherwise).
        return dict.__iter__(self)

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        self._read_all()
        return dict.values(self)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        self._read_all()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        self._read_all()
        return dict(dict.items(self))

    def __eq__(self, other: object) -> bool:
        self._read_all()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None

    def __repr__(self) -> str:
        self._read_all()
        return dict.__repr__(self)

    def __reduce_ex__(self, protocol: Any) -> Any:  # copy.deepcopy: a plain dict of values
        return (dict, (self.copy(),))

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        return dict(other) | self.copy()
