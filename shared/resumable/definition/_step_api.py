"""The running step, as seen from inside it: saving progress mid-step.

Both runners (in-process and serverless) bind a progress callback while a step runs, so
a step calls the same :func:`save_progress` wherever it runs.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from resumable.errors import ResumableError

ProgressCallback = Callable[[Mapping[str, Any] | None], bool]

_callback: contextvars.ContextVar[ProgressCallback] = contextvars.ContextVar(
    "resumable_progress_callback"
)


@contextmanager
def bound(callback: ProgressCallback) -> Iterator[None]:
    """Make ``callback`` the running step's progress saver for the duration."""
    token = _callback.set(callback)
    try:
        yield
    finally:
        _callback.reset(token)


def save_progress(context: Mapping[str, Any] | None = None) -> bool:
    """Checkpoint the running step's progress now; call it from inside a step.

    The step is not marked completed: after an interruption it runs again, starting from
    the context saved here (so it can skip the items it already finished). ``None`` saves
    the context the step was given. Returns whether the checkpoint was written.
    """
    try:
        callback = _callback.get()
    except LookupError:
        raise ResumableError("save_progress() was called outside a running step") from None
    return callback(context)


class Continue:
    """Return it from a step to be called again from its saved progress: the step has
    more to do than one delivery allows (``should_stop()`` turned true at the deadline).

    Serverless, a new delivery of the step continues it — not a failure, not a retry,
    no attempt counted; in-process the runner calls the step again at once. Progress must
    have been saved (with ``save_progress``, or given here as ``progress``): a step that
    asks to continue without saving anything would start over forever, so that is an
    error.
    """

    def __init__(self, progress: Mapping[str, Any] | None = None) -> None:
        self.progress = progress

    def __repr__(self) -> str:
        return f"Continue(progress={self.progress!r})"


def step_kwargs(
    function: Callable[..., Any],
    should_stop: Callable[[], bool],
    time_left: Callable[[], float] = lambda: float("inf"),
) -> dict[str, Any]:
    """The optional keyword arguments a step asked for by naming them in its signature:
    ``should_stop`` (a stop is requested or the delivery's deadline is near),
    ``time_left`` (seconds until that deadline) and ``save_progress``."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}
    kwargs: dict[str, Any] = {}
    if "should_stop" in parameters:
        kwargs["should_stop"] = should_stop
    if "time_left" in parameters:
        kwargs["time_left"] = time_left
    if "save_progress" in parameters:
        kwargs["save_progress"] = save_progress
    return kwargs
