"""Heartbeats: a lease renewed from claim to finish, while it is ours.

:class:`Heartbeat` is the loop both kinds of delivery share — renew every
``heartbeat_seconds``, note a loss or a stop request, keep going through a failed
renewal. :class:`Lease` renews a step attempt's lease on the run document; a map item's
lease on its item document is ``_map_items.ItemLease``.
"""

from __future__ import annotations

from typing import Any

from resumable._log import logger
from resumable.serverless import transitions
from resumable.serverless._engine import Engine


class Heartbeat:
    """Renews a lease until the work it guards ends, only while the lease is ours.

    ``lost`` turns true when the lease is no longer ours (another worker took the work
    over after it expired, or a resume reset it); ``should_stop()`` turns true then, when
    a stop was requested (the run's cancellation), and at the delivery's ``deadline``.
    Subclasses say how one renewal is done (:meth:`renew`).
    """

    def __init__(
        self, engine: Engine, name: str, *, deadline: float, log_fields: dict[str, Any]
    ) -> None:
        self.engine = engine
        self.name = name
        self.deadline = deadline
        self.log_fields = log_fields
        self.lost = False
        self.cancelled = False
        self._task: Any = None

    def __enter__(self) -> Heartbeat:
        self._task = self.engine.runtime.every(
            self.engine.settings.heartbeat_seconds, self.beat, f"heartbeat-{self.name}"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._task.stop()

    def should_stop(self) -> bool:
        """The lease is gone, a cancel was requested, or the delivery's deadline is near."""
        return self.lost or self.cancelled or self.engine.runtime.now() >= self.deadline

    def renew(self) -> tuple[bool, bool]:
        """One renewal: whether the lease is still ours, and whether to stop."""
        raise NotImplementedError

    def beat(self) -> bool:
        """One renewal; ``False`` stops the heartbeat (the lease is gone)."""
        try:
            owned, self.cancelled = self.renew()
        except Exception:  # a failed renewal is retried at the next beat
            logger.warning("heartbeat failed; will retry", exc_info=True, extra=self.log_fields)
            return True
        if not owned:
            self.lost = True
            return False
        return True


class Lease(Heartbeat):
    """The heartbeat of a step attempt: renews the lease of ``attempt`` of ``step`` on the
    run document until the commit, only while ``owner`` holds it."""

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
        super().__init__(engine, step, deadline=deadline, log_fields=log_fields)
        self.doc_id = doc_id
        self.step = step
        self.owner = owner
        self.attempt = attempt

    def __enter__(self) -> Lease:
        super().__enter__()
        return self

    def renew(self) -> tuple[bool, bool]:
        engine = self.engine
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
        return renewal.owned, renewal.cancel_requested
