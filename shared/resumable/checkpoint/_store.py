"""The checkpoint store of one run: manifests, history, blobs, validation.

Layout under the run folder ``runs/{tenant}/{pipeline}/{run_id}/``:

- ``.checkpoint.json`` — the latest manifest (as in the original);
- ``checkpoints/{sequence}.json`` — every manifest, for rollback and audit;
- ``blobs/b3-{hash}`` — content-addressed, compressed values.

A save writes new blobs, then the history manifest (create-only), then replaces the
latest manifest with a generation precondition, so two processes that believe they own
the same run cannot silently overwrite each other: the second one gets
:class:`ConcurrentWriterError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from resumable._defaults import DEFAULT_TENANT
from resumable._ids import validate_id
from resumable.checkpoint import _deltas as deltas
from resumable.checkpoint._blobs import BlobStore
from resumable.checkpoint._deltas import Delta
from resumable.checkpoint._manifest import (
    LEGACY_VERSION,
    Manifest,
    StepRecord,
    dump_manifest,
    now_iso,
    parse_manifest,
)
from resumable.checkpoint._segments import Entry, decode_context, encode_context, entry_addresses
from resumable.definition._spec import PipelineSpec
from resumable.errors import (
    CheckpointError,
    ConcurrentWriterError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from resumable.storage.base import ObjectStore

LATEST = ".checkpoint.json"


def run_prefix(tenant_id: str, pipeline_name: str, run_id: str) -> str:
    validate_id(tenant_id, "tenant id")
    validate_id(pipeline_name, "pipeline name")
    validate_id(run_id, "run id")
    return f"runs/{tenant_id}/{pipeline_name}/{run_id}/"


def legacy_run_prefix(pipeline_name: str, run_id: str) -> str:
    """Where the original implementation kept a run: ``process/{pipeline}/run_{guid}/``."""
    return f"process/{pipeline_name}/run_{run_id}/"


@dataclass
class LoadedCheckpoint:
    """A checkpoint read back: its manifest and its decoded context (the committed
    context, with the progress unfinished steps saved applied)."""

    manifest: Manifest
    context: dict[str, Any]
    migrated_from: str | None = None


@dataclass
class ResumePlan:
    """What a checkpoint lets a run keep, after checking it against the current pipeline."""

    completed: list[str]
    invalidated: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


class CheckpointStore:
    """Checkpoints of one run in an object store."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        pipeline_name: str,
        run_id: str,
        tenant_id: str = DEFAULT_TENANT,
        compression_level: int = 3,
        verify: bool = True,
    ) -> None:
        self.store = store
        self.pipeline_name = pipeline_name
        self.run_id = run_id
        self.tenant_id = tenant_id
        self.prefix = run_prefix(tenant_id, pipeline_name, run_id)
        self.blobs = BlobStore(
            store, self.prefix + "blobs/", compression_level=compression_level, verify=verify
        )
        self.sequence = 0
        self._latest_generation: int | None = None

    @property
    def run_folder(self) -> str:
        return f"{self.store.url}/{self.prefix}".rstrip("/")

    @property
    def latest_name(self) -> str:
        return self.prefix + LATEST

    def history_name(self, sequence: int) -> str:
        return f"{self.prefix}checkpoints/{sequence:010d}.json"

    # -- saving -------------------------------------------------------------------------

    def save(self, context: Mapping[str, Any], **fields: Any) -> Manifest:
        """Write a checkpoint of ``context`` (see :meth:`save_entries` for ``fields``);
        only values not stored before are uploaded.

        Raises :class:`~resumable.errors.EncodingError` for a value that cannot be stored
        exactly (nothing is written then), :class:`ConcurrentWriterError` if another process
        replaced the latest checkpoint meanwhile.
        """
        return self.save_entries(encode_context(context, self.blobs), **fields)

    def save_entries(
        self,
        entries: dict[str, Entry],
        *,
        spec: PipelineSpec,
        completed_steps: list[str],
        steps_summary: Mapping[str, StepRecord],
        status: str = "running",
        errors: list[str] | None = None,
        params: Mapping[str, Any] | None = None,
        kind: Literal["commit", "progress", "final"] | None = None,
        base: dict[str, Entry] | None = None,
        outputs: Mapping[str, Delta] | None = None,
        progress: Mapping[str, Delta] | None = None,
    ) -> Manifest:
        """Write a checkpoint whose values are already encoded (their blobs stored)."""
        if self._latest_generation is None:
            self._discover_latest()
        manifest = Manifest(
            pipeline_name=self.pipeline_name,
            run_guid=self.run_id,
            tenant_id=self.tenant_id,
            run_folder=self.run_folder,
            timestamp=now_iso(),
            sequence=self.sequence + 1,
            status=status,
            pipeline_fingerprint=spec.fingerprint,
            step_fingerprints=dict(spec.step_fingerprints),
            completed_steps=list(completed_steps),
            steps_summary={k: v.model_copy() for k, v in steps_summary.items()},
            errors=list(errors or []),
            params=dict(params or {}),
            context=entries,
            kind=kind,
            base=base,
            outputs=dict(outputs) if outputs is not None else None,
            progress=dict(progress or {}),
        )
        data = dump_manifest(manifest)
        try:
            self.store.write(self.history_name(manifest.sequence), data, if_generation_match=0)
        except PreconditionFailedError:
            raise ConcurrentWriterError(
                f"checkpoint #{manifest.sequence} of run {self.run_id!r} was written by another "
                "process: two processes are running this run"
            ) from None
        # The first latest copy is created, not replaced, and a local folder makes a created
        # object's entry durable only with its next flush: flush what it refers to before
        # it, and it after, as a replacing write does itself. The checkpoint is committed
        # only once this copy survives a power loss.
        first = self._latest_generation == 0
        try:
            if first:
                self.store.flush()
            self._latest_generation = self.store.write(
                self.latest_name, data, if_generation_match=self._latest_generation
            )
            if first:
                self.store.flush()
        except PreconditionFailedError:
            raise ConcurrentWriterError(
                f"the latest checkpoint of run {self.run_id!r} was replaced by another process: "
                "two processes are running this run"
            ) from None
        self.sequence = manifest.sequence
        return manifest

    def _discover_latest(self) -> None:
        try:
            data, generation = self.store.read_with_generation(self.latest_name)
        except ObjectNotFoundError:
            self._latest_generation = 0
            self.sequence = max(self.sequence, self._highest_history_sequence())
            return
        self._latest_generation = generation
        try:
            manifest, _raw = parse_manifest(data, self.latest_name)
            sequence = manifest.sequence if manifest else 0
        except CorruptCheckpointError:
            sequence = 0
        self.sequence = max(self.sequence, sequence, self._highest_history_sequence())

    def _highest_history_sequence(self) -> int:
        names = list(self.store.list(self.prefix + "checkpoints/"))
        sequences = [_sequence_of(n) for n in names]
        return max((s for s in sequences if s is not None), default=0)

    # -- loading ------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.store.exists(self.latest_name) or self.store.exists(
            legacy_run_prefix(self.pipeline_name, self.run_id) + LATEST
        )

    def load_latest(self, *, decode: bool = True) -> LoadedCheckpoint | None:
        """The latest checkpoint, or ``None`` if the run has none.

        A damaged latest manifest falls back to the newest intact history manifest (the
        latest is a copy of it); if none is intact, :class:`CorruptCheckpointError` says
        why. A legacy ``1.0`` checkpoint is migrated on the fly. ``decode=False`` leaves
        the context undecoded (the caller decodes what it needs from the manifest).
        """
        try:
            data, generation = self.store.read_with_generation(self.latest_name)
        except ObjectNotFoundError:
            return self._load_legacy_location(decode)
        self._latest_generation = generation
        # Known before parsing: a run that starts fresh over a damaged checkpoint must
        # still number its checkpoints after the ones in the history.
        self.sequence = max(self.sequence, self._highest_history_sequence())
        try:
            loaded = self._load_document(data, self.latest_name, decode)
        except CorruptCheckpointError as latest_error:
            loaded = self._newest_intact_history(latest_error, decode)
        self.sequence = max(self.sequence, loaded.manifest.sequence)
        return loaded

    def _newest_intact_history(
        self, latest_error: CorruptCheckpointError, decode: bool
    ) -> LoadedCheckpoint:
        for sequence in reversed(self.history()):
            name = self.history_name(sequence)
            try:
                return self._load_document(self.store.read(name), name, decode)
            except CorruptCheckpointError:
                continue
        raise latest_error

    def load(self, sequence: int) -> LoadedCheckpoint:
        """A checkpoint from the history."""
        name = self.history_name(sequence)
        try:
            data = self.store.read(name)
        except ObjectNotFoundError:
            raise CheckpointError(f"run {self.run_id!r} has no checkpoint #{sequence}") from None
        return self._load_document(data, name)

    def load_manifest(self, sequence: int) -> Manifest:
        """A history manifest without its context (cheap)."""
        name = self.history_name(sequence)
        manifest, raw = parse_manifest(self.store.read(name), name)
        return manifest if manifest is not None else self._migrate(raw)

    def history(self) -> list[int]:
        """Sequence numbers of the run's stored checkpoints, oldest first."""
        sequences = [_sequence_of(n) for n in self.store.list(self.prefix + "checkpoints/")]
        return sorted(s for s in sequences if s is not None)

    def _load_document(self, data: bytes, where: str, decode: bool = True) -> LoadedCheckpoint:
        manifest, raw = parse_manifest(data, where)
        if manifest is None:
            migrated = self._migrate(raw)
            return LoadedCheckpoint(migrated, dict(raw["context"]), migrated_from=LEGACY_VERSION)
        self.blobs.known(a for e in manifest_entries(manifest) for a in entry_addresses(e))
        if not decode:
            return LoadedCheckpoint(manifest, {})
        entries = dict(manifest.context)
        for delta in manifest.progress.values():  # where unfinished steps had got to
            deltas.apply(entries, delta)
        return LoadedCheckpoint(manifest, decode_context(entries, self.blobs))

    def _load_legacy_location(self, decode: bool = True) -> LoadedCheckpoint | None:
        name = legacy_run_prefix(self.pipeline_name, self.run_id) + LATEST
        try:
            data = self.store.read(name)
        except ObjectNotFoundError:
            return None
        self._latest_generation = 0
        return self._load_document(data, name, decode)

    def _migrate(self, raw: dict[str, Any]) -> Manifest:
        """Build a current manifest from an original ``1.0`` checkpoint."""
        completed = list(raw.get("completed_steps", []))
        summary = {s: StepRecord(status="completed") for s in completed}
        return Manifest(
            pipeline_name=raw["pipeline_name"],
            run_guid=raw["run_guid"],
            tenant_id=self.tenant_id,
            run_folder=str(raw.get("run_folder") or self.run_folder),
            timestamp=str(raw.get("timestamp") or now_iso()),
            sequence=0,
            status="running",
            pipeline_fingerprint="",
            step_fingerprints={},
            completed_steps=completed,
            steps_summary=summary,
            migrated_from=LEGACY_VERSION,
        )

    # -- validation ---------------------------------------------------------------------

    def plan_resume(self, manifest: Manifest, spec: PipelineSpec) -> ResumePlan:
        """Check ``manifest`` against the current pipeline.

        Raises :class:`IncompatibleCheckpointError` if it belongs to another pipeline or
        run, or if a step it completed no longer exists. A completed step whose version
        (or an ancestor's) changed is *invalidated*: it and everything after it re-run.
        """
        problems = []
        if manifest.pipeline_name != spec.name:
            problems.append(f"it belongs to pipeline {manifest.pipeline_name!r}, not {spec.name!r}")
        if manifest.run_guid != self.run_id:
            problems.append(f"it belongs to run {manifest.run_guid!r}, not {self.run_id!r}")
        missing = [s for s in manifest.completed_steps if s not in spec.steps]
        if missing:
            problems.append(
                f"completed step(s) {missing} no longer exist in pipeline {spec.name!r} "
                f"(renamed or removed; its steps are now {list(spec.order)})"
            )
        if problems:
            raise IncompatibleCheckpointError(
                f"checkpoint of run {self.run_id!r} cannot be resumed", problems
            )
        invalid: set[str] = set()
        reasons = []
        for step in manifest.completed_steps:
            stored = manifest.step_fingerprints.get(step)
            if manifest.migrated_from or stored == spec.step_fingerprints[step]:
                continue
            if step not in invalid:
                changed = (
                    "it"
                    if not spec.ancestors(step) & set(manifest.completed_steps)
                    else "it or a step before it"
                )
                reasons.append(
                    f"step {step!r} changed since the checkpoint ({changed} has a new version "
                    "or dependencies): it and the steps after it run again"
                )
            invalid.add(step)
            invalid.update(spec.descendants(step))
        completed = [s for s in manifest.completed_steps if s not in invalid]
        return ResumePlan(
            completed=completed,
            invalidated=[s for s in spec.order if s in invalid and s in manifest.completed_steps],
            reasons=reasons,
        )

    # -- cleanup ------------------------------------------------------------------------

    def delete_run(self) -> int:
        """Delete every object of the run (after success, when cleanup is on)."""
        return self.store.delete_prefix(self.prefix)


def _sequence_of(name: str) -> int | None:
    stem = name.rsplit("/", 1)[-1].removesuffix(".json")
    return int(stem) if stem.isdigit() else None


def manifest_entries(manifest: Manifest) -> Iterator[Entry]:
    """Every entry a manifest holds: its context, base, outputs and progress."""
    yield from manifest.context.values()
    yield from (manifest.base or {}).values()
    for delta in [*(manifest.outputs or {}).values(), *manifest.progress.values()]:
        yield from delta.outputs.values()
