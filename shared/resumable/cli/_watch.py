"""resumable watch: follow a serverless run until it ends, as lines or a live table."""

from __future__ import annotations

import sys
import time
from typing import Annotated, TextIO

import typer
from google.api_core.exceptions import GoogleAPIError
from rich.live import Live

from resumable._defaults import DEFAULT_TENANT
from resumable._ids import validate_id
from resumable.cli import _deployment as cli_cloud
from resumable.cli._app import Commands
from resumable.cli._deployment import (
    PipelineOpt,
    RunArg,
    TenantOpt,
    console_for,
    find_run,
    pipeline_spec,
    print_json,
    reported_errors,
)
from resumable.cli._views import RunChanges, describe_run, run_view, step_order
from resumable.errors import RunControlError
from resumable.serverless._control import get_run
from resumable.serverless._engine import Engine
from resumable.serverless._map_status import ItemSummary, item_summaries
from resumable.serverless._run_state import RunState
from resumable.status import EXIT_CANCELLED, exit_code

commands = Commands()


@commands.command("watch")
def watch_command(
    run_id: RunArg,
    pipeline: PipelineOpt = None,
    tenant: TenantOpt = DEFAULT_TENANT,
    interval: Annotated[
        float, typer.Option(min=0.01, help="Seconds between reads of the run document.")
    ] = 0.5,
    wait: Annotated[
        float,
        typer.Option(
            min=0, help="Seconds to wait for a run that does not exist yet (just started)."
        ),
    ] = 30.0,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print only the finished run's status, as one JSON object."),
    ] = False,
) -> None:
    """Follow a serverless run until it finishes.

    A live table on a terminal, one line per change otherwise. Exit 0 completed, 1 error,
    130 cancelled (also on Ctrl-C, which stops watching; the run goes on).
    """
    with reported_errors():
        engine = cli_cloud.engine_from_env()
        validate_id(run_id, "run id")
    raise typer.Exit(
        follow(
            engine, run_id, pipeline, tenant, interval=interval, wait=wait, json_output=json_output
        )
    )


def follow(
    engine: Engine,
    run_id: str,
    pipeline: str | None,
    tenant: str,
    *,
    interval: float = 0.5,
    wait: float = 30.0,
    json_output: bool = False,
) -> int:
    deadline = time.monotonic() + wait
    with reported_errors():
        while True:
            try:
                state = find_run(engine, run_id, pipeline=pipeline, tenant=tenant)
                break
            except RunControlError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(interval, 0.5))
        spec = pipeline_spec(engine, state.pipeline)
    order = step_order(state, spec)
    stream = sys.stderr if json_output else sys.stdout
    try:
        with reported_errors():  # a service down for longer than _poll retries
            if not json_output and stream.isatty():
                state = _watch_live(engine, state, order, interval)
            else:
                state = _watch_lines(engine, state, order, interval, stream)
    except KeyboardInterrupt:
        typer.echo(f"stopped watching; run {run_id} goes on (resumable watch {run_id})", err=True)
        return EXIT_CANCELLED
    if json_output:
        print_json(describe_run(state, spec, item_summaries(engine, state)))
    return exit_code(state.status)


def _poll(engine: Engine, state: RunState, interval: float) -> RunState:
    """The run document ``interval`` seconds later; service errors are retried for a
    minute (a watch outlives a blip)."""
    give_up = time.monotonic() + 60
    while True:
        time.sleep(interval)
        try:
            return get_run(engine, state.run_id, pipeline=state.pipeline, tenant_id=state.tenant_id)
        except GoogleAPIError:
            if time.monotonic() > give_up:
                raise


def _watch_lines(
    engine: Engine, state: RunState, order: list[str], interval: float, stream: TextIO
) -> RunState:
    changes = RunChanges(order)
    while True:
        for line in changes.lines(state, _items(engine, state)):
            stream.write(line + "\n")
        stream.flush()
        if state.finished:
            return state
        state = _poll(engine, state, interval)


def _watch_live(engine: Engine, state: RunState, order: list[str], interval: float) -> RunState:
    console = console_for()
    current = [state]
    items = [_items(engine, state)]
    with Live(
        console=console,
        get_renderable=lambda: run_view(current[0], order, items=items[0]),
        refresh_per_second=4,
        transient=False,
    ):
        while not current[0].finished:
            current[0] = _poll(engine, current[0], interval)
            items[0] = _items(engine, current[0])
    return current[0]


def _items(engine: Engine, state: RunState) -> dict[str, ItemSummary]:
    """The map steps' item counts; none this time if the service does not answer (the
    next poll tries again)."""
    try:
        return item_summaries(engine, state)
    except GoogleAPIError:
        return {}


register = commands.register
