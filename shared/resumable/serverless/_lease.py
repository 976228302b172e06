"""The heartbeat of a step attempt: its lease renewed from claim to commit, while it is ours."""

from __future__ import annotations

from typing import Any

from resumable._log import logger
from resumable.serverless import transitions
from resumable.serverless._engine import Engine


class Lease:
    """The heartbeat: renews the lease of ``attempt`` of ``step`` until the commit, only
    while ``owner`` holds it.

    ``lost`` turns true when the lease is no longer ours (another worker took the step
    over after it expired, or a resume reset it); ``should_stop()`` turns true then, when
    the run's cancellation was requested, and at the delivery's ``deadline``.
    """

    def __init__(
        self,
        engine: Engine,
        doc_id: str,
        step: str,
        *,
        owner: str,
        attempt: int,
        deadline: float,
        log_fields: dict[str, Any],
    ) -> None:
        self.engine = engine
        self.doc_id = doc_id
        self.step = step
        self.owner = owner
        self.attempt = attempt
        self.deadline = deadline
        self.log_fields = log_fields
        self.lost = False
        self.cancelled = False
        self._task: Any = None

    def __enter__(self) -> Lease:
        self._task = self.engine.runtime.every(
            self.engine.settings.heartbeat_seconds, self.beat, f"heartbeat-{self.step}"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._task.stop()

    def should_stop(self) -> bool:
        """The lease is gone, a cancel was requested, or the delivery's deadline is near."""
        return self.lost or self.cancelled or self.engine.runtime.now() >= self.deadline

    def beat(self) -> bool:
        """One renewal; ``False`` stops the heartbeat (the lease is gone)."""
        engine = self.engine
        try:
            _state, renewal = engine.runs.mutate(
                self.doc_id,
                lambda s: transitions.renew(
                    s,
                    self.step,
                    owner=self.owner,
                    attempt=self.attempt,
                    now=engine.runtime.now(),
                    lease_seconds=engine.settings.lease_seconds,
                ),
            )
        except Exception:  # a failed renewal is retried at the next beat
            logger.warning("heartbeat failed; will retry", exc_info=True, extra=self.log_fields)
            return True
        self.cancelled = renewal.cancel_requested
        if not renewal.owned:
            self.lost = True
            return False
        return True
