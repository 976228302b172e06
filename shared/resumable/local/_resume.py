"""Adopting a run's checkpoint to continue it: which steps stay completed, and the context
the others start from."""

from __future__ import annotations

from dataclasses import dataclass, field

from resumable.checkpoint._deltas import Delta
from resumable.checkpoint._manifest import Manifest
from resumable.checkpoint._segments import decode_context
from resumable.checkpoint._store import CheckpointStore, LoadedCheckpoint
from resumable.definition._spec import PipelineSpec
from resumable.errors import CheckpointError
from resumable.local._run_context import RunContext
from resumable.status import StepStatus


class NothingToResume(CheckpointError):
    """A version change left no checkpoint of release 0.1.0 to roll back to."""

    def __init__(self) -> None:
        super().__init__("no earlier checkpoint to roll back to")


@dataclass
class Adoption:
    """The steps that stay completed, the manifest they come from, what to tell the user."""

    completed: list[str]
    manifest: Manifest
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def adopt(
    store: CheckpointStore, spec: PipelineSpec, context: RunContext, loaded: LoadedCheckpoint
) -> Adoption:
    """Make ``context`` continue ``loaded``. Raises :class:`CheckpointError` (the
    checkpoint is unusable) or :class:`NothingToResume`."""
    manifest = loaded.manifest
    plan = store.plan_resume(manifest, spec)
    adoption = Adoption(list(plan.completed), manifest, warnings=list(plan.reasons))
    if manifest.base is not None and manifest.outputs is not None:
        _adopt_entries(spec, context, manifest, adoption.completed)
    else:
        _adopt_release_0_1(store, context, loaded, adoption, bool(plan.invalidated))
    return adoption


def _adopt_entries(
    spec: PipelineSpec, context: RunContext, manifest: Manifest, valid: list[str]
) -> None:
    """A checkpoint of this release: drop what changed steps did, keep the rest."""
    assert manifest.base is not None and manifest.outputs is not None
    outputs = {s: d for s, d in manifest.outputs.items() if s in valid}
    progress = {
        s: d
        for s, d in manifest.progress.items()
        if s in spec.steps
        and s not in valid
        and manifest.step_fingerprints.get(s) == spec.step_fingerprints[s]
    }
    context.adopt(base=manifest.base, outputs=outputs, progress=progress)
    context.verify()


def _adopt_release_0_1(
    store: CheckpointStore,
    context: RunContext,
    loaded: LoadedCheckpoint,
    adoption: Adoption,
    invalidated: bool,
) -> None:
    """A checkpoint of release 0.1.0 (or the original's 1.0): its context is the run's
    whole context, a step's progress merged in. After a version change, roll back to the
    newest checkpoint taken at a commit whose completed steps are all still valid."""
    if invalidated:
        keep = set(adoption.completed)
        for sequence in reversed(store.history()):
            manifest = store.load_manifest(sequence)
            if set(manifest.completed_steps) <= keep and _taken_at_commit(manifest):
                adoption.notes.append(f"rolling back to checkpoint #{sequence}")
                loaded = store.load(sequence)
                adoption.completed = list(loaded.manifest.completed_steps)
                break
        else:
            raise NothingToResume
    elif loaded.migrated_from is None:
        loaded.context = decode_context(loaded.manifest.context, store.blobs)
    context.start(loaded.context)
    context.outputs = {step: Delta() for step in adoption.completed}


def _taken_at_commit(manifest: Manifest) -> bool:
    """Whether a checkpoint of release 0.1.0 was taken when a step completed (not at a
    progress save, which mixes a running step's partial results into its context)."""
    if manifest.kind is not None:
        return manifest.kind == "commit"
    return not any(r.status == StepStatus.RUNNING for r in manifest.steps_summary.values())
