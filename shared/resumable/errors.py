"""The exceptions users can catch.

A small hierarchy, so callers can act on the kind of failure: a step's own error says
whether it is worth retrying; checkpoint errors say what differs and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence


class ResumableError(Exception):
    """Base class of every error raised by resumable."""


class PipelineDefinitionError(ResumableError, ValueError):
    """The pipeline's steps do not form a valid graph (unknown dependency, cycle, bad name)."""


class InvalidIdError(ResumableError, ValueError):
    """A run, tenant, pipeline or step id that could escape its folder or is malformed."""


class EncodingError(ResumableError, TypeError):
    """A context value that cannot be checkpointed exactly.

    ``key_path`` locates the value inside the context (``frames[3]["mask"]``) and
    ``type_name`` names its type, so the fix is obvious: convert the value, or register a
    codec for its type with :func:`resumable.register_codec`.
    """

    def __init__(self, key_path: str, type_name: str, reason: str = "") -> None:
        self.key_path = key_path
        self.type_name = type_name
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"cannot checkpoint context value at {key_path} of type {type_name}{detail}; "
            "convert it to a supported type or register a codec with resumable.register_codec"
        )


class CheckpointError(ResumableError):
    """A checkpoint that cannot be used. ``reasons`` lists each problem found."""

    def __init__(self, message: str, reasons: Sequence[str] = ()) -> None:
        self.reasons = list(reasons) or [message]
        super().__init__(message if not reasons else f"{message}: " + "; ".join(reasons))


class CorruptCheckpointError(CheckpointError):
    """The checkpoint's bytes are damaged: unreadable manifest, hash mismatch, missing blob."""


class IncompatibleCheckpointError(CheckpointError):
    """The checkpoint is intact but belongs to another pipeline, run or step graph."""


class StorageError(ResumableError):
    """The object store failed in a way the caller cannot fix by retrying the same call."""


class ObjectNotFoundError(StorageError, KeyError):
    """The object does not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "object not found"


class PreconditionFailedError(StorageError):
    """A conditional write lost: the object changed (or exists) since it was read."""


class StepError(ResumableError):
    """Raise from a step to control how its failure is handled.

    ``retryable=False`` fails the step and the run at once, without further attempts
    (in-process and serverless alike). Any other exception is treated as retryable up to
    the step's ``retries``.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)


class NonRetryableError(StepError):
    """A step failure that no retry can fix (bad input, missing file, invalid parameter)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class RetryableError(StepError):
    """A transient step failure (a timeout, a busy service): retry with backoff."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt of the step may succeed: every exception is, except a
    :class:`StepError` raised with ``retryable=False``."""
    return not (isinstance(exc, StepError) and not exc.retryable)


# -- raised by the serverless runner, the CLI and the deployment tools --------------------


class DeployError(ResumableError):
    """A deployment command failed (its output says why)."""


class BundleError(ResumableError):
    """A bundle that cannot be built, or that does not match the pipelines to deploy."""


class PipelineLoadError(ResumableError):
    """A ``MODULE:ATTR`` reference that does not lead to a pipeline."""


class NotConfiguredError(ResumableError):
    """No deployment is named by the environment and no local stack is running."""


class RunControlError(ResumableError):
    """A control request that does not apply to the run as it is (with the reason)."""


class TopologyError(ResumableError, ValueError):
    """The pipelines cannot be deployed as defined: two would share a topic or function
    name, a name breaks Pub/Sub's rules, or a step needs more delivery attempts than
    Pub/Sub allows. The message names what to change."""


class BadMessageError(ResumableError):
    """A message that no retry can make valid. ``run_id`` is set when it could be read."""

    def __init__(
        self, reason: str, *, run_id: str | None = None, pipeline: str | None = None,
        tenant_id: str | None = None,
    ) -> None:  # fmt: skip
        self.reason = reason
        self.run_id = run_id
        self.pipeline = pipeline
        self.tenant_id = tenant_id
        super().__init__(reason)


class RunDocumentError(ResumableError):
    """The run document cannot be written as computed (too large, or refused as invalid)."""


class ContentionError(ResumableError):
    """The run document kept changing under us: try again later."""


class RunNotFoundError(ResumableError, KeyError):
    """There is no run document of that id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "run not found"


class ReplayError(ResumableError):
    """The step cannot be replayed from this run (unknown step, inputs not committed)."""


class ConcurrentWriterError(CheckpointError):
    """Another process replaced this run's latest checkpoint since this one last wrote it."""


class OutputConflictError(NonRetryableError):
    """Two independent steps wrote the same context key."""
