"""The ``resumable`` command line.

``resumable run MODULE:ATTR`` runs a pipeline in this process, checkpointing after every
step; ``--run-id ID --resume`` continues that run from any later process.

Exit codes: 0 the run completed; 1 it ended in error (its checkpoint is kept); 2 the
command line or the pipeline reference is wrong (nothing ran); 130 it was cancelled
(Ctrl-C), its checkpoint kept for a resume.

Each further command (``start``, ``status``, ``checkpoint show``, ``dev up``...) is a
function decorated with ``@app.command()`` in its own module, or a group of them in a
``typer.Typer()`` mounted with ``app.add_typer(group, name="checkpoint")``; commands
that take a pipeline use :func:`resumable.definition._loader.load_pipeline`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from resumable._defaults import DEFAULT_TENANT
from resumable._log import configure_logging, logger
from resumable.checkpoint._summary import summarize
from resumable.cli._progress import Progress, open_progress, summary_lines
from resumable.definition._loader import load_pipeline
from resumable.errors import ResumableError
from resumable.local._pipeline import Pipeline
from resumable.local._result import RunResult, interrupted
from resumable.status import EXIT_USAGE, exit_code

# Recent typer vendors click (typer._click), older releases use click itself: the
# module typer's BadParameter comes from holds the other click exceptions.
_click_errors = importlib.import_module(typer.BadParameter.__module__)


class _OneLineErrors(TyperGroup):
    """Usage errors (a missing argument, an invalid option value) as one ``error: ...``
    line on stderr and exit 2, like the commands' own errors, instead of rich's framed
    box of five or six lines."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        run = functools.partial(
            super().main, args, prog_name, complete_var, False, windows_expand_args, **extra
        )
        if not standalone_mode:
            return run()
        try:
            code = run()
        except _click_errors.ClickException as exc:
            # NoArgsIsHelpError: the help is printed already (compared by name, as typer does).
            if type(exc).__name__ != "NoArgsIsHelpError":
                ctx = getattr(exc, "ctx", None)
                hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                typer.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        # Without standalone mode, click returns a typer.Exit's code, or the command's
        # return value (None here: every command ends by returning or raising Exit).
        sys.exit(code if isinstance(code, int) else 0)


F = TypeVar("F", bound=Callable[..., Any])

ParamsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        metavar="KEY=VALUE",
        help="A value of the run's initial context; VALUE is parsed as JSON if it parses, "
        "else kept as a string. Repeat for more.",
    ),
]


class Commands:
    """The commands of one module, mounted on the app by :func:`register` (so that a
    command module needs nothing from the app, and the app imports every module)."""

    def __init__(self) -> None:
        self._commands: list[tuple[str, Any, dict[str, Any]]] = []
        self._groups: list[tuple[str, typer.Typer]] = []

    def command(self, name: str, **options: Any) -> Callable[[F], F]:
        def remember(function: F) -> F:
            self._commands.append((name, function, options))
            return function

        return remember

    def group(self, name: str, group: typer.Typer) -> None:
        self._groups.append((name, group))

    def register(self, target: typer.Typer) -> None:
        for name, function, options in self._commands:
            target.command(name, **options)(function)
        for name, group in self._groups:
            target.add_typer(group, name=name)


app = typer.Typer(
    name="resumable",
    help="Crash-safe, resumable multi-step pipelines.",
    cls=_OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Crash-safe, resumable multi-step pipelines: every step is checkpointed, an
    interrupted run resumes at the first unfinished step."""


@app.command("run")
def run_command(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:ATTR",
            help="The pipeline: a Pipeline instance, subclass or factory function, in a "
            "module (pkg.mod:ATTR) or a file (path/to/file.py:ATTR).",
            show_default=False,
        ),
    ],
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="The run's id (default: a new one).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run's checkpoint (with --run-id).")
    ] = False,
    storage: Annotated[
        str | None,
        typer.Option(help="Where checkpoints go: a folder, file://, or gs://BUCKET/PREFIX."),
    ] = None,
    param: ParamsOpt = None,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print only the run's result, as one JSON object."),
    ] = False,
    tenant: Annotated[str | None, typer.Option(help="The tenant the run belongs to.")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="How many independent steps may run at once.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs.")] = False,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the checkpoint after the run completes.")
    ] = False,
) -> None:
    """Run a pipeline in this process, checkpointing after every step.

    Ctrl-C: stop after the current step, keeping the checkpoint (exit 130); twice: abort.
    """
    try:
        context = parse_params(param or [])
    except ValueError as exc:
        _usage_error(exc, verbose)
    stdout = sys.stdout
    # With --json, stdout carries the result object only: anything else goes to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if json_output else contextlib.nullcontext()
    with quiet:
        try:
            pipeline = load_pipeline(
                target,
                storage=storage,
                run_id=run_id,
                tenant_id=tenant,
                max_workers=workers,
                cleanup_on_success=False if keep else None,
            )
        except (ResumableError, ValueError, TypeError) as exc:
            _usage_error(exc, verbose)
        configure_logging(verbose=verbose)
        if not verbose:
            logger.setLevel("WARNING")  # the progress display already reports each step
        progress = open_progress(
            pipeline.spec,
            run_id=pipeline.run_id,
            run_folder=pipeline.run_folder,
            resume_requested=resume,
            live=not json_output and stdout.isatty(),
            stream=sys.stderr if json_output else stdout,
        )
        result = _run(pipeline, context, resume, progress)
    lines = summary_lines(result)
    if result["status"] != "completed":
        lines += [
            f"checkpoint kept in {pipeline.run_folder}",
            _resume_hint(target, pipeline, storage),
        ]
    elif keep:
        lines.append(f"checkpoint kept in {pipeline.run_folder}")
    progress.finish(lines)
    if json_output:
        stdout.write(json.dumps(summarize(result), indent=2, ensure_ascii=False) + "\n")
        stdout.flush()
    raise typer.Exit(exit_code(result["status"]))


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``["n=3", "tags=[1,2]", "name=clip"]`` → ``{"n": 3, "tags": [1, 2], "name": "clip"}``.

    A value is parsed as JSON when it parses (numbers, ``true``/``false``/``null``, lists,
    objects, ``"quoted strings"``) and kept as the raw text otherwise. A later ``KEY``
    overrides an earlier one. Raises ``ValueError`` for an item without ``=`` or a key.
    """
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {item!r} is not KEY=VALUE")
        try:
            params[key] = json.loads(text)
        except ValueError:
            params[key] = text
    return params


def _run(
    pipeline: Pipeline, context: dict[str, Any], resume: bool, progress: Progress
) -> RunResult:
    """Run under the display; a raised error becomes a result with ``errors``."""
    try:
        with _interrupts_request_stop(pipeline, progress), progress:
            return pipeline.run(context, resume_from_checkpoint=resume, on_event=progress.handle)
    except KeyboardInterrupt:
        message = "aborted by a second interrupt; the last checkpoint can be resumed"
        return _unfinished(pipeline, "cancelled", message)
    except ResumableError as exc:
        return _unfinished(pipeline, "error", f"{type(exc).__name__}: {exc}")


def _unfinished(pipeline: Pipeline, status: str, message: str) -> RunResult:
    return interrupted(
        pipeline_name=pipeline.pipeline_name,
        run_id=pipeline.run_id,
        tenant_id=pipeline.tenant_id,
        run_folder=pipeline.run_folder,
        status=status,
        error=message,
    )


@contextlib.contextmanager
def _interrupts_request_stop(pipeline: Pipeline, progress: Progress) -> Iterator[None]:
    """First SIGINT: ``request_stop()``; the second raises ``KeyboardInterrupt``."""

    def on_interrupt(signum: int, frame: FrameType | None) -> None:
        if pipeline.stop_requested:
            raise KeyboardInterrupt
        pipeline.request_stop()
        message = (
            "stop requested: the run ends after the current step and keeps its checkpoint "
            "(Ctrl-C again to abort now)"
        )
        # Printed from another thread: the interrupted one may be inside a write to the
        # same stream, and buffered streams refuse reentrant writes.
        threading.Thread(target=progress.note, args=(message,), daemon=True).start()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _resume_hint(target: str, pipeline: Pipeline, storage: str | None) -> str:
    command = f"resumable run {target} --run-id {pipeline.run_id} --resume"
    if storage is not None:
        command += f" --storage {storage}"
    if pipeline.tenant_id != DEFAULT_TENANT:
        command += f" --tenant {pipeline.tenant_id}"
    return f"resume with: {command}"


def _usage_error(exc: Exception, verbose: bool) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    if verbose and exc.__cause__ is not None:
        traceback.print_exception(exc.__cause__, file=sys.stderr)
    raise typer.Exit(EXIT_USAGE)


def main() -> None:
    """The ``resumable`` console script."""
    app()
