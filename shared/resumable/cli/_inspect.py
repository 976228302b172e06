"""The commands that look into a serverless run's checkpoints: ``checkpoint show`` and
``replay`` (re-run one step here on its stored input). Both only read the run.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from resumable._defaults import DEFAULT_TENANT
from resumable.checkpoint._summary import summarize
from resumable.cli import _deployment as cli_cloud
from resumable.cli._app import Commands
from resumable.cli._progress import format_size
from resumable.cli._views import step_order
from resumable.definition._spec import PipelineSpec
from resumable.errors import RunControlError
from resumable.serverless._engine import Engine
from resumable.serverless._replay import load_replay, replay_step, save_outputs
from resumable.serverless._run_state import RunState
from resumable.status import EXIT_FAILED, StepStatus


def value_summary(value: Any) -> dict[str, Any]:
    """``{"type": "ndarray", "dtype": ..., "shape": [...]}`` for an array, else the
    value's type and its JSON summary (see :mod:`resumable.checkpoint._summary`)."""
    summary = summarize(value)
    if isinstance(summary, dict) and summary.get("type") == "ndarray":
        return summary
    described: dict[str, Any] = {"type": type(value).__name__, "value": summary}
    if isinstance(value, list | tuple | set | frozenset | dict | str | bytes):
        described["len"] = len(value)
    return described


def _short(summary: dict[str, Any], width: int = 60) -> str:
    if summary.get("type") == "ndarray":
        return f"{summary['dtype']} {tuple(summary['shape'])}"
    text = json.dumps(summary.get("value"), ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _values_table(values: dict[str, dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, show_header=True)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, summary in values.items():
        table.add_row(key, str(summary["type"]), _short(summary))
    return table


# -- checkpoint show, replay -------------------------------------------------------------

checkpoint_app = typer.Typer(
    help="Inspect the stored checkpoints of serverless runs.", no_args_is_help=True
)
commands = Commands()
commands.group("checkpoint", checkpoint_app)


@checkpoint_app.command("show")
def checkpoint_show_command(
    run_id: cli_cloud.RunArg,
    step: Annotated[
        str | None, typer.Option("--step", help="Also summarize this step's input context.")
    ] = None,
    pipeline: cli_cloud.PipelineOpt = None,
    tenant: cli_cloud.TenantOpt = DEFAULT_TENANT,
    json_output: cli_cloud.JsonOpt = False,
) -> None:
    """Show a serverless run's stored checkpoints.

    The params, and per step the committed output manifest, its size and the keys it
    wrote. With --step, the keys, types and array shapes of the context that step starts
    from. Reads only.
    """
    with cli_cloud.reported_errors():
        engine = cli_cloud.engine_from_env()
        state = cli_cloud.find_run(engine, run_id, pipeline=pipeline, tenant=tenant)
        spec = cli_cloud.pipeline_spec(engine, state.pipeline)
        report = _checkpoint_report(engine, state, spec, step)
    if json_output:
        cli_cloud.print_json(report)
        return
    console = cli_cloud.console_for()
    console.print(f"[bold]{state.pipeline}[/] · run {state.run_id} · {state.status}")
    console.print(f"checkpoints in {report['run_folder']}", highlight=False)
    run_prefix = engine.files(state).prefix  # object names below are relative to it
    params = report["params"]
    console.print(f"params: {params['manifest'].removeprefix(run_prefix)}", highlight=False)
    console.print(_values_table(params["values"]))
    table = Table(box=None, pad_edge=False)
    for column in ("step", "status", "manifest", "bytes", "output keys"):
        table.add_column(column, no_wrap=column != "output keys", overflow="fold")
    for name, entry in report["steps"].items():
        size = entry["checkpoint_bytes"]
        table.add_row(
            name,
            entry["status"],
            (entry["manifest"] or "").removeprefix(run_prefix),
            format_size(size) if size else "",
            ", ".join(entry["output_keys"]),
        )
    console.print(table)
    if "input" in report:
        built = report["input"]["from_steps"]
        console.print(
            f"input of step {step}: params"
            + (f" + outputs of {', '.join(built)}" if built else ""),
            highlight=False,
        )
        console.print(_values_table(report["input"]["keys"]))


def _checkpoint_report(
    engine: Engine, state: RunState, spec: PipelineSpec | None, step: str | None
) -> dict[str, Any]:
    files = engine.files(state)
    params = files.decode(files.read_manifest(state.params_manifest).outputs)
    report: dict[str, Any] = {
        "run_id": state.run_id,
        "pipeline": state.pipeline,
        "tenant_id": state.tenant_id,
        "status": state.status,
        "run_folder": files.run_folder,
        "params": {
            "manifest": state.params_manifest,
            "values": {key: value_summary(value) for key, value in params.items()},
        },
        "steps": {
            name: {
                "status": state.steps[name].status,
                "manifest": state.steps[name].manifest,
                "checkpoint_bytes": state.steps[name].checkpoint_bytes,
                "output_keys": list(state.steps[name].output_keys),
                "progress_manifest": state.steps[name].progress_manifest,
            }
            for name in step_order(state, spec)
        },
    }
    if step is not None:
        if spec is None:
            raise RunControlError(
                f"pipeline {state.pipeline!r} is not loadable here, and its step graph is "
                "needed to build a step's input: add it to RESUMABLE_PIPELINES"
            )
        if step not in spec.steps:
            raise RunControlError(
                f"pipeline {spec.name!r} has no step {step!r}: {', '.join(spec.order)}"
            )
        context = files.context_at(state, spec, step)
        report["input"] = {
            "step": step,
            "from_steps": [
                n
                for n in spec.order
                if n in spec.ancestors(step) and state.steps[n].status == StepStatus.COMPLETED
            ],
            "keys": {key: value_summary(value) for key, value in context.items()},
        }
    return report


@commands.command("replay")
def replay_command(
    run_id: cli_cloud.RunArg,
    step: Annotated[str, typer.Argument(help="The step to run again.", show_default=False)],
    pipeline: cli_cloud.PipelineOpt = None,
    tenant: cli_cloud.TenantOpt = DEFAULT_TENANT,
    json_output: cli_cloud.JsonOpt = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Store the values the step changed, exactly, in this folder "
            "(read back with resumable.serverless._replay.load_outputs).",
        ),
    ] = None,
) -> None:
    """Re-run one step of a serverless run here, for debugging.

    The step gets the input it had in the cloud (params plus its ancestors' committed
    outputs); what it changed is summarized. Never writes to the run or publishes
    anything. Exit 1 if the step raises (its traceback is printed).
    """
    # With --json, stdout carries the report only: what the step prints goes to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if json_output else contextlib.nullcontext()
    with quiet:
        with cli_cloud.reported_errors():
            engine = cli_cloud.engine_from_env()
            state = cli_cloud.find_run(engine, run_id, pipeline=pipeline, tenant=tenant)
            files = engine.files(state)
            loaded = load_replay(files, state, engine.registry.get(state.pipeline), step)
        try:
            replay = replay_step(loaded, files)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            cli_cloud.fail(f"step {step} raised {type(exc).__name__}: {exc}", EXIT_FAILED)
        saved = save_outputs(replay, output) if output is not None else None
    report: dict[str, Any] = {
        "run_id": replay.run_id,
        "pipeline": replay.pipeline,
        "step": replay.step,
        "inputs_from": loaded.ancestors,
        "seconds": round(replay.seconds, 6),
        "changed": {key: value_summary(value) for key, value in replay.outputs.items()},
        "removed": replay.removed,
        "progress_saves_discarded": replay.progress_saves,
        "output": str(saved) if saved else None,
    }
    if json_output:
        cli_cloud.print_json(report)
        return
    console = cli_cloud.console_for()
    source = "params" + (f" + outputs of {', '.join(loaded.ancestors)}" if loaded.ancestors else "")
    console.print(
        f"replayed step {step} of run {run_id} ({replay.pipeline}) here in "
        f"{replay.seconds:.3f}s, on its checkpointed input ({source}); nothing was written "
        "to the run or published",
        highlight=False,
    )
    if report["changed"]:
        console.print("changed:")
        console.print(_values_table(report["changed"]))
    else:
        console.print("changed: nothing")
    if replay.removed:
        console.print(f"removed: {', '.join(replay.removed)}", highlight=False)
    if saved:
        console.print(f"outputs stored exactly in {saved.parent}", highlight=False)


register = commands.register
