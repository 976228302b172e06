"""The serverless state machine: every change of a run document, as a pure function.

Each transition takes the run document as read, the event's data and ``now``, and
returns a ``Decision``: the new document (``None`` to leave it as it is) and a typed
result saying what the caller must do (ack, retry later, publish steps). Nothing here
does I/O; ``worker`` and ``control`` read and write around these functions, and the run-
state store may apply a transition several times on fresh reads.

Where each invariant of the step protocol is enforced:

- *one owner per attempt* — :func:`claim` hands out attempt numbers, and every later
  change by a worker is checked by :func:`owns` (lease owner **and** attempt);
- *output committed once* — :func:`commit` only for the owner of a running step;
- *stale messages and dead letters change nothing* — :func:`claim` and
  :func:`dead_letter` compare the message's run generation with the document's;
- *every run ends* — :func:`commit` finishes the run once every step completed (a
  requested cancel does not hide that), :func:`claim` gives up a step past its attempt
  limit, and :func:`repair` (the watchdog) finishes or re-queues a run left with no
  work in flight;
- *bounded documents* — stored errors are cut to :data:`MAX_ERROR_CHARS`; a map step's
  items live in documents of their own (``_item``), never in the run document.
"""

from resumable.serverless.transitions._attempt import (
    Claim,
    ClaimKind,
    Commit,
    Renewal,
    Verdict,
    claim,
    commit,
    continue_step,
    record_failure,
    record_progress,
    renew,
    wait_for_items,
)
from resumable.serverless.transitions._rules import (
    CRASH_ALLOWANCE,
    MAX_ERROR_CHARS,
    all_completed,
    apply_cancel,
    bounded,
    dependencies_done,
    lease_live,
    max_attempts,
    owns,
)
from resumable.serverless.transitions._run import (
    Repair,
    Resumption,
    begin_cleanup,
    cancel,
    dead_letter,
    expire,
    files_gone,
    reject_message,
    repair,
    resume,
)

__all__ = [
    "CRASH_ALLOWANCE",
    "MAX_ERROR_CHARS",
    "Claim",
    "ClaimKind",
    "Commit",
    "Renewal",
    "Repair",
    "Resumption",
    "Verdict",
    "all_completed",
    "apply_cancel",
    "begin_cleanup",
    "bounded",
    "cancel",
    "claim",
    "commit",
    "continue_step",
    "dead_letter",
    "dependencies_done",
    "expire",
    "files_gone",
    "lease_live",
    "max_attempts",
    "owns",
    "record_failure",
    "record_progress",
    "reject_message",
    "renew",
    "repair",
    "resume",
    "wait_for_items",
]
