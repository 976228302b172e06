"""Checkpoint surgery for tests: forge blobs, segments and manifests that pass the
integrity checks, so that what a test damages reaches the decoders behind them.

The formats are written out here on purpose (not imported from the library): a test of
the reader should not share the writer's idea of the format.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable
from typing import Any

import blake3
import orjson
import zstandard

from resumable.checkpoint._manifest import integrity_of
from resumable.errors import CorruptCheckpointError
from resumable.storage import ObjectStore

BLOB_HEADER = struct.Struct("<4sB3xQ")  # b"RBL1", codec (0 raw, 1 zstd), raw length
RAW, ZSTD = 0, 1
SEGMENT_HEADER = struct.Struct("<4sI")  # b"RSG1", header length


def blob_bytes(body: bytes, *, codec: int = RAW, raw_size: int | None = None) -> bytes:
    """A stored blob: header and body. ``raw_size`` defaults to the body's length."""
    size = len(body) if raw_size is None else raw_size
    return BLOB_HEADER.pack(b"RBL1", codec, size) + body


def address_of(content: bytes) -> str:
    return "b3-" + blake3.blake3(content).hexdigest()


def put_blob(store: ObjectStore, prefix: str, content: bytes, *, compress: bool = False) -> str:
    """Store ``content`` under its true content address; returns the address."""
    address = address_of(content)
    if compress:
        stored = blob_bytes(zstandard.compress(content), codec=ZSTD, raw_size=len(content))
    else:
        stored = blob_bytes(content)
    store.write(prefix + address, stored)
    return address


def zstd_frame_claiming(size: int) -> bytes:
    """A few bytes of valid zstd whose frame header claims ``size`` bytes of content."""
    chunker = zstandard.ZstdCompressor().chunker(size=size)
    return b"".join([*chunker.compress(b"a" * 10), *chunker.flush()])


def segment_bytes(header: bytes, data: bytes = b"") -> bytes:
    """A segment: its header (JSON bytes) then ``data``, laid out as the writer does."""
    start = SEGMENT_HEADER.size + len(header)
    return SEGMENT_HEADER.pack(b"RSG1", len(header)) + header + bytes(-start % 16) + data


def dump_json(document: Any) -> bytes:
    """JSON bytes of any document, nested deeper than orjson writes (254 levels) too."""
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 20_000))
        try:
            return json.dumps(document, separators=(",", ":")).encode()
        finally:
            sys.setrecursionlimit(limit)


def signed(document: dict[str, Any]) -> bytes:
    """``document`` with a valid integrity hash, as JSON (a document too deep to hash
    keeps a made-up one: no reader can check it either)."""
    try:
        document["integrity"] = integrity_of(document)
    except CorruptCheckpointError:
        document["integrity"] = "b3-unhashable"
    return dump_json(document)


def rewrite_json(store: ObjectStore, name: str, change: Callable[[dict[str, Any]], Any]) -> None:
    """Apply ``change`` to a stored manifest and store it back with a valid integrity hash."""
    document = orjson.loads(store.read(name))
    change(document)
    store.write(name, signed(document))
