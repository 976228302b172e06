"""The commands that start and steer serverless runs: ``start``, ``status``, ``list``,
``watch``, ``cancel`` and ``resume`` (the deployment is found by
:func:`resumable.cli._deployment.engine_from_env`).

``start`` only publishes a start message, as any publisher would; ``cancel`` and ``resume``
change the run document (``resume`` then publishes the messages of the steps that are
ready); ``status``, ``list`` and ``watch`` only read.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from resumable._defaults import DEFAULT_TENANT
from resumable._ids import chosen_run_id, validate_id
from resumable.cli import _deployment as cli_cloud
from resumable.cli._app import Commands, ParamsOpt, parse_params
from resumable.cli._deployment import (
    JsonOpt,
    PipelineOpt,
    RunArg,
    TenantOpt,
    console_for,
    fail,
    find_run,
    pipeline_spec,
    print_json,
    reported_errors,
)
from resumable.cli._views import describe_run, run_view, runs_table, step_order
from resumable.cli._watch import follow
from resumable.errors import PipelineLoadError, RunControlError
from resumable.serverless import _naming as naming
from resumable.serverless._control import cancel_run, describe, resume_run
from resumable.serverless._engine import Engine
from resumable.serverless._map_status import item_summaries
from resumable.serverless._messages import StartMessage, encode
from resumable.serverless._run_state import RunState
from resumable.status import EXIT_USAGE, RunStatus, StepStatus

# -- start -------------------------------------------------------------------------------


commands = Commands()


@commands.command("start")
def start_command(
    pipeline: Annotated[
        str, typer.Argument(help="The deployed pipeline's name.", show_default=False)
    ],
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="The run's id (default: a new one).")
    ] = None,
    param: ParamsOpt = None,
    tenant: Annotated[str | None, typer.Option(help="The tenant the run belongs to.")] = None,
    json_output: JsonOpt = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Then follow the run, as `resumable watch`.")
    ] = False,
) -> None:
    """Start a serverless run by publishing its start message.

    The message is the one any publisher (or `gcloud pubsub topics publish`) would send;
    the start function creates the run from it. The run id is chosen here when not
    given, and printed. Publishing the same run id again starts nothing new.
    """
    try:
        params = parse_params(param or [])
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    with reported_errors():
        message = StartMessage(
            pipeline=validate_id(pipeline, "pipeline"),
            params=params,
            run_id=chosen_run_id(run_id),
            tenant_id=validate_id(tenant, "tenant id") if tenant else None,
        )
        engine = cli_cloud.engine_from_env()
        _check_served(engine, pipeline)
        assert message.run_id is not None
        tenant_id = message.tenant_id or DEFAULT_TENANT
        existing = engine.runs.get(engine.doc_id(tenant_id, pipeline, message.run_id))
        if existing is not None:
            typer.echo(
                f"note: run {message.run_id} already exists ({existing.status}); a start "
                "message for it starts nothing new",
                err=True,
            )
        topic = naming.start_topic(engine.settings.topic_prefix)
        message_id = engine.publisher.publish(topic, encode(message))
    topic_path = naming.topic_path(engine.settings.project, topic)
    if json_output and not watch:
        print_json(
            {
                "run_id": message.run_id,
                "pipeline": pipeline,
                "tenant_id": tenant_id,
                "params": params,
                "topic": topic_path,
                "message_id": message_id,
            }
        )
        return
    if not json_output:
        typer.echo(message.run_id)
        typer.echo(
            f"start message for run {message.run_id} of {pipeline} published to {topic_path} "
            f"(message id {message_id})"
        )
    if watch:
        raise typer.Exit(
            follow(engine, message.run_id, pipeline, tenant_id, json_output=json_output)
        )
    typer.echo(f"follow it with: resumable watch {message.run_id}")


def _check_served(engine: Engine, pipeline: str) -> None:
    """Refuse a pipeline the deployment does not serve, when its pipelines load here."""
    try:
        served = sorted(p.pipeline_name for p in engine.registry.all())
    except PipelineLoadError:
        return  # the start function checks it
    if served and pipeline not in served:
        raise RunControlError(
            f"unknown pipeline {pipeline!r}: this deployment serves {', '.join(served)}"
        )


# -- status, list, watch -----------------------------------------------------------------


@commands.command("status")
def status_command(
    run_id: RunArg,
    pipeline: PipelineOpt = None,
    tenant: TenantOpt = DEFAULT_TENANT,
    json_output: JsonOpt = False,
) -> None:
    """Show a serverless run and its steps.

    Per step, in the pipeline's order: status, attempt, start and end, checkpoint size,
    error; for a map step its items (completed of total, failed, running) and the failed
    items with their errors. Exit 0 when the run exists (whatever its status), 2 when
    there is no such run.
    """
    with reported_errors():
        engine = cli_cloud.engine_from_env()
        state = find_run(engine, run_id, pipeline=pipeline, tenant=tenant)
        spec = pipeline_spec(engine, state.pipeline)
        items = item_summaries(engine, state)
    if json_output:
        print_json(describe_run(state, spec, items))
        return
    console = console_for()
    console.print(run_view(state, step_order(state, spec), items=items))
    for hint in _hints(state):
        console.print(hint, style="dim", highlight=False)


def _hints(state: RunState) -> list[str]:
    where = f" --pipeline {state.pipeline}"
    if state.tenant_id != DEFAULT_TENANT:
        where += f" --tenant {state.tenant_id}"
    if state.status in (RunStatus.ERROR, RunStatus.CANCELLED):
        return [
            f"resume with: resumable resume {state.run_id}{where}",
            f"debug a step with: resumable replay {state.run_id} STEP{where}",
        ]
    if not state.finished:
        return [f"follow with: resumable watch {state.run_id}{where}"]
    return []


@commands.command("list")
def list_command(
    status: Annotated[
        str | None,
        typer.Option(help="Only runs with this status: " + ", ".join(s.value for s in RunStatus)),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many runs.")] = 20,
    json_output: JsonOpt = False,
) -> None:
    """List serverless runs, newest first."""
    if status is not None and status not in {s.value for s in RunStatus}:
        words = ", ".join(s.value for s in RunStatus)
        fail(f"--status {status!r} is not a run status: use one of {words}", EXIT_USAGE)
    with reported_errors():
        engine = cli_cloud.engine_from_env()
        states = engine.runs.query(status=status, limit=limit)
    if json_output:
        runs = []
        for state in states:
            described = describe(state)
            described.pop("steps")
            described["steps_completed"] = sum(
                1 for r in state.steps.values() if r.status == StepStatus.COMPLETED
            )
            described["steps_total"] = len(state.steps)
            runs.append(described)
        print_json({"runs": runs})
        return
    if not states:
        typer.echo("no runs" + (f" with status {status}" if status else ""))
        return
    console_for().print(runs_table(states))


# -- cancel, resume ----------------------------------------------------------------------


@commands.command("cancel")
def cancel_command(
    run_id: RunArg,
    pipeline: PipelineOpt = None,
    tenant: TenantOpt = DEFAULT_TENANT,
    json_output: JsonOpt = False,
) -> None:
    """Cancel a serverless run.

    No further step starts; a step already running finishes and its output is kept, then
    the run ends `cancelled`. Cancelling twice, or a finished run, changes nothing.
    """
    with reported_errors():
        engine = cli_cloud.engine_from_env()
        state = find_run(engine, run_id, pipeline=pipeline, tenant=tenant)
        order = step_order(state, pipeline_spec(engine, state.pipeline))
        after = state if state.finished else cancel_run(engine, state)
    running = [s for s in order if after.steps[s].status == StepStatus.RUNNING]
    stopped = _became(state, after, order, StepStatus.CANCELLED)
    if json_output:
        print_json(
            _change(
                after,
                cancel_requested=after.cancel_requested,
                running=running,
                cancelled_steps=stopped,
                published=[],
            )
        )
        return
    if state.finished:
        typer.echo(f"run {run_id} is already {state.status}; nothing to cancel")
        return
    if after.status == RunStatus.CANCELLED:
        typer.echo(f"run {run_id} cancelled")
    else:
        typer.echo(
            f"cancel requested for run {run_id}: {', '.join(running)} is running and finishes "
            "first (its output is kept), then the run ends cancelled"
        )
    if stopped:
        typer.echo(f"steps that will not run: {', '.join(stopped)}")
    typer.echo("nothing published: workers read the run document before every step")


@commands.command("resume")
def resume_command(
    run_id: RunArg,
    from_step: Annotated[
        str | None,
        typer.Option(
            "--from-step",
            help="Roll back to this step: it and every step after it run again, from its "
            "input checkpoint.",
        ),
    ] = None,
    pipeline: PipelineOpt = None,
    tenant: TenantOpt = DEFAULT_TENANT,
    json_output: JsonOpt = False,
) -> None:
    """Continue a failed or cancelled serverless run.

    Completed steps are not run again; --from-step rolls back to that step first (also
    on a completed run). Publishes the messages of the steps that are ready.
    """
    with reported_errors():
        engine = cli_cloud.engine_from_env()
        state = find_run(engine, run_id, pipeline=pipeline, tenant=tenant)
        if not engine.store.exists(state.params_manifest):
            raise RunControlError(
                f"run {run_id!r} has no stored checkpoints left (a completed run's are deleted "
                "unless its pipeline has cleanup_on_success=False): it cannot continue; start "
                "a new run"
            )
        after, published = resume_run(engine, state, from_step=from_step)
    prefix = engine.settings.topic_prefix
    topics = {
        step: naming.topic_path(
            engine.settings.project, naming.step_topic(prefix, after.pipeline, step)
        )
        for step in published
    }
    order = step_order(after, pipeline_spec(engine, after.pipeline))
    rerun = _became(after, state, order, StepStatus.COMPLETED)  # completed before, not now
    if json_output:
        print_json(_change(after, from_step=from_step, rolled_back=rerun, published=topics))
        return
    typer.echo(f"run {run_id} resumed" + (f" from step {from_step}" if from_step else ""))
    if rerun:
        typer.echo(f"completed steps that run again: {', '.join(rerun)}")
    for step, topic in topics.items():
        typer.echo(f"published step {step} to {topic}")
    typer.echo(f"follow it with: resumable watch {run_id}")


def _became(before: RunState, after: RunState, order: list[str], status: str) -> list[str]:
    """The steps (in ``order``) that have ``status`` in ``after`` but not in ``before``."""
    return [
        s for s in order if after.steps[s].status == status and before.steps[s].status != status
    ]


def _change(after: RunState, **details: Any) -> dict[str, Any]:
    """What ``--json`` prints for a cancel or a resume: the run as it now is, and what the
    command did to it."""
    return {"run_id": after.run_id, "pipeline": after.pipeline, "status": after.status, **details}


register = commands.register
