"""The heartbeat of a step attempt: its lease renewed from claim to commit, while it is ours."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resumable._log import logger
from resumable.serverless import transitions

if TYPE_CHECKING:
    from resumable.serverless._worker import StepAttempt


class Lease:
    """The heartbeat: renews the attempt's lease until the commit, only while it is ours.

    ``lost`` turns true when the lease is no longer ours (another worker took the step
    over after it expired, or a resume reset it); ``should_stop()`` turns true then, when
    the run's cancellation was requested, and at the delivery's deadline.
    """

    def __init__(self, attempt: StepAttempt) -> None:
        self.attempt = attempt
        self.lost = False
        self.cancelled = False
        self._task: Any = None

    def __enter__(self) -> Lease:
        engine = self.attempt.engine
        self._task = engine.runtime.every(
            engine.settings.heartbeat_seconds, self.beat, f"heartbeat-{self.attempt.step.name}"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._task.stop()

    def should_stop(self) -> bool:
        """The lease is gone, a cancel was requested, or the delivery's deadline is near."""
        attempt = self.attempt
        return self.lost or self.cancelled or attempt.engine.runtime.now() >= attempt.deadline

    def beat(self) -> bool:
        """One renewal; ``False`` stops the heartbeat (the lease is gone)."""
        attempt = self.attempt
        engine = attempt.engine
        try:
            _state, renewal = attempt._mutate(
                lambda s: transitions.renew(
                    s,
                    attempt.step.name,
                    owner=attempt.owner,
                    attempt=attempt.attempt,
                    now=engine.runtime.now(),
                    lease_seconds=engine.settings.lease_seconds,
                )
            )
        except Exception:  # a failed renewal is retried at the next beat
            logger.warning("heartbeat failed; will retry", exc_info=True, extra=attempt._fields())
            return True
        self.cancelled = renewal.cancel_requested
        if not renewal.owned:
            self.lost = True
            return False
        return True
