"""Manifests: every malformed field is a CorruptCheckpointError naming the field."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from resumable import CorruptCheckpointError
from resumable.checkpoint._manifest import (
    Manifest,
    dump_manifest,
    integrity_of,
    parse_manifest,
)


def valid_document() -> dict[str, Any]:
    manifest = Manifest(
        pipeline_name="pipe",
        run_guid="r1",
        run_folder="memory://runs/default/pipe/r1",
        timestamp="2026-01-01T00:00:00+00:00",
        sequence=3,
        pipeline_fingerprint="fp",
        step_fingerprints={"a": "fa"},
        completed_steps=["a"],
        context={"x": {"v": 1}},
    )
    document: dict[str, Any] = orjson.loads(dump_manifest(manifest))
    return document


def parse(document: dict[str, Any]) -> Manifest | None:
    document["integrity"] = integrity_of(document)
    return parse_manifest(orjson.dumps(document), "m.json")[0]


def test_a_valid_manifest_parses() -> None:
    manifest = parse(valid_document())
    assert manifest is not None and manifest.context == {"x": {"v": 1}}


MALFORMED_FIELDS = {
    "pipeline_name": (5, "pipeline_name"),
    "run_guid": (None, "run_guid"),
    "sequence": ("three", "sequence"),
    "step_fingerprints": (["a"], "step_fingerprints"),
    "completed_steps": ("a", "completed_steps"),
    "steps_summary": ({"a": {"attempts": "many"}}, "steps_summary.a.attempts"),
    "errors": ([1], "errors.0"),
    "params": ([], "params"),
    "context": ({"x": 1}, "context.x"),
    "status": (["running"], "status"),
}


@pytest.mark.parametrize(
    ("field", "value", "reason"), [(k, *v) for k, v in MALFORMED_FIELDS.items()]
)
def test_each_malformed_field_is_named(field: str, value: Any, reason: str) -> None:
    document = valid_document()
    document[field] = value
    with pytest.raises(CorruptCheckpointError, match=f"m.json is malformed.*{reason}"):
        parse(document)


@pytest.mark.parametrize("field", ["pipeline_name", "run_guid", "sequence", "run_folder"])
def test_each_missing_required_field_is_named(field: str) -> None:
    document = valid_document()
    del document[field]
    with pytest.raises(CorruptCheckpointError, match=f"{field}: Field required"):
        parse(document)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{", "not valid JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"checkpoint_version": "9.9"}', "checkpoint_version '9.9'"),
        (b'{"checkpoint_version": "2.0", "integrity": "b3-00"}', "fails its integrity check"),
        (b"[" * 600 + b"]" * 600, "not a JSON object"),
    ],
    ids=["not-json", "not-an-object", "unknown-version", "integrity", "deep-array"],
)
def test_unusable_documents_say_why(data: bytes, reason: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=reason):
        parse_manifest(data, "m.json")


def test_a_manifest_nested_too_deeply_to_hash_is_a_corrupt_checkpoint() -> None:
    deep = b"[" * 300 + b"]" * 300  # parses (orjson reads 1024 levels), cannot be re-serialised
    data = b'{"checkpoint_version": "2.0", "integrity": "b3-00", "x": ' + deep + b"}"
    with pytest.raises(CorruptCheckpointError, match="not a checkpoint manifest"):
        parse_manifest(data, "m.json")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"pipeline_name": 1}, "pipeline_name must be a str"),
        ({"run_guid": None}, "run_guid must be a str"),
        ({"context": []}, "context must be a dict"),
        ({"completed_steps": "a"}, "completed_steps must be a list"),
        ({"completed_steps": [1]}, "completed_steps must be a list"),
    ],
)
def test_malformed_legacy_1_0_manifests_say_which_field(
    change: dict[str, Any], reason: str
) -> None:
    document = {"checkpoint_version": "1.0", "pipeline_name": "p", "run_guid": "r", "context": {}}
    with pytest.raises(CorruptCheckpointError, match=reason):
        parse_manifest(orjson.dumps({**document, **change}), "m.json")
