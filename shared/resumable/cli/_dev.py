"""``resumable dev up`` / ``resumable dev down``: the local stack (the official Pub/Sub and
Firestore emulators, fake-gcs-server, one functions-framework process per step; see
:mod:`resumable.dev._stack`).

``dev up`` runs in the foreground until Ctrl-C, then stops everything it started.
``dev up --detach`` leaves a supervisor process running the stack and returns once the
stack answers; ``dev down`` stops it and leaves no process of it behind. While a stack
runs, its state file (``.resumable-dev/state.json``, or under ``$RESUMABLE_DEV_HOME``)
lets the other commands (``resumable start``, ``status``...) find it without settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from resumable.cli._app import Commands
from resumable.dev import _stack as devstack
from resumable.status import EXIT_CANCELLED, EXIT_FAILED, EXIT_USAGE

DEFAULT_PIPELINE = "examples.dataprep.pipeline:build"
START_TIMEOUT = 300.0
SUPERVISOR_LOG = "stack.log"
EXAMPLE_PARAMS = {"dataprep": {"video_path": "/path/to/clip.mp4", "video_guid": "clip-1"}}
GCLOUD_TOKEN = "gcloud-token"  # a placeholder credential for gcloud against the emulator

dev_app = typer.Typer(
    help="The local stack: emulators and one function process per step.", no_args_is_help=True
)
commands = Commands()
commands.group("dev", dev_app)

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        help="The stack's folder: state and logs (default: $RESUMABLE_DEV_HOME or .resumable-dev)."
    ),
]


def dev_home(home: Path | None = None) -> Path:
    return home or Path(os.environ.get("RESUMABLE_DEV_HOME") or devstack.DEFAULT_HOME)


@dev_app.command("up")
def up_command(
    pipeline: Annotated[
        list[str] | None,
        typer.Option(
            "--pipeline",
            "-p",
            metavar="MODULE:ATTR",
            help=f"A pipeline to deploy (repeatable; default: {DEFAULT_PIPELINE}).",
        ),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run in the background; stop with dev down.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the stack's description as one JSON object.")
    ] = False,
    lease_seconds: Annotated[
        float, typer.Option(min=0.5, help="How long a step's claim lives without a heartbeat.")
    ] = 10.0,
    home: HomeOpt = None,
) -> None:
    """Start the local stack with the pipelines' topics, subscriptions and functions.

    Prints how to start a run and the `export` lines that point other tools at the stack.
    In the foreground it runs until Ctrl-C, then stops every process it started.
    """
    references = pipeline or [DEFAULT_PIPELINE]
    folder = dev_home(home)
    _refuse_a_second_stack(folder)
    if detach:
        info = _up_detached(references, folder, lease_seconds)
        _announce(info, folder, json_output, detached=True)
        return
    stack = devstack.DevStack(references, home=folder, lease_seconds=lease_seconds)
    typer.echo("starting the local stack (emulators, then one function per step)...", err=True)
    try:
        info = stack.up()
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_CANCELLED) from None
    except Exception as exc:
        _fail(f"the local stack did not start: {type(exc).__name__}: {exc}", EXIT_FAILED)
    _announce(info, folder, json_output, detached=False)
    stack.serve_forever()  # until Ctrl-C or SIGTERM; then every process is stopped
    typer.echo("local stack stopped", err=True)


@dev_app.command("down")
def down_command(
    home: HomeOpt = None,
    json_output: Annotated[
        bool, typer.Option("--json", help='Print {"stopped": true|false, "home": ...}.')
    ] = False,
) -> None:
    """Stop the detached local stack: functions, emulators and their supervisor.

    Leaves no process of the stack behind. Exit 0 also when none was running.
    """
    folder = dev_home(home)
    stopped = devstack.down_detached(folder)
    if json_output:
        sys.stdout.write(json.dumps({"stopped": stopped, "home": str(folder)}) + "\n")
    elif stopped:
        typer.echo(f"local stack in {folder} stopped")
    else:
        typer.echo(f"no local stack running (no {devstack.state_path(folder)})")


def _refuse_a_second_stack(home: Path) -> None:
    try:
        state = devstack.read_state(home)
    except ValueError:
        state = None  # a half-written state file: its writer is starting or died
    if state is None:
        return
    pid = int(state.get("supervisor_pid") or 0)
    if pid > 0 and devstack.process_alive(pid):
        _fail(
            f"a local stack is already running in {home} (pid {pid}): use it, or stop it "
            "first with `resumable dev down`",
            EXIT_USAGE,
        )
    devstack.down_detached(home)  # what a crashed stack left behind


def _up_detached(references: list[str], home: Path, lease_seconds: float) -> dict[str, Any]:
    """Start the supervisor in its own session; return the stack's state once it runs."""
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / SUPERVISOR_LOG
    argv = [sys.executable, "-m", "resumable.dev._stack", "serve", "--home", str(home)]
    argv += ["--lease-seconds", str(lease_seconds)]
    for reference in references:
        argv += ["--pipeline", reference]
    paths = [str(Path.cwd()), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # outlives this command and its terminal
        )
    typer.echo(f"starting the local stack (pid {process.pid}, log {log_path})...", err=True)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            with contextlib.suppress(ValueError):  # caught mid-write
                state = devstack.read_state(home)
                if state is not None and state.get("supervisor_pid") == process.pid:
                    return {**state, "supervisor_log": str(log_path)}
            if process.poll() is not None:
                _fail(
                    f"the local stack exited with code {process.returncode} while starting; "
                    f"the end of {log_path}:\n{_tail(log_path)}",
                    EXIT_FAILED,
                )
            if time.monotonic() > deadline:
                _stop_supervisor(process, home)
                _fail(
                    f"the local stack did not start within {START_TIMEOUT:.0f}s; the end of "
                    f"{log_path}:\n{_tail(log_path)}",
                    EXIT_FAILED,
                )
            time.sleep(0.2)
    except KeyboardInterrupt:
        _stop_supervisor(process, home)
        raise typer.Exit(EXIT_CANCELLED) from None


def _stop_supervisor(process: subprocess.Popen[bytes], home: Path) -> None:
    """SIGTERM the supervisor (it stops what it started), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    devstack.down_detached(home)


def _announce(info: dict[str, Any], home: Path, json_output: bool, *, detached: bool) -> None:
    # gcloud wants credentials even for an emulator: any token will do.
    (home / GCLOUD_TOKEN).write_text("local-emulator\n")
    if json_output:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        sys.stdout.flush()
        return
    for line in describe_stack(info, home, detached=detached):
        typer.echo(line)


def describe_stack(info: dict[str, Any], home: Path, *, detached: bool) -> list[str]:
    """How to use a running stack: where things are, how to start a run, the exports."""
    pipelines = list(info.get("pipelines") or {}) or ["PIPELINE"]
    project = info["project"]
    start_topic = str(info["start_topic"]).rsplit("/", 1)[-1]
    env = dict(info.get("env") or {})
    pubsub_host = env.get("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")
    params = EXAMPLE_PARAMS.get(pipelines[0], {"key": "value"})
    flags = " ".join(f"--param {shlex.quote(f'{k}={v}')}" for k, v in params.items())
    body = json.dumps({"pipeline": pipelines[0], "params": params, "run_id": "run-1"})
    lines = [
        f"local stack up: project {project}, storage {info.get('storage')}",
        f"  pipelines: {', '.join(pipelines)}",
        f"  start topic: {info['start_topic']}",
        f"  functions: {len(info.get('functions') or {})} processes; logs in {info.get('logs')}",
        "",
        "start a run (from this folder, or anywhere after the exports below):",
        f"  resumable start {pipelines[0]} {flags}",
        "  resumable watch RUN        # or: status RUN, cancel RUN, resume RUN, replay RUN STEP",
        "or publish the start message yourself:",
        f"  CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB=http://{pubsub_host}/ \\",
        f"  CLOUDSDK_AUTH_ACCESS_TOKEN_FILE={shlex.quote(str(home / GCLOUD_TOKEN))} \\",
        f"    gcloud pubsub topics publish {start_topic} --project={project} \\",
        f"    --message={shlex.quote(body)}",
        "",
        "point other clients at the stack:",
        *(f"  export {name}={shlex.quote(value)}" for name, value in env.items()),
        "",
    ]
    if detached:
        lines.append("stop it with: resumable dev down")
    else:
        lines.append("Ctrl-C stops the stack.")
    return lines


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


register = commands.register
