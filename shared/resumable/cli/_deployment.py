"""What the serverless commands share: how they reach a deployment, find a run and
report errors. The commands themselves: :mod:`resumable.cli._runs` (``start``,
``status``, ``list``, ``watch``, ``cancel``, ``resume``) and :mod:`resumable.cli._inspect`
(``checkpoint show``, ``replay``).

They work the same against Google Cloud and the local stack: the deployment comes from
the environment (:meth:`resumable.serverless._settings.Settings.from_env`: ``RESUMABLE_PROJECT``,
``RESUMABLE_STORAGE``, ``RESUMABLE_PIPELINES``, ``RESUMABLE_TOPIC_PREFIX``...). When
neither ``RESUMABLE_PROJECT`` nor ``RESUMABLE_STORAGE`` is set and a local stack started
by ``resumable dev up`` is running (its ``.resumable-dev/state.json``, or
``$RESUMABLE_DEV_HOME/state.json``), its settings are used. Every command gets its
services from :func:`engine_from_env`, and only there (tests replace it).

Exit codes: 0 success (``watch``: the run completed); 1 the run ended in error
(``watch``), a replayed step raised, a checkpoint is damaged or gone, or a service
failed; 2 a wrong command line, no such run, or a request that does not apply to the run
(nothing was changed); 130 the run was cancelled (``watch``) or the watch was interrupted.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Annotated, Any, NoReturn, TextIO

import typer
from google.api_core.exceptions import GoogleAPIError
from rich.console import Console

from resumable._ids import validate_id
from resumable.definition._spec import PipelineSpec
from resumable.dev._discovery import engine_from_env as engine_from_env
from resumable.dev._discovery import local_stack_env as local_stack_env
from resumable.errors import (
    BadMessageError,
    CheckpointError,
    InvalidIdError,
    NotConfiguredError,
    ObjectNotFoundError,
    PipelineLoadError,
    ReplayError,
    RunControlError,
)
from resumable.serverless._control import get_run
from resumable.serverless._engine import Engine
from resumable.serverless._run_state import RunState
from resumable.status import EXIT_FAILED, EXIT_USAGE

# Every command gets its services from engine_from_env, through this module (tests replace
# it here); it lives in the dev layer, beside the stack it finds, for the web UI to use too.

# -- shared helpers ----------------------------------------------------------------------


def find_run(engine: Engine, run_id: str, *, pipeline: str | None, tenant: str) -> RunState:
    """The run document; without ``pipeline``, the run with this id in any of the
    deployment's pipelines. Raises :class:`RunControlError` when there is none."""
    validate_id(run_id, "run id")
    validate_id(tenant, "tenant id")
    if pipeline:
        return get_run(engine, run_id, pipeline=validate_id(pipeline, "pipeline"), tenant_id=tenant)
    try:
        return get_run(engine, run_id, tenant_id=tenant)
    except PipelineLoadError as exc:
        raise RunControlError(
            f"{exc}\n(pass --pipeline to look the run up without loading the pipelines)"
        ) from None
    except RunControlError as exc:
        if not engine.registry.all():
            raise RunControlError(
                f"{exc}: no pipeline is configured to look in; set RESUMABLE_PIPELINES or "
                "pass --pipeline"
            ) from None
        raise


def pipeline_spec(engine: Engine, name: str) -> PipelineSpec | None:
    """The deployed pipeline's step graph, or ``None`` when its code is not loadable here."""
    try:
        return engine.registry.get(name).spec
    except (BadMessageError, PipelineLoadError):
        return None


def console_for(stream: TextIO | None = None) -> Console:
    """Rich output; off a terminal, wide enough that ids are never cut."""
    target = stream or sys.stdout
    return Console(file=target, width=None if target.isatty() else 200, soft_wrap=False)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn the errors a user can act on into one ``error:`` line and an exit code."""
    try:
        yield
    except (
        NotConfiguredError,
        RunControlError,
        ReplayError,
        BadMessageError,
        PipelineLoadError,
        InvalidIdError,
    ) as exc:
        fail(str(exc), EXIT_USAGE)
    except ObjectNotFoundError as exc:
        fail(
            f"a checkpoint of the run is gone ({exc.args[0] if exc.args else exc}): a completed "
            "run's checkpoints are deleted unless its pipeline has cleanup_on_success=False",
            EXIT_FAILED,
        )
    except CheckpointError as exc:
        fail(f"the run's checkpoint cannot be used: {exc}", EXIT_FAILED)
    except GoogleAPIError as exc:
        fail(f"the cloud service failed: {type(exc).__name__}: {exc}", EXIT_FAILED)


RunArg = Annotated[str, typer.Argument(metavar="RUN", help="The run id.", show_default=False)]
PipelineOpt = Annotated[
    str | None,
    typer.Option(help="The run's pipeline (default: look in every deployed pipeline)."),
]
TenantOpt = Annotated[str, typer.Option(help="The tenant the run belongs to.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")]
