"""The context of an in-process run: checkpoint entries are the truth, objects a cache.

The run keeps what the serverless runner stores: the initial context's entries (*base*),
the delta each completed step made (*outputs*), and the delta each unfinished step saved
as progress. A step's input is the base plus its ancestors' outputs in graph order, plus
its own progress — whatever ran in between, and in whichever order. The final context is
the base plus every output in graph order. So a run gives the same context in-process and
serverless, interrupted or not.

Objects are a cache of those entries: ``live`` holds one object per key and
``live_entries`` the entry it holds. On the common path — steps run one at a time, each
depending on every step completed before it — a step gets the live objects themselves
(no copy) and may change them in place: the entries it leaves are computed at its commit,
and the objects then hold them. Any other step (a branch of a graph, a step of a parallel
run, a retry) gets private objects: copies of live objects that hold its input's entries,
decoded from storage otherwise. A failed attempt may have changed the live objects it
was given in place, so the cache is dropped after it and its retry decodes its input.

If a value cannot be encoded (or storage is down), the entries cannot follow the objects:
the run goes on *degraded* on its objects alone, as the original did, and re-bases on
the first checkpoint that encodes again.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from resumable.checkpoint import _deltas as deltas
from resumable.checkpoint._blobs import BlobStore
from resumable.checkpoint._codec import LARGE_BINARY
from resumable.checkpoint._deltas import Delta
from resumable.checkpoint._reuse import EntryCache
from resumable.checkpoint._segments import Entry, decode_context, encode_context
from resumable.definition._spec import PipelineSpec
from resumable.errors import OutputConflictError


@dataclass
class StepInput:
    """What one attempt of a step runs from."""

    step: str
    base: dict[str, Entry]  # the committed input: the step's output is diffed against it
    entries: dict[str, Entry]  # the input with the step's saved progress applied
    context: dict[str, Any]  # the objects the step gets
    snapshot: dict[str, Any]  # the objects it got, to see which keys it rebound
    shared: bool  # ``context`` is the run's live dict (changes in place reach the cache)


class RunContext:
    def __init__(self, spec: PipelineSpec, blobs: BlobStore, *, trust_steps: bool) -> None:
        self.spec = spec
        self.blobs = blobs
        self.trust_steps = trust_steps
        self.base: dict[str, Entry] = {}
        self.outputs: dict[str, Delta] = {}  # completed steps, in the order they completed
        self.progress: dict[str, Delta] = {}
        self.live: dict[str, Any] = {}
        self.live_entries: dict[str, Entry] = {}
        self.written_by: dict[str, str] = {}
        self.degraded = False
        # Entries of values that still hold what they held when encoded: a checkpoint
        # re-encodes only what changed, in place or not (exact without trusting steps).
        self.entry_cache = EntryCache(background=getattr(blobs.store, "background_io", True))

    # -- building ---------------------------------------------------------------------------

    def start(self, context: Mapping[str, Any]) -> None:
        """A fresh run from ``context``. Raises what encoding it raises (the run then goes
        on degraded; see :meth:`rebase`)."""
        self.live = dict(context)
        self.degraded = True
        self.rebase()

    def adopt(
        self, *, base: dict[str, Entry], outputs: dict[str, Delta], progress: dict[str, Delta]
    ) -> None:
        """Continue a checkpointed run from its entries (see :meth:`verify`)."""
        self.base = dict(base)
        self.outputs = dict(outputs)
        self.progress = dict(progress)
        self.live = {}
        self.live_entries = {}
        self.degraded = False
        for step in self.spec.order:
            delta = self.outputs.get(step)
            for key in delta.keys if delta else ():
                self.written_by[key] = step

    def verify(self) -> None:
        """Read every value the run will start from (the committed context into the
        object cache, the saved progress once): a damaged checkpoint shows now, as a
        :class:`~resumable.errors.CheckpointError`, not half way through a step."""
        self._fill_live(self.committed())
        for delta in self.progress.values():
            decode_context(delta.outputs, self.blobs)

    def rebase(self) -> None:
        """Leave degraded mode: the live objects become the base, completed steps keep no
        delta of their own. Raises if they still cannot be encoded."""
        if not self.degraded:
            return
        entries = encode_context(self.live, self.blobs, cache=self.entry_cache)
        self.entry_cache.retain(self.live)
        self.base = entries
        self.outputs = {step: Delta() for step in self.outputs}
        self.progress = {}
        self.live_entries = dict(entries)
        self.degraded = False

    # -- what is committed ------------------------------------------------------------------

    def composed(self, steps: Iterable[str]) -> dict[str, Entry]:
        """The base plus the outputs of ``steps`` (completed ones), in graph order."""
        wanted = set(steps)
        return deltas.compose(
            self.base,
            (self.outputs[s] for s in self.spec.order if s in wanted and s in self.outputs),
        )

    def committed(self) -> dict[str, Entry]:
        return self.composed(self.outputs)

    def final_context(self) -> dict[str, Any]:
        """The committed context as objects (the live ones where they hold it)."""
        if self.degraded:
            return dict(self.live)
        return self._materialize(self.committed(), share=True)

    # -- a step's attempt -------------------------------------------------------------------

    def input_for(self, step: str, *, isolated: bool) -> StepInput:
        """The input of an attempt of ``step``: ``isolated`` when other steps may run at the
        same time (then the step gets objects of its own)."""
        if self.degraded:
            context = copy.deepcopy(self.live) if isolated else self.live
            return StepInput(step, {}, {}, context, dict(context), shared=not isolated)
        base = self.composed(self.spec.ancestors(step))
        entries = dict(base)
        progress = self.progress.get(step)
        if progress is not None:
            deltas.apply(entries, progress)
        shared = not isolated and set(self.outputs) <= self.spec.ancestors(step)
        context = self._fill_live(entries) if shared else self._materialize(entries, share=False)
        return StepInput(step, base, entries, context, dict(context), shared)

    def _fill_live(self, entries: Mapping[str, Entry]) -> dict[str, Any]:
        """Make the live dict hold exactly ``entries`` (decoding what it lacks)."""
        stale = [k for k in self.live if k not in entries]
        for key in stale:
            del self.live[key]
            self.live_entries.pop(key, None)
        missing = {
            k: e for k, e in entries.items() if not deltas.same_entry(self.live_entries.get(k), e)
        }
        if missing:
            decoded = decode_context(missing, self.blobs)
            self.entry_cache.learn(decoded, missing, LARGE_BINARY)
            self.live.update(decoded)
            self.live_entries.update(missing)
        if list(self.live) != list(entries):  # keep the committed order of keys
            self.live = {k: self.live[k] for k in entries}
        return self.live

    def _materialize(self, entries: Mapping[str, Entry], *, share: bool) -> dict[str, Any]:
        cached = {
            k
            for k, e in entries.items()
            if k in self.live and deltas.same_entry(self.live_entries.get(k), e)
        }
        missing = {k: e for k, e in entries.items() if k not in cached}
        decoded = decode_context(missing, self.blobs) if missing else {}
        out: dict[str, Any] = {}
        for key in entries:
            if key in cached:
                out[key] = self.live[key] if share else copy.deepcopy(self.live[key])
            else:
                out[key] = decoded[key]
        return out

    def save_progress(self, attempt: StepInput, given: Mapping[str, Any] | None) -> Delta:
        """Put ``given`` into the step's context and record what the step changed so far."""
        if given is not None and given is not attempt.context:
            attempt.context.update(given)
        if self.degraded:
            return Delta()
        delta = deltas.diff(attempt.base, self._encode(attempt, given or {}))
        self.progress[attempt.step] = delta
        return delta

    def commit(self, attempt: StepInput, updates: Mapping[str, Any]) -> Delta:
        """The step returned ``updates``: record its output. Raises what encoding raises
        (the step is then committed degraded: see :meth:`commit_degraded`)."""
        context = attempt.context
        context.update(updates)
        if self.degraded:
            return self.commit_degraded(attempt)
        after = self._encode(attempt, updates)
        delta = deltas.diff(attempt.base, after)
        self._check_conflicts(attempt.step, delta)
        self.outputs[attempt.step] = delta
        self.progress.pop(attempt.step, None)
        for key in delta.keys:
            self.written_by[key] = attempt.step
        if attempt.shared:
            self.live_entries = dict(after)
        else:
            for key, entry in delta.outputs.items():
                self.live[key] = context[key]
                self.live_entries[key] = entry
            for key in delta.deleted:
                self.live.pop(key, None)
                self.live_entries.pop(key, None)
        return delta

    def commit_degraded(self, attempt: StepInput) -> Delta:
        """Record the step as completed on its objects alone (its entries are unknown)."""
        self.degraded = True
        if not attempt.shared:
            removed = [k for k in attempt.snapshot if k not in attempt.context]
            self.live.update(attempt.context)
            for key in removed:
                self.live.pop(key, None)
        self.outputs[attempt.step] = Delta()
        self.progress.pop(attempt.step, None)
        return Delta()

    def failed(self, attempt: StepInput) -> None:
        """An attempt ended with an exception: objects it was given may have been changed
        in place, so they no longer hold their entries."""
        if attempt.shared and not self.degraded:
            self.live = {}
            self.live_entries = {}

    def _encode(self, attempt: StepInput, returned: Mapping[str, Any]) -> dict[str, Entry]:
        context = attempt.context
        if not self.trust_steps:
            encoded = encode_context(context, self.blobs, cache=self.entry_cache)
            self.entry_cache.retain(context)
            return encoded
        # Trusted: a value neither returned nor rebound since the attempt began keeps the
        # entry it had (a change made to it in place goes unseen, by the user's choice).
        snapshot = attempt.snapshot
        changed = {
            k
            for k, v in context.items()
            if k in returned
            or k not in snapshot
            or snapshot[k] is not v
            or k not in attempt.entries
        }
        fresh = encode_context({k: context[k] for k in changed}, self.blobs)
        return {k: fresh[k] if k in changed else attempt.entries[k] for k in context}

    def _check_conflicts(self, step: str, delta: Delta) -> None:
        ancestors = self.spec.ancestors(step)
        for key in delta.keys:
            writer = self.written_by.get(key)
            if (
                writer
                and writer != step
                and writer not in ancestors
                and step not in self.spec.ancestors(writer)
            ):
                raise OutputConflictError(
                    f"steps {writer!r} and {step!r} both write context key {key!r} but neither "
                    "depends on the other: make one depend on the other or use distinct keys"
                )
