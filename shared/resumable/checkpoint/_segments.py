"""How a whole context is stored: one manifest entry per top-level key.

A key whose encoded value is small and holds no binary parts is stored *inline* in the
manifest (``{"v": node}``). Any other key becomes a *segment*: a content-addressed blob
holding the value's JSON node followed by its small binary parts, 16-byte aligned so that
numpy arrays decode as aligned views without a copy. Large binary leaves inside the value
are blobs of their own (``codec.LARGE_BINARY``), listed in the entry so that validation and
garbage collection never need to open the segment.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from pydantic import AfterValidator, ConfigDict, Field, with_config
from typing_extensions import TypedDict

from resumable.checkpoint._blobs import BlobStore
from resumable.checkpoint._codec import LARGE_BINARY, EncodedValue, Encoder
from resumable.checkpoint._decoder import Decoder
from resumable.errors import CorruptCheckpointError, EncodingError

if TYPE_CHECKING:
    from resumable.checkpoint._reuse import EntryCache, Witness

INLINE_LIMIT = 4 * 1024
_SEGMENT_MAGIC = b"RSG1"
_SEGMENT_HEADER = struct.Struct("<4sI")
_ALIGN = 16
_PADDING = bytes(_ALIGN)


@with_config(ConfigDict(strict=True, extra="allow"))  # as manifests: newer fields survive
class _EntryFields(TypedDict, total=False):
    v: Any  # the encoded value, inline
    segment: str  # or the address of its segment blob
    bytes: Annotated[int, Field(ge=0)]  # the segment's size
    blobs: list[str]  # the large blobs the value refers to
    x: dict[str, str]  # the XXH3-128 (hex) of each blob above, which reads check


def _one_source(entry: _EntryFields) -> _EntryFields:
    if ("v" in entry) == ("segment" in entry):
        raise ValueError("an entry holds either an inline value 'v' or a 'segment'")
    if "segment" in entry and "bytes" not in entry:
        raise ValueError("a segment entry gives its size in 'bytes'")
    return entry


# One context key in a manifest. Manifests type their entries with it, so a malformed
# entry fails validation (a CorruptCheckpointError) before anything reads it.
Entry = Annotated[_EntryFields, AfterValidator(_one_source)]


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def encode_context(
    context: Mapping[str, Any],
    blobs: BlobStore,
    *,
    large_binary: int = LARGE_BINARY,
    cache: EntryCache | None = None,
) -> dict[str, Entry]:
    """Encode every key of ``context``; new blobs are written through ``blobs``.

    With ``cache``, a value that provably still holds what it held when last encoded
    keeps its entry (see ``_reuse``); the cache learns the new entries once their blobs
    are stored.
    """
    encoder = Encoder(lambda buffer: blobs.put([buffer]), large_binary=large_binary)
    entries: dict[str, Entry] = {}
    learned: list[tuple[str, Witness]] = []
    try:
        _encode_into(entries, context, encoder, blobs, cache, learned)
    except BaseException:
        with contextlib.suppress(Exception):
            blobs.wait()  # no write of ours outlives the call; the encoding error wins
        raise
    blobs.wait()  # every blob an entry names is stored before the entries are used
    if cache is not None:
        for key, witness in learned:
            cache.store(key, witness, entries[key], large_binary)
    return entries


def _encode_into(
    entries: dict[str, Entry],
    context: Mapping[str, Any],
    encoder: Encoder,
    blobs: BlobStore,
    cache: EntryCache | None,
    learned: list[tuple[str, Witness]],
) -> None:
    for key in context:
        if type(key) is not str:
            raise EncodingError(
                f"<key {key!r}>", type(key).__name__, "context keys must be strings"
            )
    # Every value is walked first, its bytes fingerprinted in the background meanwhile.
    started = {k: cache.start(v) for k, v in context.items()} if cache is not None else {}
    if cache is not None:
        cache.help(started.values())
    for key, value in context.items():
        if cache is not None:
            reused, witness = cache.finish(key, started.pop(key), encoder.large_binary)
            if reused is not None:
                entries[key] = reused
                continue
            learned.append((key, witness))
        encoded = encoder.encode(value, f"context[{key!r}]")
        entries[key] = _entry(encoded, blobs)


def _entry(encoded: EncodedValue, blobs: BlobStore) -> Entry:
    entry = _located(encoded, blobs)
    checks = blobs.checks(entry_addresses(entry))
    if checks:
        entry["x"] = checks
    return entry


def _located(encoded: EncodedValue, blobs: BlobStore) -> Entry:
    if not encoded.parts and len(orjson.dumps(encoded.node)) <= INLINE_LIMIT:
        inline: Entry = {"v": encoded.node}
        if encoded.blobs:  # listed, so validation and cleanup never need to parse the value
            inline["blobs"] = sorted(set(encoded.blobs))
        return inline
    table: list[list[int]] = []
    offset = 0
    for part in encoded.parts:
        table.append([offset, part.nbytes])
        offset += part.nbytes + _pad(part.nbytes)
    header = orjson.dumps({"v": encoded.node, "parts": table})
    pieces: list[memoryview] = [
        memoryview(_SEGMENT_HEADER.pack(_SEGMENT_MAGIC, len(header))),
        memoryview(header),
        memoryview(_PADDING[: _pad(_SEGMENT_HEADER.size + len(header))]),
    ]
    for part in encoded.parts:
        pieces.append(part)
        if _pad(part.nbytes):
            pieces.append(memoryview(_PADDING[: _pad(part.nbytes)]))
    address = blobs.put(pieces)
    entry: Entry = {"segment": address, "bytes": sum(p.nbytes for p in pieces)}
    if encoded.blobs:
        entry["blobs"] = sorted(set(encoded.blobs))
    return entry


def entry_addresses(entry: Entry) -> list[str]:
    """The blob addresses an entry refers to."""
    if "segment" not in entry:
        return list(entry.get("blobs", []))
    return [entry["segment"], *entry.get("blobs", [])]


def expect_checks(entries: Iterable[Entry], blobs: BlobStore) -> None:
    """Tell ``blobs`` the fingerprints these entries give for their blobs (before any of
    them is read, prefetched or not)."""
    checks: dict[str, str] = {}
    for entry in entries:
        checks.update(entry.get("x") or {})
    if checks:
        blobs.expect(checks)


def decode_entry(key: str, entry: Entry, blobs: BlobStore) -> Any:
    expect_checks([entry], blobs)
    return _decode_checked(key, entry, blobs)


def _decode_checked(key: str, entry: Entry, blobs: BlobStore) -> Any:
    """:func:`decode_entry` once ``blobs`` knows the entry's fingerprints."""
    if "v" in entry:
        return Decoder([], blobs.get).decode(entry["v"])
    if "segment" not in entry:
        raise CorruptCheckpointError(f"context key {key!r} has neither a value nor a segment")
    segment = blobs.get(entry["segment"], entry.get("bytes"))
    try:
        node, parts = _split_segment(segment)
    except _MalformedSegment as exc:
        raise CorruptCheckpointError(
            f"segment of context key {key!r} is malformed: {exc}"
        ) from None
    return Decoder(parts, blobs.get).decode(node)


class _MalformedSegment(Exception):
    pass


def _split_segment(segment: memoryview) -> tuple[Any, list[memoryview]]:
    """A segment's value node and the parts it lays out, each checked to lie inside it."""
    try:
        magic, header_len = _SEGMENT_HEADER.unpack_from(segment)
    except struct.error:
        raise _MalformedSegment(f"{segment.nbytes} bytes is too short") from None
    start = _SEGMENT_HEADER.size
    if magic != _SEGMENT_MAGIC or start + header_len > segment.nbytes:
        raise _MalformedSegment("no segment header")
    try:
        header = orjson.loads(segment[start : start + header_len])
    except orjson.JSONDecodeError as exc:
        raise _MalformedSegment(f"its header is not JSON: {exc}") from None
    if (
        not isinstance(header, dict)
        or "v" not in header
        or not isinstance(header.get("parts"), list)
    ):
        raise _MalformedSegment("its header is not {'v': ..., 'parts': [...]}")
    base = start + header_len + _pad(start + header_len)
    parts = []
    for item in header["parts"]:
        if not (isinstance(item, list) and len(item) == 2 and all(type(n) is int for n in item)):
            raise _MalformedSegment(f"part {item!r} is not [offset, size]")
        offset, size = item
        if offset < 0 or size < 0 or base + offset + size > segment.nbytes:
            raise _MalformedSegment(f"part {item!r} lies outside its {segment.nbytes} bytes")
        parts.append(segment[base + offset : base + offset + size])
    return header["v"], parts


def decode_context(entries: Mapping[str, Entry], blobs: BlobStore) -> dict[str, Any]:
    # Every blob is known up front (entries list them): read them while decoding.
    expect_checks(entries.values(), blobs)
    blobs.prefetch(
        (a for entry in entries.values() for a in entry_addresses(entry)),
        sizes={e["segment"]: e["bytes"] for e in entries.values() if "segment" in e},
    )
    return {key: _decode_checked(key, entry, blobs) for key, entry in entries.items()}
