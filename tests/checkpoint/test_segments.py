"""Segments: a damaged header or manifest entry is a CorruptCheckpointError saying what
is wrong, never a raw TypeError, KeyError or RecursionError."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from resumable import CorruptCheckpointError, Pipeline
from resumable.checkpoint._blobs import BlobStore
from resumable.checkpoint._segments import decode_entry
from resumable.serverless._run_files import RunFiles
from resumable.storage import MemoryStore
from tests.support.forge import put_blob, rewrite_json, segment_bytes


def decode_segment(header: bytes, data: bytes = b"") -> Any:
    """Decode a segment forged with a valid content address and matching size."""
    store = MemoryStore()
    segment = segment_bytes(header, data)
    address = put_blob(store, "b/", segment)
    entry = {"segment": address, "bytes": len(segment)}
    return decode_entry("k", entry, BlobStore(store, "b/"))  # type: ignore[arg-type]


def test_a_forged_segment_decodes_as_the_writer_laid_it_out() -> None:
    header = b'{"v": {"$r": "bytes", "part": 0}, "parts": [[0, 3]]}'
    assert decode_segment(header, b"abc") == b"abc"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"5", "not {'v'"),
        (b"[1]", "not {'v'"),
        (b'{"parts": []}', "not {'v'"),
        (b'{"v": 1}', "not {'v'"),
        (b'{"v": 1, "parts": 5}', "not {'v'"),
        (b'{"v": 1, "parts": [[1]]}', "part \\[1\\] is not \\[offset, size\\]"),
        (b'{"v": 1, "parts": [["a", "b"]]}', "is not \\[offset, size\\]"),
        (b'{"v": 1, "parts": [[0, 1.5]]}', "is not \\[offset, size\\]"),
        (b'{"v": 1, "parts": [[0, 100]]}', "lies outside"),
        (b'{"v": 1, "parts": [[-16, 4]]}', "lies outside"),
        (b'{"v": 1, "parts"', "not JSON"),
        (b"[" * 2000 + b"]" * 2000, "not JSON"),
    ],
)
def test_malformed_segment_headers_are_corrupt_checkpoints(header: bytes, reason: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=f"malformed: .*{reason}"):
        decode_segment(header, b"abc")


def test_a_segment_header_nested_1000_levels_deep_is_a_corrupt_checkpoint() -> None:
    deep = b'{"v": ' + b"[" * 1000 + b"]" * 1000 + b', "parts": []}'
    with pytest.raises(CorruptCheckpointError, match="nested more than 254 levels"):
        decode_segment(deep)


@pytest.mark.parametrize(
    ("segment", "reason"),
    [
        (b"RSG", "too short"),
        (b"XXXX\0\0\0\0", "no segment header"),
        (b"RSG1\xff\0\0\0{}", "no segment header"),
    ],
    ids=["truncated", "bad-magic", "header-past-the-end"],
)
def test_a_segment_without_its_header_is_a_corrupt_checkpoint(segment: bytes, reason: str) -> None:
    store = MemoryStore()
    address = put_blob(store, "b/", segment)
    entry = {"segment": address, "bytes": len(segment)}
    with pytest.raises(CorruptCheckpointError, match=reason):
        decode_entry("k", entry, BlobStore(store, "b/"))  # type: ignore[arg-type]


# -- manifest entries ----------------------------------------------------------------------

ADDRESS = "b3-" + "0" * 64
BAD_ENTRIES = {
    "segment-a-number": ({"segment": 5}, "segment"),
    "blobs-none": ({"blobs": None}, "blobs"),
    "blobs-of-lists": ({"blobs": [[1]]}, "blobs.0"),
    "inline-with-blobs-of-lists": ({"v": 1, "blobs": [[1]]}, "blobs.0"),
    "empty": ({}, "either an inline value"),
    "value-and-segment": ({"v": 1, "segment": ADDRESS, "bytes": 3}, "either an inline value"),
    "segment-without-size": ({"segment": ADDRESS}, "size in 'bytes'"),
    "negative-size": ({"segment": ADDRESS, "bytes": -1}, "bytes"),
    "size-as-text": ({"segment": ADDRESS, "bytes": "5"}, "bytes"),
    "size-as-bool": ({"segment": ADDRESS, "bytes": True}, "bytes"),
    "not-a-dict": ([1, 2], "context.big"),
}


def kept_run(store: MemoryStore) -> str:
    """A completed run whose checkpoint is kept; returns its latest manifest's name."""
    steps = {"a": lambda c: {"big": np.arange(5_000)}, "b": lambda c: {"done": True}}
    Pipeline("pipe", steps, storage=store, run_id="r1", cleanup_on_success=False).run()
    return "runs/default/pipe/r1/.checkpoint.json"


@pytest.mark.parametrize(("entry", "reason"), BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
def test_malformed_manifest_entries_are_corrupt_checkpoints_even_without_strict(
    entry: Any, reason: str
) -> None:
    store = MemoryStore()
    latest = kept_run(store)
    for name in store.list("runs/default/pipe/r1/"):
        if name.endswith(".json"):  # the latest and its copies in the history alike
            rewrite_json(store, name, lambda m: m["context"].__setitem__("big", entry))
    steps = {"a": lambda c: {"big": 1}, "b": lambda c: {"done": True}}
    with pytest.raises(CorruptCheckpointError, match=reason):
        Pipeline("pipe", steps, storage=store, run_id="r1", strict=True).run(
            resume_from_checkpoint=True
        )
    result = Pipeline("pipe", steps, storage=store, run_id="r1").run(resume_from_checkpoint=True)
    assert result["status"] == "completed" and result["resumed_from_checkpoint"] is False
    assert any(latest in w and "malformed" in w for w in result["warnings"])


@pytest.mark.parametrize(("entry", "reason"), BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
def test_malformed_entries_of_a_serverless_step_manifest_are_corrupt_checkpoints(
    entry: Any, reason: str
) -> None:
    files = RunFiles(MemoryStore(), "default", "pipe", "r1")
    name, _, _ = files.write_step_output(
        step="a", attempt=1, step_fingerprint="f", before={}, context={"big": np.arange(5_000)}
    )
    rewrite_json(files.store, name, lambda m: m["outputs"].__setitem__("big", entry))
    with pytest.raises(CorruptCheckpointError, match=reason.replace("context.", "outputs.")):
        files.read_manifest(name)
