"""Checkpoints of a serverless run: the params, then one output manifest per step attempt.

Layout under the run folder ``runs/{tenant}/{pipeline}/{run_id}/``:

- ``params-{hash}.json`` — the run's parameters (content-addressed: a redelivered start
  message writes the same object);
- ``steps/{step}/attempt-{n}.json`` — what attempt ``n`` of a step changed in the context
  (new object names only: a stale or crashed attempt never overwrites a committed one);
- ``steps/{step}/map-{id}/items-{n}-{nonce}.json`` — a page of a map step's items, listed
  once when the map started (the map document names the pages that count);
- ``blobs/`` — content-addressed values shared by all of them (map items' results too).

A step's input context is the params plus the outputs of every completed ancestor step,
applied in graph order; only the manifests the run document points at are read. A step
output also lists every entry of the context the step left (``context_after``): a step
whose ancestors are exactly one step plus that step's ancestors (any step of a chain) reads
that one manifest, so loading costs the same at step 50 as at step 2. Otherwise (a
fan-in) the manifests are read in parallel.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Collection, Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from resumable.checkpoint import _deltas as deltas
from resumable.checkpoint._blobs import BlobStore
from resumable.checkpoint._lazy import LazyContext
from resumable.checkpoint._manifest import integrity_of, now_iso
from resumable.checkpoint._pools import SharedPool
from resumable.checkpoint._segments import Entry, decode_context, decode_entry, encode_context
from resumable.checkpoint._store import run_prefix
from resumable.definition._spec import PipelineSpec
from resumable.errors import CorruptCheckpointError, NonRetryableError, PreconditionFailedError
from resumable.serverless._run_state import RunState
from resumable.status import StepStatus
from resumable.storage.base import ObjectStore
from resumable.storage.memory import MemoryStore

_ENTRY: TypeAdapter[Entry] = TypeAdapter(Entry)


ManifestKind = Literal["params", "step_output", "map_items"]


class OutputManifest(BaseModel):
    """What one step attempt (or the start, for params) put into the context."""

    model_config = ConfigDict(extra="allow")

    checkpoint_version: Literal["2.0"] = "2.0"
    kind: ManifestKind
    pipeline_name: str
    run_guid: str
    tenant_id: str
    step: str | None = None
    attempt: int | None = None
    step_fingerprint: str | None = None
    timestamp: str | None = None
    outputs: dict[str, Entry] = Field(default_factory=dict)
    deleted: list[str] = Field(default_factory=list)
    # Every entry of the context the step left: its input with ``outputs`` and ``deleted``
    # applied (absent from the params and from manifests of older releases).
    context_after: dict[str, Entry] | None = None
    integrity: str = ""


# Threads that read a fan-in's manifests side by side.
_readers = SharedPool(8, "resumable-manifests")


class RunFiles:
    """The stored checkpoints of one serverless run."""

    def __init__(self, store: ObjectStore, tenant_id: str, pipeline: str, run_id: str) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.pipeline = pipeline
        self.run_id = run_id
        self.prefix = run_prefix(tenant_id, pipeline, run_id)
        self.blobs = BlobStore(store, self.prefix + "blobs/")

    @property
    def run_folder(self) -> str:
        return f"{self.store.url}/{self.prefix}".rstrip("/")

    def _dump(self, manifest: OutputManifest) -> bytes:
        document = manifest.model_dump(mode="json", exclude={"integrity"})
        document["integrity"] = integrity_of(document)
        return orjson.dumps(document)

    def params_manifest(self, params: Mapping[str, Any]) -> tuple[str, str]:
        """The object name and content hash :meth:`write_params` would give ``params``,
        computed without writing anything (a start message redelivered after the run's
        checkpoints were deleted must not write them again)."""
        name, digest, _data, _blobs = self._encode_params(params)
        return name, digest

    def write_params(self, params: Mapping[str, Any]) -> tuple[str, str]:
        """Store the params; returns ``(object name, content hash)``. Idempotent."""
        name, digest, data, staged = self._encode_params(params)
        for blob in staged.list():
            with contextlib.suppress(PreconditionFailedError):  # stored before: same bytes
                self.store.write(blob, staged.read(blob), if_generation_match=0)
        if not self.store.exists(name):
            self.store.write(name, data)
        return name, digest

    def _encode_params(self, params: Mapping[str, Any]) -> tuple[str, str, bytes, MemoryStore]:
        """The params manifest, its blobs staged in memory under their final names."""
        staged = MemoryStore()
        manifest = self._manifest(
            "params",
            outputs=encode_context(params, BlobStore(staged, self.blobs.prefix)),
        )
        data = self._dump(manifest)
        digest = integrity_of(orjson.loads(data))[3:27]
        return f"{self.prefix}params-{digest}.json", digest, data, staged

    def write_step_output(
        self,
        *,
        step: str,
        attempt: int,
        step_fingerprint: str,
        before: Mapping[str, Entry],
        context: Mapping[str, Any],
        label: str = "",
    ) -> tuple[str, int, list[str]]:
        """Encode ``context`` and store what differs from ``before``.

        ``label`` distinguishes mid-step progress saves of the same attempt.
        Returns ``(object name, bytes uploaded, changed keys)``. Raises
        :class:`~resumable.errors.EncodingError` for a value that cannot be stored exactly.
        """
        uploaded_before = self.blobs.bytes_uploaded
        if isinstance(context, LazyContext):  # values never read are unchanged: kept as is
            kept = context.unread_entries()
            fresh = encode_context(context.read_values(), self.blobs)
            after = {k: kept[k] if k in kept else fresh[k] for k in context}
        else:
            after = encode_context(context, self.blobs)
        delta = deltas.diff(before, after)
        manifest = self._manifest(
            "step_output",
            step=step,
            attempt=attempt,
            step_fingerprint=step_fingerprint,
            timestamp=now_iso(),
            outputs=delta.outputs,
            deleted=delta.deleted,
            context_after=after,
        )
        data = self._dump(manifest)
        suffix = f"-{label}" if label else ""
        name = f"{self.prefix}steps/{step}/attempt-{attempt:04d}{suffix}.json"
        # Create-only: an attempt number is claimed once, so this object is new.
        self.store.write(name, data, if_generation_match=0)
        self.store.flush()  # durable before the run document can point at it
        uploaded = self.blobs.bytes_uploaded - uploaded_before + len(data)
        return name, uploaded, delta.keys

    def read_manifest(self, name: str) -> OutputManifest:
        data = self.store.read(name)
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CorruptCheckpointError(f"checkpoint {name} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("integrity") != integrity_of(raw):
            raise CorruptCheckpointError(f"checkpoint {name} fails its integrity check")
        try:
            return OutputManifest.model_validate(raw)
        except ValidationError as exc:
            raise CorruptCheckpointError(f"checkpoint {name} is malformed: {exc}") from exc

    def input_entries(self, state: RunState, spec: PipelineSpec, step: str) -> dict[str, Entry]:
        """The encoded input context of ``step``: params, then each completed ancestor's
        outputs in graph order."""
        ancestors = spec.ancestors(step)
        source = _single_source(state, spec, ancestors)
        if source is not None:
            manifest = self.read_manifest(source)
            if manifest.context_after is not None:
                return dict(manifest.context_after)
        return self._accumulate(state, spec, ancestors)

    def _accumulate(
        self, state: RunState, spec: PipelineSpec, steps: Collection[str]
    ) -> dict[str, Entry]:
        """Params, then the outputs of the completed steps among ``steps`` in graph order.
        Two of them writing one key, neither depending on the other, is an error."""
        chosen: list[tuple[str, str]] = []
        for name in spec.order:
            record = state.steps.get(name)
            if name not in steps or record is None or record.status != StepStatus.COMPLETED:
                continue
            if not record.manifest:
                raise CorruptCheckpointError(f"completed step {name!r} has no output manifest")
            chosen.append((name, record.manifest))
        params, *outputs = self._read_all([state.params_manifest, *(m for _, m in chosen)])
        entries = dict(params.outputs)
        written_by: dict[str, str] = {}
        for (name, _), manifest in zip(chosen, outputs, strict=True):
            for key in [*manifest.outputs, *manifest.deleted]:
                writer = written_by.get(key)
                if writer and writer not in spec.ancestors(name):
                    raise NonRetryableError(
                        f"steps {writer!r} and {name!r} both write context key {key!r} but "
                        "neither depends on the other"
                    )
                written_by[key] = name
            deltas.apply(entries, manifest)
        return entries

    def _manifest(self, kind: ManifestKind, **fields: Any) -> OutputManifest:
        """A new manifest of this run (``kind`` and what it holds)."""
        return OutputManifest(
            kind=kind,
            pipeline_name=self.pipeline,
            run_guid=self.run_id,
            tenant_id=self.tenant_id,
            **fields,
        )

    # -- map steps -------------------------------------------------------------------------

    def write_items_page(self, step: str, map_id: str, number: int, items: list[Any]) -> str:
        """Store a page of a map step's items under a new name; returns the name."""
        manifest = self._manifest(
            "map_items",
            step=step,
            timestamp=now_iso(),
            outputs=encode_context({"items": items}, self.blobs),
        )
        nonce = uuid.uuid4().hex[:8]
        name = f"{self.prefix}steps/{step}/map-{map_id}/items-{number:05d}-{nonce}.json"
        self.store.write(name, self._dump(manifest), if_generation_match=0)
        self.store.flush()  # durable before the map document can name it
        return name

    def read_items_page(self, name: str) -> list[Any]:
        items = self.decode(self.read_manifest(name).outputs).get("items")
        if not isinstance(items, list):
            raise CorruptCheckpointError(f"map items page {name} holds no list of items")
        return items

    def encode_result(self, value: Any) -> str:
        """A map item's result as an encoded entry (JSON): inline when small, else a
        content-addressed segment, stored (durably) before this returns."""
        entry = encode_context({"result": value}, self.blobs)["result"]
        self.store.flush()
        return orjson.dumps(entry).decode()

    def decode_result(self, encoded: str, where: str) -> Any:
        try:
            entry = _ENTRY.validate_python(orjson.loads(encoded))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise CorruptCheckpointError(f"the result of {where} is malformed: {exc}") from exc
        return decode_entry(where, entry, self.blobs)

    def _read_all(self, names: list[str]) -> list[OutputManifest]:
        """The manifests, in order, read in parallel."""
        if len(names) > 1 and getattr(self.store, "background_io", True):
            return list(_readers().map(self.read_manifest, names))
        return [self.read_manifest(name) for name in names]

    def decode(self, entries: Mapping[str, Entry]) -> dict[str, Any]:
        return decode_context(entries, self.blobs)

    def decode_lazily(self, entries: Mapping[str, Entry]) -> LazyContext:
        """A step's input: each value read from storage when the step first uses it."""
        return LazyContext(entries, self.blobs)

    def context_at(self, state: RunState, spec: PipelineSpec, step: str) -> dict[str, Any]:
        """The context ``step`` starts from (for ``replay`` and ``checkpoint show``)."""
        return self.decode(self.input_entries(state, spec, step))

    def final_context(self, state: RunState, spec: PipelineSpec) -> dict[str, Any]:
        """Params plus the outputs of every completed step, in graph order."""
        return self.decode(self._accumulate(state, spec, set(spec.order)))

    def delete(self) -> int:
        return self.store.delete_prefix(self.prefix)


def _single_source(state: RunState, spec: PipelineSpec, ancestors: Collection[str]) -> str | None:
    """The manifest of the completed ancestor whose own ancestors are all the others, when
    every ancestor completed: the context it left is exactly the input (graph order puts
    it after them). ``None`` otherwise (no ancestors, a fan-in, one not completed)."""
    if not ancestors:
        return None
    records = [state.steps.get(name) for name in ancestors]
    if any(r is None or r.status != StepStatus.COMPLETED or not r.manifest for r in records):
        return None
    last = [name for name in spec.order if name in ancestors][-1]
    if spec.ancestors(last) | {last} != set(ancestors):
        return None
    return state.steps[last].manifest
