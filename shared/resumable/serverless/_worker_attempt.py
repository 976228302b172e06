"""One attempt of a step, as the step protocol (``_worker``) holds it.

:class:`Attempt` is what every stage of a delivery works on: who holds the attempt (an
owner unique to the delivery, the attempt number that fences earlier workers), the run
document it changes through one compare-and-set, the files of its run; and the ways an
attempt ends without output — a retry, a release, a failure —, each one transition of
the run document and an :class:`Outcome` for Pub/Sub. ``_worker.StepAttempt`` adds the
stages from claim to publish.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from resumable._log import logger
from resumable.checkpoint._segments import Entry
from resumable.definition._loader import PipelineLike as Pipeline
from resumable.definition._spec import StepSpec
from resumable.errors import is_retryable
from resumable.serverless import transitions
from resumable.serverless._engine import Engine, log_fields
from resumable.serverless._messages import StepMessage
from resumable.serverless._run_files import RunFiles
from resumable.serverless._run_state import Decision, RunState
from resumable.serverless.transitions import Verdict

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """How to answer the delivery: ``ack`` (2xx) or "retry later" (non-2xx)."""

    ack: bool
    reason: str

    @classmethod
    def done(cls, reason: str) -> Outcome:
        return cls(True, reason)

    @classmethod
    def retry_later(cls, reason: str) -> Outcome:
        return cls(False, reason)


class Attempt:
    """A delivery's attempt of its step: identity, run document, files, and its endings.

    ``owner`` is unique to this delivery (several deliveries may share one instance), so
    the lease it takes is recognisably its own.
    """

    def __init__(self, engine: Engine, pipeline: Pipeline, message: StepMessage) -> None:
        self.engine = engine
        self.pipeline = pipeline
        self.spec = pipeline.spec
        self.step: StepSpec = pipeline.spec.steps[message.step]
        self.generation = message.generation
        self.doc_id = engine.doc_id(message.tenant_id, message.pipeline, message.run_id)
        self.owner = f"{engine.worker_id}-{uuid.uuid4().hex[:8]}"
        self.attempt = 0
        self.state: RunState | None = None
        self.files: RunFiles | None = None
        self.before: dict[str, Entry] = {}
        self.context: dict[str, Any] = {}
        self.deadline = float("inf")  # when should_stop() turns true: time to wrap up
        self.progress_saved = False  # by this delivery

    # -- attempts that end without output --------------------------------------------------

    def record_error(self, exc: Exception) -> Outcome:
        """The step raised: retry later if it may succeed, else fail the step and the run."""
        message = f"{type(exc).__name__}: {exc}"
        logger.warning(
            f"step {self.step.name} raised {message}", exc_info=exc, extra=self._fields()
        )
        return self._end(message, retryable=is_retryable(exc), counts=True)

    def release(self, exc: Exception) -> Outcome:
        """The platform failed around the step (storage unreachable): let another attempt
        try, without counting it against the step's ``retries``."""
        message = f"{type(exc).__name__}: {exc}"
        logger.warning(f"step {self.step.name}: {message}", exc_info=exc, extra=self._fields())
        return self._end(message, retryable=True, counts=False)

    def fail(self, reason: str) -> Outcome:
        """Fail the step and its run at once (a problem no retry can fix)."""
        logger.error(f"step {self.step.name} failed: {reason}", extra=self._fields())
        return self._end(reason, retryable=False, counts=True)

    def _end(self, error: str, *, retryable: bool, counts: bool) -> Outcome:
        _state, verdict = self._mutate(
            lambda s: transitions.record_failure(
                s,
                self.step,
                owner=self.owner,
                attempt=self.attempt,
                error=error,
                retryable=retryable,
                counts=counts,
                now=self.engine.runtime.now(),
            )
        )
        if verdict is Verdict.RETRY:
            return Outcome.retry_later(f"retryable: {error}")
        return Outcome.done(f"step {verdict}: {error}")

    # -- helpers ----------------------------------------------------------------------------

    def _mutate(self, transition: Callable[[RunState], Decision[T]]) -> tuple[RunState, T]:
        return self.engine.runs.mutate(self.doc_id, transition)

    @property
    def _state(self) -> RunState:
        assert self.state is not None, "claimed first"
        return self.state

    @property
    def _files(self) -> RunFiles:
        assert self.files is not None, "loaded first"
        return self.files

    def _fields(self) -> dict[str, Any]:
        return log_fields(self.state, step=self.step.name, attempt=self.attempt)
