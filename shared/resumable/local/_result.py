"""What ``Pipeline.run()`` returns: a dict, as in the original API, typed."""

from __future__ import annotations

from typing import Any, TypedDict


class RunResult(TypedDict):
    """The outcome of ``Pipeline.run()``.

    ``steps_completed`` ran in this call, ``steps_skipped`` had completed before and did not
    run again, ``context`` is the committed context (the initial one plus every completed
    step's output, in graph order), ``steps`` the record of every step.
    """

    pipeline_name: str
    status: str
    run_guid: str
    run_id: str
    tenant_id: str
    run_folder: str
    steps_completed: list[str]
    steps_failed: list[str]
    steps_skipped: list[str]
    errors: list[str]
    warnings: list[str]
    context: dict[str, Any]
    resumed_from_checkpoint: bool
    steps: dict[str, dict[str, Any]]
    duration_seconds: float
    checkpoint_sequence: int


def interrupted(
    *, pipeline_name: str, run_id: str, tenant_id: str, run_folder: str, status: str, error: str
) -> RunResult:
    """The result of a run that ``run()`` could not finish (a second Ctrl-C, an error
    raised out of it): nothing is known of its steps here; its checkpoint tells."""
    return RunResult(
        pipeline_name=pipeline_name,
        status=status,
        run_guid=run_id,
        run_id=run_id,
        tenant_id=tenant_id,
        run_folder=run_folder,
        steps_completed=[],
        steps_failed=[],
        steps_skipped=[],
        errors=[error],
        warnings=[],
        context={},
        resumed_from_checkpoint=False,
        steps={},
        duration_seconds=0.0,
        checkpoint_sequence=0,
    )
