"""The users of the soak: they start runs and publish duplicate start and step messages
with the official Pub/Sub client, and cancel and resume runs through
``resumable.serverless._control``, each at the time the plan says.

One thread plays the operations in time order. An operation that must wait for its run
(a resume after a cancel, a roll-back of a completed run) looks at the run's document and
comes back a second later until the run is where it needs it, or the soak gives up.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import TimeoutError as FutureTimeoutError
from contextlib import contextmanager
from functools import partial
from itertools import count

import orjson
from google.api_core.exceptions import GoogleAPIError, RetryError
from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

from resumable.errors import ContentionError, RunControlError
from resumable.serverless import _naming as naming
from resumable.serverless._control import cancel_run, resume_run
from resumable.serverless._engine import Engine
from resumable.serverless._messages import StepMessage, encode
from resumable.serverless._run_state import RunState
from resumable.status import RunStatus

from .ledger import Ledger
from .pipeline import PIPELINE_NAME
from .plan import RunPlan

RECHECK_SECONDS = 1.0
# What a user's request may meet and retry: a run document too busy to update now, or an
# emulator too slow to answer. Anything else a control request raises is a finding.
TRANSIENT = (ContentionError, GoogleAPIError, RetryError, FutureTimeoutError)

# An operation returns ``None`` when done, or ``False`` to be tried again a moment later.
Action = Callable[[], bool | None]


class Users:
    def __init__(
        self,
        engine: Engine,
        ledger: Ledger,
        plans: list[RunPlan],
        *,
        project: str,
        prefix: str,
        patience: float,
    ) -> None:
        self.engine = engine
        self.ledger = ledger
        self.project = project
        self.prefix = prefix
        self.patience = patience  # how long an operation may wait for its run
        # Set when the soak's gate opens (no run can end before): patience counts from then,
        # so a machine slow to make its kills does not run out of it while runs are held.
        self.runs_may_end = threading.Event()
        self.publisher = pubsub_v1.PublisherClient()
        self.errors: list[str] = []
        self._queue: list[tuple[float, int, str, Action]] = []
        self._order = count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-users", daemon=True)
        self._began = 0.0
        for plan in plans:
            self._schedule(plan)

    # -- the schedule -----------------------------------------------------------------------

    def _at(self, when: float, name: str, action: Action) -> None:
        heapq.heappush(self._queue, (when, next(self._order), name, action))

    def _schedule(self, plan: RunPlan) -> None:
        self._at(plan.start_at, "start", lambda: self.start(plan, duplicate=False))
        for when in plan.duplicate_starts:
            self._at(when, "duplicate start", lambda: self.start(plan, duplicate=True))
        for when, step in plan.duplicate_steps:
            self._at(when, "duplicate step", partial(self.duplicate_step, plan, step))
        if plan.cancel_at is not None:
            self._at(plan.cancel_at, "cancel", lambda: self.cancel(plan))
        if plan.resume_at is not None:
            self._at(plan.resume_at, "resume", lambda: self.resume(plan, kind="resume"))
        if plan.from_step is not None:
            self._at(plan.start_at + 1.0, "roll back", lambda: self.roll_back(plan))

    def start_playing(self) -> None:
        self._began = time.monotonic()
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        deadline: dict[int, float] = {}
        while self._queue and not self._stop.is_set():
            when, order, name, action = self._queue[0]
            delay = self._began + when - time.monotonic()
            if delay > 0:
                self._stop.wait(min(delay, 0.5))
                continue
            heapq.heappop(self._queue)
            try:
                finished = action() is not False
            except TRANSIENT as exc:  # as a user would: try again in a moment
                self.ledger.count(f"user requests retried ({type(exc).__name__})")
                finished = False
            except Exception as exc:  # a request that should not fail: a finding
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                finished = True
            if finished:
                continue
            # Waiting for its run: again in a moment, until the soak's patience runs out
            # (counted once runs may end).
            give_up = float("inf")
            if self.runs_may_end.is_set():
                give_up = deadline.setdefault(order, time.monotonic() + self.patience)
            if time.monotonic() < give_up:
                again = time.monotonic() - self._began + RECHECK_SECONDS
                heapq.heappush(self._queue, (again, order, name, action))
            else:
                self.errors.append(f"{name}: gave up waiting for its run")

    # -- the operations -------------------------------------------------------------------

    def _publish(self, topic: str, data: bytes) -> None:
        path = self.publisher.topic_path(self.project, topic)
        self.publisher.publish(path, data).result(timeout=60)

    def start(self, plan: RunPlan, *, duplicate: bool) -> None:
        body = {"pipeline": PIPELINE_NAME, "params": plan.params, "run_id": plan.run_id}
        self._publish(naming.start_topic(self.prefix), orjson.dumps(body))
        self.ledger.count("duplicate starts" if duplicate else "starts")

    @contextmanager
    def _uncertain(
        self, run_id: str, kind: str, steps: frozenset[str] = frozenset()
    ) -> Iterator[None]:
        """A request that raised may have been applied (its answer lost): record it as
        perhaps applied. A refusal or contention is known not to have been applied."""
        try:
            yield
        except (RunControlError, ContentionError):
            raise
        except Exception:
            self.ledger.record(run_id, kind, None, steps)
            raise

    def _state(self, plan: RunPlan) -> RunState | None:
        return self.engine.runs.get(self.engine.doc_id("default", PIPELINE_NAME, plan.run_id))

    def duplicate_step(self, plan: RunPlan, step: str) -> bool | None:
        """Publish a step message as the engine would (generation from the run document)."""
        state = self._state(plan)
        if state is None:
            return False  # not started yet
        message = StepMessage(
            pipeline=PIPELINE_NAME, run_id=plan.run_id, step=step, generation=state.generation
        )
        self._publish(naming.step_topic(self.prefix, PIPELINE_NAME, step), encode(message))
        self.ledger.count("duplicate step messages")
        return None

    def cancel(self, plan: RunPlan) -> bool | None:
        state = self._state(plan)
        if state is None:
            return False
        with self._uncertain(plan.run_id, "cancel"):
            after = cancel_run(self.engine, state)
        applied = after.cancel_requested and not state.finished
        self.ledger.record(plan.run_id, "cancel", applied)
        self.ledger.count("cancels" if applied else "cancels of finished runs")
        if plan.resume_after_cancel:
            self._at(0.0, "resume after cancel", lambda: self.resume_after_cancel(plan))
        return None

    def resume(self, plan: RunPlan, *, kind: str) -> None:
        state = self._state(plan)
        if state is None:
            self.ledger.count("resumes refused")
            return
        try:
            with self._uncertain(plan.run_id, "resume"):
                resume_run(self.engine, state)
        except RunControlError:
            self.ledger.record(plan.run_id, "resume", False)
            self.ledger.count("resumes refused")
            return
        self.ledger.record(plan.run_id, "resume", True)
        self.ledger.count(kind + "s")

    def resume_after_cancel(self, plan: RunPlan) -> bool | None:
        state = self._state(plan)
        if state is None or not state.finished:
            return False
        self.resume(plan, kind="resume after cancel")
        return None

    def roll_back(self, plan: RunPlan) -> bool | None:
        """Once the run completed: ``resume --from-step`` (its steps from there re-run)."""
        assert plan.from_step is not None
        state = self._state(plan)
        if state is None or not state.finished:
            return False
        if state.status != RunStatus.COMPLETED:
            self.ledger.count("roll-backs not applicable")
            return None
        spec = self.engine.registry.get(PIPELINE_NAME).spec
        steps = frozenset({plan.from_step, *spec.descendants(plan.from_step)})
        try:
            with self._uncertain(plan.run_id, "from_step", steps):
                resume_run(self.engine, state, from_step=plan.from_step)
        except RunControlError:
            self.ledger.record(plan.run_id, "from_step", False, steps)
            self.ledger.count("roll-backs refused")
            return None
        self.ledger.record(plan.run_id, "from_step", True, steps)
        self.ledger.count("resumes --from-step")
        return None
