"""Blobs: a damaged or forged blob is a CorruptCheckpointError before it can make the
reader allocate what its header or zstd frame claims."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest
import zstandard

from resumable import CorruptCheckpointError
from resumable.checkpoint._blobs import BlobStore
from resumable.storage import MemoryStore
from tests.support.forge import ZSTD, blob_bytes, put_blob, zstd_frame_claiming

MiB = 1024 * 1024
ADDRESS = "b3-" + "0" * 64


def read_forged(stored: bytes, size: int | None = None) -> None:
    store = MemoryStore()
    store.write("b/" + ADDRESS, stored)
    BlobStore(store, "b/").get(ADDRESS, size)


def peak_bytes_of(action: Callable[[], None]) -> int:
    """The peak of Python allocations while ``action`` fails with a corrupt checkpoint."""
    tracemalloc.start()
    try:
        with pytest.raises(CorruptCheckpointError):
            action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_16kb_blob_whose_header_claims_a_gib_allocates_what_it_holds_not_the_claim() -> None:
    body = zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 16_000)
    stored = blob_bytes(body, codec=ZSTD, raw_size=1 << 30)
    assert peak_bytes_of(lambda: read_forged(stored)) < 8 * MiB


def test_a_zstd_frame_claiming_64_gib_in_a_few_bytes_is_a_corrupt_blob_not_a_memory_error() -> None:
    frame = zstd_frame_claiming(64 << 30)
    stored = blob_bytes(frame, codec=ZSTD, raw_size=64 << 30)
    assert len(stored) < 64
    assert peak_bytes_of(lambda: read_forged(stored)) < 8 * MiB


def test_a_blob_decompressing_to_more_than_its_header_says_stops_at_the_header() -> None:
    body = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(64 * MiB))
    stored = blob_bytes(body, codec=ZSTD, raw_size=1000)
    with pytest.raises(CorruptCheckpointError, match="more than the 1000 bytes"):
        read_forged(stored)
    assert peak_bytes_of(lambda: read_forged(stored)) < 8 * MiB


def test_a_blob_of_another_size_than_its_reader_expects_is_not_decompressed() -> None:
    stored = blob_bytes(zstd_frame_claiming(1 << 30), codec=ZSTD, raw_size=1 << 30)
    with pytest.raises(CorruptCheckpointError, match="claims 1073741824 bytes where 10 are"):
        read_forged(stored, size=10)


def test_a_prefetched_blob_is_decompressed_only_once_its_reader_says_how_large() -> None:
    store = MemoryStore()
    address = put_blob(store, "b/", b"0123456789", compress=True)
    blobs = BlobStore(store, "b/")
    blobs.prefetch([address])
    with pytest.raises(CorruptCheckpointError, match="claims 10 bytes where 11 are expected"):
        blobs.get(address, 11)
    assert bytes(BlobStore(store, "b/").get(address, 10)) == b"0123456789"
