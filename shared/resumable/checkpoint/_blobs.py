"""Content-addressed, compressed blobs: write once, verify on every read.

A blob's address is the BLAKE3 hash of its uncompressed content, so the same bytes are
stored once however many checkpoints refer to them. Before hashing, a 128-bit XXH3
fingerprint (tens of GB/s) looks the content up among blobs this process already wrote or
read: an unchanged value costs a fingerprint, not a hash, a compression or an upload.

On disk a blob is a 16-byte header (magic, codec, raw length) and its body. The body is
zstd-compressed only when a sample shows it pays: incompressible data (noise, already
encoded media) is stored raw, so checkpoints stay close to the disk's speed.

Every read is verified. A manifest entry records the XXH3-128 of each blob it refers to
(``x``; the manifest's integrity hash covers it): such a blob is checked against it, at
memory speed. A blob no entry vouches for this way (older checkpoints) is checked against
its address, a BLAKE3 hash. Either check catches damage; neither is a signature (anyone
who may write the bucket may write a manifest too).

Reading never trusts a length it has not checked: a body is decompressed in chunks, so
memory follows what the frame really yields, never what a damaged header or frame claims,
and a blob whose claimed size differs from what its reader expects is not decompressed.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import blake3
import xxhash
import zstandard

from resumable.checkpoint._pools import SharedPool
from resumable.errors import CorruptCheckpointError, ObjectNotFoundError, PreconditionFailedError
from resumable.storage.base import ObjectStore

_MAGIC = b"RBL1"
_HEADER = struct.Struct("<4sB3xQ")  # magic, codec, padding, raw length: 16 bytes
_RAW, _ZSTD = 0, 1
_SAMPLE = 64 * 1024
_SAMPLE_SLICES = 16
_SMALL = 4 * 1024
_PARALLEL_HASH = 4 * 1024 * 1024
_INFLATE_CHUNK = 1024 * 1024
ADDRESS_PREFIX = "b3-"


def _sample(parts: Sequence[memoryview]) -> bytes:
    """Small slices spread evenly over the whole content: their compressibility estimates
    the content's, in proportion (a JSON header in front of pixel data weighs what it
    weighs, not the whole sample)."""
    size = sum(p.nbytes for p in parts)
    if size <= _SAMPLE:
        return b"".join(parts)
    step = size // _SAMPLE_SLICES
    wanted = [i * step for i in range(_SAMPLE_SLICES)]
    slices = []
    base = 0
    for part in parts:
        while wanted and wanted[0] < base + part.nbytes:
            offset = wanted.pop(0) - base
            slices.append(part[offset : offset + _SAMPLE // _SAMPLE_SLICES])
        base += part.nbytes
    return b"".join(slices)


def address_of(parts: Sequence[memoryview]) -> str:
    size = sum(p.nbytes for p in parts)
    # Large contents are hashed on all cores (BLAKE3 is a tree hash: same digest).
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO if size >= _PARALLEL_HASH else 1)
    for part in parts:
        hasher.update(part)
    return ADDRESS_PREFIX + hasher.hexdigest()


def fingerprint_of(parts: Iterable[memoryview]) -> bytes:
    hasher = xxhash.xxh3_128()
    for part in parts:
        hasher.update(part)
    return hasher.digest()


# The process's blob workers: two, so that one compresses or hashes while another waits
# on its fsync, upload or read.
_writer = SharedPool(2, "resumable-blob-writer")


class BlobStore:
    """Blobs of one run under ``prefix`` in an object store. Thread-safe."""

    def __init__(
        self, store: ObjectStore, prefix: str, *, compression_level: int = 3, verify: bool = True
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.compression_level = compression_level
        self.verify = verify
        self._by_fingerprint: dict[bytes, str] = {}
        self._fingerprints: dict[str, bytes] = {}  # address -> XXH3 of blobs seen whole
        self._expected: dict[str, bytes] = {}  # address -> XXH3 a manifest vouches for
        self._present: set[str] = set()
        self._writing: dict[str, Future[None]] = {}
        self._fetching: dict[str, Future[memoryview | _Stored]] = {}
        self._lock = threading.Lock()
        self.bytes_uploaded = 0
        # A store may ask for its I/O to stay on the caller's thread (the simulation
        # schedules every I/O call itself).
        self._background = getattr(store, "background_io", True)

    def name(self, address: str) -> str:
        if not address.startswith(ADDRESS_PREFIX) or not address[3:].isalnum():
            raise CorruptCheckpointError(f"invalid blob address {address!r}")
        return f"{self.prefix}{address}"

    def known(self, addresses: Iterable[str]) -> None:
        """Record blobs known to exist (referenced by a loaded checkpoint)."""
        with self._lock:
            self._present.update(addresses)

    def expect(self, checks: Mapping[str, str]) -> None:
        """Record the XXH3 fingerprints (hex) a manifest entry gives for blobs it refers
        to: reading one of them checks it against that instead of its BLAKE3 address."""
        parsed = {}
        for address, text in checks.items():
            try:
                fingerprint = bytes.fromhex(text)
            except (TypeError, ValueError):
                fingerprint = b""
            if len(fingerprint) != 16 or not isinstance(address, str):
                raise CorruptCheckpointError(
                    f"the fingerprint of blob {address!r} is not 32 hex digits: {text!r}"
                )
            parsed[address] = fingerprint
        with self._lock:
            self._expected.update(parsed)

    def checks(self, addresses: Iterable[str]) -> dict[str, str] | None:
        """The fingerprints (hex) of these blobs, for a manifest entry; ``None`` unless
        every one was written or read whole by this store."""
        with self._lock:
            found = {a: self._fingerprints.get(a) for a in addresses}
        if not found or any(f is None for f in found.values()):
            return None
        return {a: f.hex() for a, f in found.items() if f is not None}

    def put(self, parts: Sequence[memoryview]) -> str:
        """Store the concatenation of ``parts`` unless already stored; return its address."""
        fingerprint = fingerprint_of(parts)
        with self._lock:
            address = self._by_fingerprint.get(fingerprint)
            if address is not None and address in self._present:
                self._fingerprints[address] = fingerprint
                return address
        address = address_of(parts)
        with self._lock:
            self._by_fingerprint[fingerprint] = address
            self._fingerprints[address] = fingerprint
            if address in self._present or address in self._writing:
                return address
            # Compressed and written in the background while the caller encodes the next
            # values; wait() is the barrier (encode_context calls it before returning).
            if self._background:
                self._writing[address] = _writer().submit(self._write, address, list(parts))
                return address
            self._writing[address] = Future()
        self._run_inline(self._writing[address], self._write, address, list(parts))
        return address

    @staticmethod
    def _run_inline(future: Future[Any], function: Callable[..., Any], *args: Any) -> None:
        """Run ``function`` now, its outcome in ``future``; the future completes whatever
        happens, so that :meth:`wait` never blocks on an interrupted write."""
        try:
            future.set_result(function(*args))
        except Exception as exc:
            future.set_exception(exc)
        except BaseException as exc:  # the process is going down: complete, then go on
            future.set_exception(exc)
            raise

    def _write(self, address: str, parts: list[memoryview]) -> None:
        body, codec = self._compress(parts)
        raw_size = sum(p.nbytes for p in parts)
        header = _HEADER.pack(_MAGIC, codec, raw_size)
        try:
            self.store.write(self.name(address), [header, *body], if_generation_match=0)
            uploaded = len(header) + sum(memoryview(b).nbytes for b in body)
        except PreconditionFailedError:
            # Stored before, compressed otherwise (the same bytes would have been accepted),
            # or damaged, which readers detect by the hash.
            uploaded = 0
        with self._lock:
            self._present.add(address)
            self.bytes_uploaded += uploaded

    def wait(self) -> None:
        """Block until every blob put so far is stored; raise the first write error."""
        with self._lock:
            pending, self._writing = self._writing, {}
        failures = []
        for future in pending.values():
            try:
                future.result()
            except Exception as exc:
                failures.append(exc)
        if failures:
            raise failures[0]

    def _compress(self, parts: Sequence[memoryview]) -> tuple[list[bytes | memoryview], int]:
        size = sum(p.nbytes for p in parts)
        if size < _SMALL or self.compression_level <= 0:
            return list(parts), _RAW
        compressor = zstandard.ZstdCompressor(level=self.compression_level)
        sample = _sample(parts)
        if len(compressor.compress(sample)) > 0.9 * len(sample):
            return list(parts), _RAW
        chunker = compressor.chunker(size=size, chunk_size=1 << 20)
        out: list[bytes | memoryview] = []
        for part in parts:
            out.extend(chunker.compress(part))
        out.extend(chunker.finish())  # type: ignore[no-untyped-call]
        return out, _ZSTD

    def prefetch(self, addresses: Iterable[str], sizes: Mapping[str, int] | None = None) -> None:
        """Start reading these blobs in the background (two at a time); :meth:`get` then
        waits for them instead of reading them itself. A compressed blob is decompressed
        there only if ``sizes`` gives its size, else once :meth:`get` is told it: never to
        the size its own header claims."""
        if not self._background:
            return  # read on demand, by the caller
        known = sizes or {}
        with self._lock:
            for address in addresses:
                if address not in self._fetching:
                    self._fetching[address] = _writer().submit(
                        self._prefetched, address, known.get(address)
                    )

    def get(self, address: str, size: int | None = None) -> memoryview:
        """The blob's content as a writable buffer, verified against its address.

        ``size`` is the content's length when the caller knows it (a manifest's segment
        size, an array's shape and dtype): a blob of another size is damaged, and is not
        decompressed.
        """
        with self._lock:
            future = self._fetching.pop(address, None)
        fetched = future.result() if future is not None else self._load(address)
        content = self._open(address, fetched, size) if isinstance(fetched, _Stored) else fetched
        if size is not None and content.nbytes != size:
            raise CorruptCheckpointError(
                f"blob {address} holds {content.nbytes} bytes where {size} are expected"
            )
        return content

    def _prefetched(self, address: str, size: int | None) -> memoryview | _Stored:
        stored = self._load(address)
        if stored.codec == _ZSTD and size is None:
            return stored
        return self._open(address, stored, size)

    def _load(self, address: str) -> _Stored:
        try:
            data = self.store.read_buffer(self.name(address))
        except ObjectNotFoundError:
            raise CorruptCheckpointError(
                f"blob {address} is missing from {self.store.url}"
            ) from None
        if len(data) < _HEADER.size:
            raise CorruptCheckpointError(f"blob {address} is truncated ({len(data)} bytes)")
        magic, codec, raw_size = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise CorruptCheckpointError(f"blob {address} has no blob header")
        if codec not in (_RAW, _ZSTD):
            raise CorruptCheckpointError(f"blob {address} uses unknown codec {codec}")
        return _Stored(codec, raw_size, memoryview(data)[_HEADER.size :])

    def _open(self, address: str, stored: _Stored, size: int | None) -> memoryview:
        """The content of a stored blob, checked against ``size`` before it is
        decompressed, and against its address after."""
        if size is not None and stored.raw_size != size:
            raise CorruptCheckpointError(
                f"blob {address} claims {stored.raw_size} bytes where {size} are expected"
            )
        if stored.codec == _ZSTD:
            content = _inflate(address, stored.body, stored.raw_size)
        else:
            content = stored.body
        if content.nbytes != stored.raw_size:
            raise CorruptCheckpointError(
                f"blob {address} holds {content.nbytes} bytes, its header says {stored.raw_size}"
            )
        fingerprint = fingerprint_of([content])
        if self.verify:
            expected = self._expected.get(address)
            if expected is not None:
                intact = expected == fingerprint
            else:
                intact = address_of([content]) == address
            if not intact:
                raise CorruptCheckpointError(f"blob {address} does not match its hash (damaged)")
        with self._lock:
            self._present.add(address)
            self._by_fingerprint[fingerprint] = address
            self._fingerprints[address] = fingerprint
        return content


@dataclass(frozen=True)
class _Stored:
    """A blob as stored: read, not yet decompressed nor verified."""

    codec: int
    raw_size: int
    body: memoryview


def _inflate(address: str, body: memoryview, raw_size: int) -> memoryview:
    """Decompress ``body`` chunk by chunk, refusing more than ``raw_size`` bytes."""
    out = bytearray()
    try:
        chunks = zstandard.ZstdDecompressor().read_to_iter(
            body, read_size=_INFLATE_CHUNK, write_size=_INFLATE_CHUNK
        )
        for chunk in chunks:
            out += chunk
            if len(out) > raw_size:
                raise CorruptCheckpointError(
                    f"blob {address} decompresses to more than the {raw_size} bytes its header "
                    "says (damaged)"
                )
    except zstandard.ZstdError as exc:
        raise CorruptCheckpointError(
            f"blob {address} does not decompress (damaged): {exc}"
        ) from exc
    return memoryview(out)
