"""Re-running one step of a serverless run in this process, from the run's checkpoint.

For debugging: the step gets exactly the input context its function got in the cloud
(the run's params plus the committed outputs of its ancestors, see
:meth:`~resumable.serverless._run_files.RunFiles.context_at`), runs here, and what it changed is
reported. A replay **only reads** the run: it never writes to the run's storage or its run
document and publishes nothing, so it can be repeated at will, on a live run too.
``save_progress()`` inside a replayed step is accepted and discarded.

:func:`save_outputs` keeps what a replay changed, exactly (same codec as checkpoints),
in a local folder; :func:`load_outputs` reads it back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from resumable.checkpoint import _deltas as deltas
from resumable.checkpoint._blobs import BlobStore
from resumable.checkpoint._manifest import integrity_of, now_iso
from resumable.checkpoint._segments import Entry, decode_context, encode_context
from resumable.definition import _step_api as current_step
from resumable.definition._loader import PipelineLike as Pipeline
from resumable.errors import CorruptCheckpointError, ReplayError
from resumable.serverless._run_files import OutputManifest, RunFiles
from resumable.serverless._run_state import RunState
from resumable.status import StepStatus
from resumable.storage.local import LocalStore
from resumable.storage.memory import MemoryStore

OUTPUTS_MANIFEST = "outputs.json"


@dataclass
class Replay:
    """What one replayed step did: its input, the context after it, and the difference."""

    pipeline: str
    run_id: str
    tenant_id: str
    step: str
    step_fingerprint: str
    inputs: dict[str, Any]
    context: dict[str, Any]
    changed: list[str] = field(default_factory=list)  # keys added or given a new value
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    progress_saves: int = 0

    @property
    def outputs(self) -> dict[str, Any]:
        """The values the step added or changed."""
        return {key: self.context[key] for key in self.changed}


@dataclass
class ReplayInput:
    """A step of a run and the input context it starts from, loaded from the checkpoint."""

    state: RunState
    pipeline: Pipeline
    step: str
    entries: dict[str, Entry]  # the input as checkpoint entries, to diff the outputs against
    inputs: dict[str, Any]

    @property
    def ancestors(self) -> list[str]:
        """The completed steps whose outputs make up the input, in graph order."""
        spec = self.pipeline.spec
        return [name for name in spec.order if name in spec.ancestors(self.step)]


def load_replay(files: RunFiles, state: RunState, pipeline: Pipeline, step: str) -> ReplayInput:
    """Read the input ``step`` of the run ``state`` had (or will have) in the cloud.

    Raises :class:`ReplayError` for a step the pipeline lacks or whose dependencies have
    not all completed (its input is not defined yet), and
    :class:`~resumable.errors.CheckpointError` or ``ObjectNotFoundError`` when the stored
    checkpoints are damaged or gone.
    """
    spec = pipeline.spec
    if step not in spec.steps:
        raise ReplayError(f"pipeline {spec.name!r} has no step {step!r}: {', '.join(spec.order)}")
    waiting = [
        d
        for d in spec.steps[step].dependencies
        if state.steps.get(d) is None or state.steps[d].status != StepStatus.COMPLETED
    ]
    if waiting:
        statuses = ", ".join(
            f"{d} is {state.steps[d].status if d in state.steps else 'unknown'}" for d in waiting
        )
        raise ReplayError(
            f"step {step!r} of run {state.run_id!r} has no input yet: its dependencies have "
            f"not completed ({statuses})"
        )
    entries = files.input_entries(state, spec, step)
    return ReplayInput(state, pipeline, step, entries, files.decode(entries))


def replay_step(replay_input: ReplayInput, files: RunFiles) -> Replay:
    """Run the step here on its input; returns what it changed. An exception raised by
    the step propagates as is (the point of a replay is to see it)."""
    spec = replay_input.pipeline.spec
    step = replay_input.step
    context = files.decode(replay_input.entries)  # a fresh copy: steps may edit in place
    saves = 0

    def discard_progress(_context: Mapping[str, Any] | None) -> bool:
        nonlocal saves
        saves += 1
        return False

    function = spec.steps[step].function
    started = time.perf_counter()
    with current_step.bound(discard_progress):
        result = function(context, **current_step.step_kwargs(function, lambda: False))
    seconds = time.perf_counter() - started
    if isinstance(result, dict):
        context.update(result)
    elif result is not None:
        context[f"{step}_result"] = result
    # Compared as checkpoint entries: content-addressed, so equal values compare equal
    # whatever their type (arrays included), exactly as the worker decides what to store.
    before = replay_input.entries
    after = encode_context(context, BlobStore(MemoryStore(), "blobs/"))
    state = replay_input.state
    return Replay(
        pipeline=spec.name,
        run_id=state.run_id,
        tenant_id=state.tenant_id,
        step=step,
        step_fingerprint=spec.step_fingerprints[step],
        inputs=replay_input.inputs,
        context=context,
        changed=sorted(
            key for key, entry in after.items() if not deltas.same_entry(before.get(key), entry)
        ),
        removed=sorted(key for key in before if key not in after),
        seconds=seconds,
        progress_saves=saves,
    )


def save_outputs(replay: Replay, folder: str | Path) -> Path:
    """Store the replay's changed values exactly in ``folder`` (``outputs.json`` plus
    ``blobs/``, the checkpoint format of a step output); returns the manifest's path."""
    store = LocalStore(folder)
    manifest = OutputManifest(
        kind="step_output",
        pipeline_name=replay.pipeline,
        run_guid=replay.run_id,
        tenant_id=replay.tenant_id,
        step=replay.step,
        step_fingerprint=replay.step_fingerprint,
        timestamp=now_iso(),
        outputs=encode_context(replay.outputs, BlobStore(store, "blobs/")),
        deleted=replay.removed,
    )
    document = manifest.model_dump(mode="json", exclude={"integrity"})
    document["integrity"] = integrity_of(document)
    store.write(OUTPUTS_MANIFEST, orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return Path(folder) / OUTPUTS_MANIFEST


def load_outputs(folder: str | Path) -> dict[str, Any]:
    """The values :func:`save_outputs` stored in ``folder``, decoded exactly."""
    store = LocalStore(folder)
    raw = orjson.loads(store.read(OUTPUTS_MANIFEST))
    if not isinstance(raw, dict) or raw.get("integrity") != integrity_of(raw):
        raise CorruptCheckpointError(f"{Path(folder) / OUTPUTS_MANIFEST} fails its integrity check")
    manifest = OutputManifest.model_validate(raw)
    return decode_context(manifest.outputs, BlobStore(store, "blobs/"))
