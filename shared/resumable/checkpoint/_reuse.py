"""Reusing a value's entry while the value provably still holds what was encoded.

A checkpoint encodes every key of the context, so that a value a step changed in place
without returning it is still saved. Most values did not change: re-encoding them walks
every array, builds nodes and segment layouts and fingerprints whole segments, only to find
the entry the last checkpoint already had.

A *witness* of a value is a flat list describing what its encoding depends on: for every
container its kind and length, for every immutable leaf (``str``, ``int``, ``float``,
``bytes``, ``datetime``, a numpy scalar...) the leaf object's identity, and for every numpy
array its identity, geometry (shape, strides, dtype, writeable flag) and an XXH3
fingerprint of its content. The objects are held by the cache, so an identity cannot be
reused by another object while its witness is kept. Equal witnesses mean equal encodings,
so the cached entry is reused. What cannot be witnessed cheaply and exactly (values of a
registered codec, subclasses of the built-in types) is never reused: it is encoded again
every time, as before.

The witness never trusts that an array was left alone: a writeable array's bytes are
fingerprinted every time (an in-place change through any view, ``np.copyto`` or a writeable
flag flipped back is seen). Only an array that cannot change at all is not read again: one
that is not writeable and whose memory belongs to an immutable ``bytes`` object.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import xxhash

from resumable.checkpoint._codec import PATH_CLASSES
from resumable.checkpoint._dtypes import numpy_or_none
from resumable.checkpoint._pools import SharedPool
from resumable.checkpoint._segments import Entry

# Markers open a container in a witness; object identities (addresses) are never this small.
_LIST, _DICT, _TUPLE, _SET, _ARRAY, _BYTEARRAY = 1, 2, 3, 4, 5, 6

_IMMUTABLE: frozenset[type] = frozenset(
    {
        str,
        int,
        float,
        bool,
        type(None),
        bytes,
        complex,
        dt.datetime,
        dt.date,
        dt.time,
        dt.timedelta,
        uuid.UUID,
        Decimal,
        *PATH_CLASSES,
    }
)


@dataclass
class _Witness:
    facts: list[Any]  # what the encoding depends on: identities, lengths, geometry, digest
    keep: list[Any]  # the objects whose identities it holds, kept alive with it


Witness = _Witness | None


@dataclass
class Started:
    """A value walked, the fingerprint of its bytes under way."""

    facts: list[Any]
    keep: list[Any]
    digest: Future[bytes] | None
    views: list[Any]  # what the digest reads (until it is computed)


@dataclass
class _Cached:
    witness: list[Any]
    keep: list[Any]  # the objects whose identities the witness holds
    entry: Entry
    large_binary: int


# The thread that fingerprints values' bytes while the caller walks the next value (XXH3
# releases the GIL: the walk and the hashing run on two cores).
_hasher = SharedPool(1, "resumable-witness")


class EntryCache:
    """The last entry encoded for each key of one context, with its witness.

    Not thread-safe: one context, encoded by one thread at a time (the run's lock).
    ``background=False`` fingerprints on the caller's thread (the simulation schedules
    every thread itself).
    """

    def __init__(self, *, background: bool = True) -> None:
        self._cached: dict[str, _Cached] = {}
        self._np = numpy_or_none()
        self._background = background
        self.reused = 0  # entries reused so far (for benchmarks and tests)

    def start(self, value: Any) -> Started | None:
        """Walk ``value`` and start fingerprinting its bytes; ``None`` if it cannot be
        witnessed (it is then always encoded)."""
        facts: list[Any] = []
        keep: list[Any] = []
        views: list[Any] = []
        try:
            witnessable = self._walk(value, facts, keep, views)
        except RecursionError:
            witnessable = False
        if not witnessable:
            return None
        if not views:
            return Started(facts, keep, None, [])
        if self._background:
            return Started(facts, keep, _hasher().submit(_digest, views), views)
        return Started(facts, keep, _done(_digest(views)), [])

    @staticmethod
    def help(started: Iterable[Started | None]) -> None:
        """Fingerprint on this thread, from the last value back, what the hashing thread
        has not begun (it works from the first value on): two cores hash one context."""
        for walked in reversed(list(started)):
            if walked is None or walked.digest is None or walked.digest.done():
                continue
            if not walked.digest.cancel():  # the hashing thread got this far
                return
            walked.digest = _done(_digest(walked.views))

    def finish(
        self, key: str, started: Started | None, large_binary: int
    ) -> tuple[Entry | None, Witness]:
        """The cached entry of ``key`` if the value ``started`` walked still holds what that
        entry encodes; else ``None`` and the value's witness, for :meth:`store` once the
        value is encoded and its blobs are stored."""
        if started is None:
            self._cached.pop(key, None)
            return None, None
        facts = started.facts
        if started.digest is not None:
            try:
                facts.append(started.digest.result())
            except Exception:  # a buffer XXH3 cannot read: encoded, never reused
                self._cached.pop(key, None)
                return None, None
        cached = self._cached.get(key)
        if cached is not None and cached.large_binary == large_binary and cached.witness == facts:
            self.reused += 1
            return cached.entry, None
        return None, _Witness(facts, started.keep)

    def learn(
        self, values: Mapping[str, Any], entries: Mapping[str, Entry], large_binary: int
    ) -> None:
        """Values just decoded from ``entries``: the first checkpoint after a resume then
        reuses their entries instead of encoding the whole context again."""
        started = {k: self.start(v) for k, v in values.items()}
        self.help(started.values())
        for key, walked in started.items():
            entry, witness = self.finish(key, walked, large_binary)
            if entry is None and witness is not None:
                self.store(key, witness, entries[key], large_binary)

    def store(self, key: str, witness: Witness, entry: Entry, large_binary: int) -> None:
        if witness is not None:
            self._cached[key] = _Cached(witness.facts, witness.keep, entry, large_binary)

    def retain(self, keys: Collection[str]) -> None:
        """Forget keys not in ``keys``: the context no longer holds their values."""
        for key in [k for k in self._cached if k not in keys]:
            del self._cached[key]

    def _walk(self, value: Any, out: list[Any], keep: list[Any], views: list[Any]) -> bool:
        """Append ``value``'s witness; ``False`` if it cannot be witnessed."""
        cls = type(value)
        if cls in _IMMUTABLE:
            out.append(id(value))
            keep.append(value)
            return True
        if cls is dict:
            out.append(_DICT)
            out.append(len(value))
            return self._items([x for pair in value.items() for x in pair], out, keep, views)
        if cls is list or cls is tuple:
            out.append(_LIST if cls is list else _TUPLE)
            out.append(len(value))
            return self._items(value, out, keep, views)
        if cls is set or cls is frozenset:
            out.append(_SET)
            out.append(cls is set)
            out.append(len(value))
            return self._items(list(value), out, keep, views)
        if cls is bytearray:
            out.append(_BYTEARRAY)
            out.append(len(value))
            views.append(bytes(value))  # a copy: a view would block resizing it
            return True
        np = self._np
        if np is not None and cls is np.ndarray:
            self._array(value, out, keep, views)
            return True
        if np is not None and isinstance(value, np.generic) and cls.__module__ == "numpy":
            out.append(id(value))
            keep.append(value)
            return True
        return False

    def _items(
        self, items: Sequence[Any], out: list[Any], keep: list[Any], views: list[Any]
    ) -> bool:
        walk, array = self._walk, self._array
        ndarray = self._np.ndarray if self._np is not None else None
        for item in items:  # arrays straight to _array: most items of large values are
            if type(item) is ndarray:
                array(item, out, keep, views)
            elif not walk(item, out, keep, views):
                return False
        return True

    def _array(self, array: Any, out: list[Any], keep: list[Any], views: list[Any]) -> None:
        flags = array.flags
        writeable = flags.writeable
        dtype = array.dtype
        # The dtype by identity: equal dtypes may still be stored differently.
        out += (_ARRAY, id(array), (array.shape, array.strides, id(dtype), writeable))
        keep += (array, dtype)
        if not array.size or (not writeable and _immutable_memory(array, self._np)):
            return
        if flags.c_contiguous:
            views.append(array)  # XXH3 reads a C-contiguous array's buffer, any dtype
        elif flags.f_contiguous:
            views.append(array.T)
        else:
            # A flipped, transposed or strided view. It lies in the memory of its base, at
            # an offset fixed for this pair of objects (neither's data can be rebound):
            # when the base is not much larger, its bytes are the fingerprint, not a copy.
            np = self._np
            base = array.base
            if (
                type(base) is np.ndarray
                and base.flags.c_contiguous
                and base.nbytes <= 2 * array.nbytes
            ):
                out.append(id(base))
                keep.append(base)
                views.append(base)
            else:
                views.append(np.ascontiguousarray(array))


def _immutable_memory(array: Any, np: Any) -> bool:
    """Whether nothing can change the array's bytes: read-only (numpy refuses to make it
    writeable again) over the memory of a ``bytes`` object."""
    base = array.base
    while type(base) is np.ndarray:
        base = base.base
    if type(base) is memoryview:
        base = base.obj
    return type(base) is bytes


def _done(digest: bytes) -> Future[bytes]:
    done: Future[bytes] = Future()
    done.set_result(digest)
    return done


def _digest(views: list[Any]) -> bytes:
    """One XXH3 of the views' bytes in order (their lengths are in the witness)."""
    hasher = xxhash.xxh3_128()
    for view in views:
        hasher.update(view)
    return hasher.digest()
