"""The step protocol: what one delivery of "run step S of run R" does.

    claim → load → run → write → commit → publish      (the lease held from claim to commit)

Pub/Sub delivers at least once, possibly concurrently, possibly long after. Each stage is
written so that a crash, a duplicate or a stale worker at any point leads to the same end
state: every step's output committed once, and the run ending ``completed``, ``error`` or
``cancelled``. The decisions on the run document are pure transitions
(``resumable.serverless.transitions``); this module does the I/O around them.

- **claim** — take the step's lease under a new attempt number, the fencing token that
  shuts out every earlier worker; or learn that there is nothing to do (the run finished,
  the step completed — then re-publish its queued successors, healing a crash between
  commit and publish —, another worker holds a live lease, the message is stale).
- **load** — the params plus the outputs of S's completed ancestors, plus the progress
  S saved in an earlier attempt.
- **run** — the step function, with ``save_progress`` and ``should_stop``.
- **write** — S's output manifest under a name no other attempt uses.
- **commit** — only if the lease is still ours at the same attempt: S completed, its
  ready successors queued, the run finished when nothing is left.
- **publish** — the queued successors' messages; then ack.

A heartbeat renews the lease from the claim to the commit, so that however long loading,
running or writing takes, the lease lives while this worker does.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from resumable import tracing
from resumable._log import logger
from resumable.checkpoint import _deltas as deltas
from resumable.definition import _step_api as current_step
from resumable.definition._spec import delivery_seconds, step_updates
from resumable.definition._step_api import Continue
from resumable.errors import (
    BadMessageError,
    CheckpointError,
    ContentionError,
    EncodingError,
    NonRetryableError,
    RunDocumentError,
    RunNotFoundError,
    StepError,
)
from resumable.serverless import transitions
from resumable.serverless._engine import Engine, log_fields
from resumable.serverless._lease import Lease
from resumable.serverless._map import MapDriver, Waiting
from resumable.serverless._map_items import handle_item
from resumable.serverless._messages import StepMessage
from resumable.serverless._worker_attempt import Attempt, Outcome
from resumable.serverless.transitions import ClaimKind, Verdict
from resumable.status import RunStatus

__all__ = ["CRASH_ALLOWANCE", "Outcome", "StepAttempt", "handle_step", "max_attempts"]

# Re-exported: the deployment derives each subscription's delivery attempts from it.
CRASH_ALLOWANCE = transitions.CRASH_ALLOWANCE
max_attempts = transitions.max_attempts


def handle_step(engine: Engine, message: StepMessage) -> Outcome:
    """Process one delivery of a step message. Never raises for a bad message."""
    try:
        pipeline = engine.registry.get(message.pipeline)
    except BadMessageError as exc:
        return _bad_message(engine, message, exc.reason)
    spec = pipeline.spec
    if message.step not in spec.steps:
        return _bad_message(engine, message, f"pipeline {spec.name!r} has no step {message.step!r}")
    if engine.settings.step and engine.settings.step != message.step:
        return _bad_message(
            engine,
            message,
            f"step {message.step!r} was sent to the function of step {engine.settings.step!r}",
        )
    try:
        if message.item is not None or message.map_id is not None:
            item = handle_item(engine, spec, message)
            return Outcome(item.ack, item.reason)
        return StepAttempt(engine, pipeline, message).execute()
    except BadMessageError as exc:
        return _bad_message(engine, message, exc.reason)
    except RunNotFoundError:
        logger.error("step message for an unknown run: acked", extra=log_fields(message))
        return Outcome.done("unknown run")
    except ContentionError as exc:
        return Outcome.retry_later(str(exc))
    except RunDocumentError as exc:  # no retry can make the document writable
        logger.error(f"run document cannot be written: {exc}", extra=log_fields(message))
        return Outcome.done(f"run document cannot be written: {exc}")


class StepAttempt(Attempt):
    """One delivery of a step message, from claim to publish (its identity, its
    compare-and-set and its endings without output: :class:`Attempt`)."""

    # -- the protocol ---------------------------------------------------------------------

    def execute(self) -> Outcome:
        claim = self.claim()
        if claim.kind is ClaimKind.COMPLETED:
            self.publish(list(claim.republish))
            return Outcome.done(f"step already completed; re-published {list(claim.republish)}")
        if claim.kind is ClaimKind.BUSY:
            return Outcome.retry_later(claim.reason)
        if claim.kind is not ClaimKind.CLAIMED:
            return Outcome.done(f"{claim.kind}: {claim.reason}")
        self.attempt = claim.attempt
        tracing.annotate(attempt=self.attempt)
        logger.info(f"step {self.step.name} claimed", extra=self._fields())
        with self.lease() as lease:
            return self._attempt(lease)

    def lease(self) -> Lease:
        """The heartbeat that holds this attempt's lease until its commit."""
        return Lease(
            self.engine,
            self.doc_id,
            self.step.name,
            owner=self.owner,
            attempt=self.attempt,
            deadline=self.deadline,
            log_fields=self._fields(),
        )

    def _attempt(self, lease: Lease) -> Outcome:
        try:
            self.load()
        except Exception as exc:
            return self.unloadable(exc)
        result, ended = self._produce(lease)
        if ended is not None:
            return ended
        if (unread := self.unread_input()) is not None:
            return unread
        if lease.lost:
            logger.warning("lease lost while running: output discarded", extra=self._fields())
            return Outcome.done("lease lost; output discarded")
        if isinstance(result, Continue):
            return self.continue_later(result)
        if isinstance(result, Waiting):
            return self.wait_for_items(result)
        try:
            manifest, size, keys = self.write(result)
        except (EncodingError, StepError) as exc:
            return self.fail(str(exc))
        except Exception as exc:
            return self.release(exc)
        commit = self.commit(manifest, size, keys, self._final_items(result))
        if not commit.committed:
            logger.warning("stale attempt: commit refused, output discarded", extra=self._fields())
            return Outcome.done("stale attempt")
        logger.info(f"step {self.step.name} committed ({size} bytes)", extra=self._fields())
        if commit.run_status == RunStatus.COMPLETED:
            self.finish_run()
        self.publish(list(commit.publish))
        return Outcome.done(f"committed; published {list(commit.publish)}")

    def _produce(self, lease: Lease) -> tuple[Any, Outcome | None]:
        """The step's result — its function's, or for a map step its driver's — or the
        outcome that ends the attempt without one."""
        if self.step.map is not None:
            try:
                return self.drive_map(), None
            except (NonRetryableError, CheckpointError) as exc:  # its items or their input
                return None, self.record_error(exc)
            except Exception as exc:  # the services failed around the driver, not the step
                return None, self.release(exc)
        try:
            return self.run(lease), None
        except Exception as exc:
            return None, self.unread_input() or self.record_error(exc)

    @tracing.stage("claim")
    def claim(self) -> transitions.Claim:
        engine = self.engine
        now = engine.runtime.now()
        limit = delivery_seconds(self.step)
        state, claim = self._mutate(
            lambda s: transitions.claim(
                s,
                self.spec,
                self.step.name,
                owner=self.owner,
                now=now,
                lease_seconds=engine.settings.lease_seconds,
                generation=self.generation,
                delivery_seconds=limit,
            )
        )
        self.state = state
        self.deadline = now + limit - engine.settings.deadline_margin_seconds
        return claim

    @tracing.stage("load")
    def load(self) -> None:
        """Read the step's input: as encoded entries (what the output is diffed against)
        and decoded. One :class:`RunFiles` serves the whole delivery: its blob store
        remembers what was read, so unchanged input values are never uploaded again."""
        state = self._state
        self.files = self.engine.files(state)
        self.before = self.files.input_entries(state, self.spec, self.step.name)
        entries = dict(self.before)
        progress = state.steps[self.step.name].progress_manifest
        if progress:
            deltas.apply(entries, self.files.read_manifest(progress))
        self.context = self.files.decode_lazily(entries)  # read as the step uses it

    def unloadable(self, exc: Exception) -> Outcome:
        if isinstance(exc, CheckpointError | StepError):  # damaged or conflicting input: final
            return self.fail(f"cannot load the step's input: {exc}")
        return self.release(exc)  # a storage hiccup: another attempt may well succeed

    def unread_input(self) -> Outcome | None:
        """The step's input is read as the step uses it: a value that could not be read is
        a load failure, whatever the step made of it."""
        failure = getattr(self.context, "read_failure", None)
        return None if failure is None else self.unloadable(failure)

    @tracing.stage("map")
    def drive_map(self) -> dict[str, Any] | Waiting:
        """A map step's own delivery: dispatch its items, then wait or join (``_map``)."""
        return MapDriver(
            self.engine,
            self._state,
            self.spec,
            self.step,
            self._files,
            self.before,
            self.context,
            self.time_left,
            self.doc_id,
        ).drive()

    def wait_for_items(self, waiting: Waiting) -> Outcome:
        """Items are unfinished: the step waits queued; or the deadline cut the dispatch
        short, and a new delivery of the step goes on with it at once."""
        counts = {"total": waiting.total, "completed": waiting.completed, "failed": waiting.failed}
        state, verdict = self._mutate(
            lambda s: transitions.wait_for_items(
                s,
                self.step.name,
                owner=self.owner,
                attempt=self.attempt,
                now=self.engine.runtime.now(),
                map_id=waiting.map_id,
                items=counts,
            )
        )
        if verdict is Verdict.CONTINUED and waiting.dispatching:
            self.engine.publish_steps(state, [self.step.name])
        return Outcome.done(f"map step {verdict}: {counts}")

    def _final_items(self, result: Any) -> dict[str, int] | None:
        """A map step's final item counts, from its output."""
        if self.step.map is None or not isinstance(result, dict):
            return None
        failed = result.get(f"{self.step.name}_failed") or []
        value = result.get(self.step.name)
        total = value["items"] if isinstance(value, dict) else len(value or [])
        return {"total": total, "completed": total - len(failed), "failed": len(failed)}

    @tracing.stage("run")
    def run(self, lease: Lease) -> Any:
        function = self.step.function
        kwargs = current_step.step_kwargs(function, lease.should_stop, self.time_left)
        with current_step.bound(self.save_progress):
            return function(self.context, **kwargs)

    def time_left(self) -> float:
        """Seconds until this delivery's deadline (then ``should_stop()`` is true)."""
        return max(0.0, self.deadline - self.engine.runtime.now())

    def save_progress(self, given: Mapping[str, Any] | None) -> bool:
        """Put ``given`` into the running step's context and store the context, so that
        the step's next attempt starts from it; ``False`` if it could not be stored (the
        step goes on). Into the context, not beside it: whether the step was interrupted
        or not, its output is the same."""
        if given is not None and given is not self.context:
            self.context.update(given)
        try:
            name, _size, _keys = self._write_context(label=f"progress-{uuid.uuid4().hex[:8]}")
            _state, recorded = self._mutate(
                lambda s: transitions.record_progress(
                    s, self.step.name, owner=self.owner, attempt=self.attempt, manifest=name
                )
            )
        except EncodingError:
            raise  # the step's own doing: it sees the error
        except Exception:  # storage or the run document unreachable: not the step's fault
            logger.warning("progress not saved", exc_info=True, extra=self._fields())
            return False
        self.progress_saved = self.progress_saved or recorded
        return recorded

    def continue_later(self, request: Continue) -> Outcome:
        """The step asked to go on in a new delivery from the progress it saved."""
        if request.progress is not None:
            self.save_progress(request.progress)
        if not self.progress_saved:
            return self.fail(
                "returned Continue() without saving progress in this delivery: the next one "
                "would start from the same point (call save_progress() first, or pass "
                "Continue(progress=...))"
            )
        state, verdict = self._mutate(
            lambda s: transitions.continue_step(
                s,
                self.step.name,
                owner=self.owner,
                attempt=self.attempt,
                now=self.engine.runtime.now(),
            )
        )
        if verdict is Verdict.CONTINUED:
            self.engine.publish_steps(state, [self.step.name])
            logger.info(f"step {self.step.name} continues in a new delivery", extra=self._fields())
        return Outcome.done(f"step {verdict}")

    @tracing.stage("write")
    def write(self, result: Any) -> tuple[str, int, list[str]]:
        self.context.update(step_updates(self.step.name, result))
        return self._write_context()

    def _write_context(self, label: str = "") -> tuple[str, int, list[str]]:
        """The step's context as an output manifest of this attempt (its progress when
        ``label`` names one): what changed against its input, as entries."""
        return self._files.write_step_output(
            step=self.step.name,
            attempt=self.attempt,
            step_fingerprint=self.spec.step_fingerprints[self.step.name],
            before=self.before,
            context=self.context,
            label=label,
        )

    @tracing.stage("commit")
    def commit(
        self, manifest: str, size: int, keys: list[str], items: dict[str, int] | None = None
    ) -> transitions.Commit:
        state, commit = self._mutate(
            lambda s: transitions.commit(
                s,
                self.spec,
                self.step.name,
                owner=self.owner,
                attempt=self.attempt,
                manifest=manifest,
                size=size,
                keys=keys,
                now=self.engine.runtime.now(),
                items=items,
            )
        )
        self.state = state
        return commit

    @tracing.stage("publish")
    def publish(self, steps: list[str]) -> None:
        self.engine.publish_steps(self._state, steps)

    def finish_run(self) -> None:
        """The run completed: delete its checkpoints if the pipeline asks for it (a
        deletion that fails is retried by the retention sweep)."""
        if not self.pipeline.cleanup_on_success:
            return
        try:
            _state, allowed = self._mutate(transitions.begin_cleanup)
            if allowed:
                self._files.delete()
                self.engine.maps.delete_maps(self.doc_id)
                self._mutate(transitions.files_gone)
        except Exception:
            logger.warning("cleanup of a completed run failed", exc_info=True, extra=self._fields())


def _bad_message(engine: Engine, message: StepMessage, reason: str) -> Outcome:
    """Log a message no retry can fix, record the reason on its run if it has one, ack."""
    logger.log(logging.ERROR, f"bad step message, acked: {reason}", extra=log_fields(message))
    engine.record_rejection(message.tenant_id, message.pipeline, message.run_id, reason)
    return Outcome.done(f"bad message: {reason}")
