"""The deployed entry points, plus crash points the fault tests switch on with files.

``$RESUMABLE_TEST_FAULT_DIR/crash-before-commit-{run_id}-{step}`` makes the worker exit
(as a killed instance would) after writing the step's checkpoint and before committing
it; ``crash-before-publish-{run_id}-{step}`` after the commit and before publishing the
successors. Each file is consumed by the crash it causes, so the redelivery runs normally.
``unavailable-{run_id}-{step}`` makes every delivery of that step's message answer "retry
later" before it is claimed, as while the run store is down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import functions_framework
from cloudevents.http import CloudEvent
from werkzeug.exceptions import ServiceUnavailable

import resumable.serverless.entrypoints as entrypoints
from resumable.errors import BadMessageError
from resumable.serverless._engine import Engine
from resumable.serverless._messages import parse_step, pubsub_payload
from resumable.serverless._worker import StepAttempt
from resumable.serverless.entrypoints import dead_letter, start_run, watchdog

_FAULTS = Path(os.environ.get("RESUMABLE_TEST_FAULT_DIR", "/nonexistent"))
_real_commit = StepAttempt.commit
_real_publish = Engine.publish_steps


def _crash_if(kind: str, run_id: str, step: str) -> None:
    marker = _FAULTS / f"{kind}-{run_id}-{step}"
    if marker.exists():
        marker.unlink()
        os._exit(137)


def _commit_step(attempt: StepAttempt, *args: Any) -> Any:
    step = attempt.step.name
    _crash_if("crash-before-commit", attempt.doc_id.split("~")[-1], step)
    commit = _real_commit(attempt, *args)
    if commit.committed:
        attempt.engine._committed_step = step  # type: ignore[attr-defined]
    return commit


def _publish_steps(self: Engine, state: Any, steps: Any) -> list[str]:
    committed = getattr(self, "_committed_step", None)
    if committed is not None:
        self._committed_step = None  # type: ignore[attr-defined]
        _crash_if("crash-before-publish", state.run_id, committed)
    return _real_publish(self, state, steps)


@functions_framework.cloud_event
def run_step(event: CloudEvent) -> None:
    try:
        message = parse_step(pubsub_payload(event.get_data())[0])
        marker = _FAULTS / f"unavailable-{message.run_id}-{message.step}"
    except BadMessageError:
        marker = None
    if marker is not None and marker.exists():
        raise ServiceUnavailable(description="retry later: the run store is unavailable")
    entrypoints.run_step(event)


StepAttempt.commit = _commit_step  # type: ignore[method-assign]
Engine.publish_steps = _publish_steps  # type: ignore[method-assign]

__all__ = ["dead_letter", "run_step", "start_run", "watchdog"]
