"""Blobs: a damaged or forged blob is a CorruptCheckpointError before it can make the
reader allocate what its header or zstd frame claims."""

from __future__ import annotations

import random
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


# -- what a read checks a blob against ------------------------------------------------------


def _written(content: bytes) -> tuple[MemoryStore, str, dict[str, str]]:
    """A stored blob, its address, and the checks a manifest entry would give for it."""
    store = MemoryStore()
    writer = BlobStore(store, "b/")
    address = writer.put([memoryview(content)])
    writer.wait()
    checks = writer.checks([address])
    assert checks is not None and len(checks[address]) == 32
    return store, address, checks


def _damage(store: MemoryStore, address: str) -> None:
    stored = bytearray(store.read("b/" + address))
    stored[-1] ^= 1  # one bit of the (raw) body
    store.write("b/" + address, bytes(stored))


@pytest.mark.parametrize("vouched", [True, False], ids=["fingerprint", "address"])
def test_a_damaged_blob_is_refused_whether_a_manifest_vouches_for_it_or_not(vouched: bool) -> None:
    content = random.Random(7).randbytes(100_000)  # incompressible: stored raw
    store, address, checks = _written(content)
    reader = BlobStore(store, "b/")
    if vouched:
        reader.expect(checks)
    assert bytes(reader.get(address, len(content))) == content
    _damage(store, address)
    reader = BlobStore(store, "b/")
    if vouched:
        reader.expect(checks)
    with pytest.raises(CorruptCheckpointError, match="does not match its hash"):
        reader.get(address, len(content))


def test_a_vouched_blob_is_checked_by_its_fingerprint_not_its_blake3_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import resumable.checkpoint._blobs as blobs_module

    store, address, checks = _written(b"\x07" * 9000)
    monkeypatch.setattr(blobs_module, "address_of", lambda parts: pytest.fail("hashed"))
    reader = BlobStore(store, "b/")
    reader.expect(checks)
    assert bytes(reader.get(address)) == b"\x07" * 9000


def test_a_wrong_fingerprint_in_a_manifest_refuses_an_intact_blob() -> None:
    store, address, _checks = _written(b"\x01" * 9000)
    reader = BlobStore(store, "b/")
    reader.expect({address: "00" * 16})
    with pytest.raises(CorruptCheckpointError, match="does not match its hash"):
        reader.get(address)


@pytest.mark.parametrize("text", ["", "zz" * 16, "00" * 15, "00" * 17])
def test_a_malformed_fingerprint_is_a_corrupt_checkpoint(text: str) -> None:
    with pytest.raises(CorruptCheckpointError, match="not 32 hex digits"):
        BlobStore(MemoryStore(), "b/").expect({ADDRESS: text})


def test_checks_are_given_only_for_blobs_this_store_saw_whole() -> None:
    store, address, _checks = _written(b"\x02" * 9000)
    fresh = BlobStore(store, "b/")
    assert fresh.checks([address]) is None  # never written nor read here
    fresh.get(address)
    assert fresh.checks([address]) == _checks
