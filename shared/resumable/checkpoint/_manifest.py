"""The checkpoint manifest: a small JSON document describing one checkpoint.

It keeps the original format's fields (``pipeline_name``, ``run_guid``, ``run_folder``,
``timestamp``, ``completed_steps``, ``context``, ``steps_summary``,
``checkpoint_version``) and adds the pipeline fingerprint, a sequence number, the run's
status, and an integrity hash over everything else. In ``context`` each key maps to an
inline encoded value or to blob references (see ``segments``).

Version ``"1.0"`` manifests, the original's plain-JSON format, are read and migrated.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import blake3
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from resumable._defaults import DEFAULT_TENANT
from resumable.checkpoint._deltas import Delta
from resumable.checkpoint._segments import Entry
from resumable.errors import CorruptCheckpointError

CHECKPOINT_VERSION = "2.0"
LEGACY_VERSION = "1.0"


class StepRecord(BaseModel):
    """What the run knows about one step."""

    model_config = ConfigDict(extra="allow")

    status: str = "not_started"
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float | None = None
    error: str | None = None
    output_keys: list[str] = Field(default_factory=list)
    progress_saved_at: str | None = None
    continuations: int = 0  # calls that ended asking to be continued (Continue())


class Manifest(BaseModel):
    """One checkpoint. ``integrity`` is a BLAKE3 hash of all other fields."""

    model_config = ConfigDict(extra="allow")

    checkpoint_version: Literal["2.0"] = "2.0"
    pipeline_name: str
    run_guid: str
    tenant_id: str = DEFAULT_TENANT
    run_folder: str
    timestamp: str
    sequence: int
    status: str = "running"
    pipeline_fingerprint: str
    step_fingerprints: dict[str, str]
    completed_steps: list[str] = Field(default_factory=list)
    steps_summary: dict[str, StepRecord] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Entry] = Field(default_factory=dict)
    migrated_from: str | None = None
    # Since release 0.2: what the checkpoint was taken for ("commit" of a step, a step's
    # "progress", the run's "final" status), the run's initial context (``base``), each
    # completed step's delta (``outputs``) and each unfinished step's saved progress. The
    # ``context`` above is derived from them (base plus outputs in graph order), kept for
    # readers of the original format. Release 0.1.0 wrote none of them.
    kind: Literal["commit", "progress", "final"] | None = None
    base: dict[str, Entry] | None = None
    outputs: dict[str, Delta] | None = None
    progress: dict[str, Delta] = Field(default_factory=dict)
    integrity: str = ""

    @property
    def run_id(self) -> str:
        return self.run_guid


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def integrity_of(document: dict[str, Any]) -> str:
    """BLAKE3 of a document's canonical JSON, without its ``integrity`` field.

    Raises :class:`CorruptCheckpointError` for a document no manifest can be (one nested
    deeper than JSON serialisation allows).
    """
    body = {k: v for k, v in document.items() if k != "integrity"}
    try:
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise CorruptCheckpointError(f"not a checkpoint manifest: {exc}") from None
    return "b3-" + blake3.blake3(canonical).hexdigest()


def dump_manifest(manifest: Manifest) -> bytes:
    """Serialise with a fresh integrity hash."""
    document = manifest.model_dump(mode="json", exclude={"integrity"})
    document["integrity"] = integrity_of(document)
    manifest.integrity = document["integrity"]
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


def parse_manifest(data: bytes, where: str) -> tuple[Manifest | None, dict[str, Any]]:
    """Parse and check a manifest. Returns ``(manifest, raw)``; ``manifest`` is ``None``
    for a legacy ``1.0`` document, which the caller migrates from ``raw``.

    Raises :class:`CorruptCheckpointError` saying exactly what is wrong.
    """
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CorruptCheckpointError(
            f"checkpoint manifest {where} is not valid JSON: {exc}"
        ) from exc
    if not isinstance(raw, dict):
        raise CorruptCheckpointError(f"checkpoint manifest {where} is not a JSON object")
    version = raw.get("checkpoint_version")
    if version == LEGACY_VERSION:
        _check_legacy(raw, where)
        return None, raw
    if version != CHECKPOINT_VERSION:
        raise CorruptCheckpointError(
            f"checkpoint manifest {where} has checkpoint_version {version!r}; this release reads "
            f"{LEGACY_VERSION!r} and {CHECKPOINT_VERSION!r}"
        )
    expected = raw.get("integrity")
    actual = integrity_of(raw)
    if expected != actual:
        raise CorruptCheckpointError(
            f"checkpoint manifest {where} fails its integrity check (stored {expected!r}, "
            f"computed {actual!r}): it was modified or damaged"
        )
    try:
        return Manifest.model_validate(raw), raw
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise CorruptCheckpointError(f"checkpoint manifest {where} is malformed", problems) from exc


def _check_legacy(raw: dict[str, Any], where: str) -> None:
    problems = []
    for key, kind in (("pipeline_name", str), ("run_guid", str), ("context", dict)):
        if not isinstance(raw.get(key), kind):
            problems.append(f"{key} must be a {kind.__name__}")
    steps = raw.get("completed_steps", [])
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        problems.append("completed_steps must be a list of step names")
    if problems:
        raise CorruptCheckpointError(f"legacy 1.0 checkpoint {where} is malformed", problems)
