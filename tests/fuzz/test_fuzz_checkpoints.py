"""Fuzz: damaged checkpoints — manifests, segment headers, segments, blobs — forged with
valid integrity hashes and content addresses, so that the damage reaches the decoders.

Invariant: loading gives the run's context or raises a library error
(``ResumableError``); never a raw exception, a hang, or memory beyond a bound. A run with
``strict=False`` over any of them completes.
"""

from __future__ import annotations

from typing import Any

import orjson
import zstandard
from hypothesis import event, given
from hypothesis import strategies as st

from resumable import ResumableError
from resumable.checkpoint._blobs import BlobStore
from resumable.storage import MemoryStore
from tests.fuzz.budget import bounded, fuzz_settings
from tests.fuzz.checkpoint_corpus import (
    LATEST,
    PREFIX,
    context,
    inprocess_objects,
    resumable_pipeline,
    store_of,
)
from tests.fuzz.mutations import mutate
from tests.support.exact import assert_exact
from tests.support.forge import (
    SEGMENT_HEADER,
    ZSTD,
    blob_bytes,
    dump_json,
    put_blob,
    segment_bytes,
    signed,
    zstd_frame_claiming,
)


def damaged_store(data: st.DataObject, change: Any) -> MemoryStore:
    """The kept run's objects with its latest manifest changed by ``change(manifest,
    store)``; its history is dropped unless drawn otherwise, so the change is what loads."""
    store = store_of(inprocess_objects())
    if not data.draw(st.booleans(), label="keep history"):
        for name in list(store.list(PREFIX + "checkpoints/")):
            store.delete(name)
    manifest = orjson.loads(store.read(LATEST))
    manifest = change(manifest, store)
    store.write(LATEST, signed(manifest) if isinstance(manifest, dict) else dump_json(manifest))
    return store


def assert_loads_or_fails_cleanly(store: MemoryStore, *, resume: bool = False) -> None:
    with bounded():
        try:
            resumable_pipeline(store, strict=True).load_checkpoint()
            event("loaded")
        except ResumableError as exc:
            event(f"{type(exc).__name__}: {' '.join(str(exc).split()[:6])}")
        if resume:
            result = resumable_pipeline(store).run(resume_from_checkpoint=True)
            assert result["status"] == "completed", result["errors"]


def segment_names(manifest: dict[str, Any]) -> list[str]:
    return sorted(k for k, e in manifest["context"].items() if "segment" in e)


@fuzz_settings(ci_examples=150)
@given(st.data())
def test_damaged_manifests(data: st.DataObject) -> None:
    def change(manifest: dict[str, Any], store: MemoryStore) -> Any:
        if data.draw(st.booleans(), label="only the context"):
            manifest["context"] = mutate(data, manifest["context"])
            return manifest
        return mutate(data, manifest)

    assert_loads_or_fails_cleanly(damaged_store(data, change), resume=True)


def a_segment(data: st.DataObject, manifest: dict[str, Any]) -> str:
    """The key of a segment entry, drawn."""
    return data.draw(st.sampled_from(segment_names(manifest)), label="key")


def segment_content(manifest: dict[str, Any], store: MemoryStore, key: str) -> bytes:
    return bytes(BlobStore(store, PREFIX + "blobs/").get(manifest["context"][key]["segment"]))


def replace_segment(
    data: st.DataObject, manifest: dict[str, Any], store: MemoryStore, key: str, forged: bytes
) -> dict[str, Any]:
    """Store ``forged`` under its content address and point the entry at it."""
    address = put_blob(store, PREFIX + "blobs/", forged, compress=data.draw(st.booleans()))
    manifest["context"][key].update(segment=address, bytes=len(forged))
    return manifest


@fuzz_settings(ci_examples=150)
@given(st.data())
def test_damaged_segment_headers(data: st.DataObject) -> None:
    def change(manifest: dict[str, Any], store: MemoryStore) -> Any:
        key = a_segment(data, manifest)
        segment = segment_content(manifest, store, key)
        _, header_length = SEGMENT_HEADER.unpack_from(segment)
        header = orjson.loads(segment[SEGMENT_HEADER.size : SEGMENT_HEADER.size + header_length])
        start = SEGMENT_HEADER.size + header_length
        rest = segment[start + (-start % 16) :]
        forged = segment_bytes(dump_json(mutate(data, header)), rest)
        return replace_segment(data, manifest, store, key, forged)

    assert_loads_or_fails_cleanly(damaged_store(data, change))


@fuzz_settings(ci_examples=120)
@given(st.data())
def test_damaged_segment_bytes(data: st.DataObject) -> None:
    def change(manifest: dict[str, Any], store: MemoryStore) -> Any:
        key = a_segment(data, manifest)
        segment = bytearray(segment_content(manifest, store, key))
        for _ in range(data.draw(st.integers(1, 4), label="edits")):
            at = data.draw(st.integers(0, max(len(segment) - 1, 0)), label="at")
            edit = data.draw(st.sampled_from(["flip", "cut", "grow", "length"]), label="edit")
            if edit == "flip" and segment:
                segment[at] ^= data.draw(st.integers(1, 255))
            elif edit == "cut":
                del segment[at:]
            elif edit == "grow":
                segment[at:at] = data.draw(st.binary(min_size=1, max_size=64))
            elif len(segment) >= 8:  # the header's length field
                segment[4:8] = data.draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
        return replace_segment(data, manifest, store, key, bytes(segment))

    assert_loads_or_fails_cleanly(damaged_store(data, change))


@fuzz_settings(ci_examples=120)
@given(st.data())
def test_damaged_blobs(data: st.DataObject) -> None:
    """Blob headers and bodies, left under their address (the hash check is last) or
    stored under their new content's address, and zstd frames claiming huge sizes."""

    def change(manifest: dict[str, Any], store: MemoryStore) -> Any:
        names = sorted(store.list(PREFIX + "blobs/"))
        name = data.draw(st.sampled_from(names), label="blob")
        stored = bytearray(store.read(name))
        kind = data.draw(st.sampled_from(["codec", "size", "body", "claim", "bytes"]))
        if kind == "codec":
            stored[4] = data.draw(st.integers(0, 255))
        elif kind == "size":
            stored[8:16] = data.draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
        elif kind == "body":
            stored[16:] = zstandard.compress(data.draw(st.binary(max_size=2048)))
            stored[4] = ZSTD
        elif kind == "claim":
            claim = data.draw(st.sampled_from([1 << 30, 64 << 30, 2**63]), label="claim")
            stored = bytearray(blob_bytes(zstd_frame_claiming(claim), codec=ZSTD, raw_size=claim))
        else:
            at = data.draw(st.integers(0, len(stored) - 1))
            stored[at] ^= 0xFF
        store.write(name, bytes(stored))
        if data.draw(st.booleans(), label="re-address"):  # the damage reaches the decoders
            try:
                content = bytes(BlobStore(store, PREFIX + "blobs/", verify=False).get(name[-67:]))
            except ResumableError:
                return manifest
            address = put_blob(store, PREFIX + "blobs/", content)
            text = orjson.dumps(manifest).replace(name[-67:].encode(), address.encode())
            return orjson.loads(text)
        return manifest

    assert_loads_or_fails_cleanly(damaged_store(data, change))


def test_the_corpus_loads_exactly_when_undamaged() -> None:
    loaded = resumable_pipeline(store_of(inprocess_objects())).load_checkpoint()
    assert loaded is not None
    expected = {**context(), "touched": True, "total": len(context()) + 1}
    assert_exact(expected, loaded.context)
