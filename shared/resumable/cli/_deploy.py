"""``resumable deploy``: Terraform variables, gcloud commands and the function bundle.

- ``resumable deploy bundle --pipeline REF --output DIR``: the function source folder;
- ``resumable deploy tfvars --pipeline REF --project P --region R``: the variables of
  ``infra/`` (``infra/terraform.tfvars.json`` by default);
- ``resumable deploy gcloud --pipeline REF --project P --region R --dry-run``: the
  equivalent gcloud commands, as a bash script; without ``--dry-run`` it runs them (after
  a confirmation, or ``--yes``), deploying the bundle in ``--source`` only if it was built
  from the same pipeline code;
- ``resumable deploy bootstrap --project P --region R --dry-run``: the one-time setup of
  a project (APIs, the deployer and builder accounts, the Terraform state bucket), run
  by an Owner; likewise printed or run.

Exit codes: 0 done; 1 a deployment command failed; 2 a wrong command line, pipeline
reference or bundle (nothing was changed).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, get_type_hints

import typer

from resumable._defaults import DEFAULT_PREFIX
from resumable.cli._app import Commands
from resumable.errors import ResumableError
from resumable.status import EXIT_FAILED, EXIT_USAGE

if TYPE_CHECKING:
    from resumable.deploy.commands import Action
    from resumable.deploy.plan import DeploymentPlan

app = typer.Typer(
    name="deploy",
    help="Deploy pipelines to Google Cloud: Terraform variables, gcloud commands, bundle.",
    no_args_is_help=True,
)
commands = Commands()
commands.group("deploy", app)

Pipelines = Annotated[
    list[str],
    typer.Option(
        "--pipeline",
        "-p",
        metavar="MODULE:ATTR",
        help="A pipeline to deploy (repeat, or separate with commas, for several).",
        show_default=False,
    ),
]
Project = Annotated[
    str,
    typer.Option(
        envvar=["RESUMABLE_PROJECT", "GOOGLE_CLOUD_PROJECT"],
        help="The Google Cloud project id.",
        show_default=False,
    ),
]
Region = Annotated[
    str,
    typer.Option(envvar="RESUMABLE_REGION", help="Where the functions run (e.g. europe-west1)."),
]
Prefix = Annotated[
    str, typer.Option(envvar="RESUMABLE_TOPIC_PREFIX", help="Prefix of every resource name.")
]
Delivery = Annotated[
    str,
    typer.Option(
        help="push: Pub/Sub push subscriptions with dead-lettering (recommended); "
        "eventarc: Eventarc triggers with retry, no dead-letter policy.",
    ),
]
Bucket = Annotated[
    str | None,
    typer.Option(help="The checkpoint bucket (default: PROJECT-PREFIX-runs).", show_default=False),
]
Retention = Annotated[
    int,
    typer.Option(min=0, help="Days finished runs' documents are kept (0: forever)."),
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Print the commands (a bash script); run nothing.")
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
BuildAccount = Annotated[
    str | None,
    typer.Option(
        metavar="EMAIL",
        help="The service account Cloud Build builds the functions as "
        "(default: the project's default build account).",
        show_default=False,
    ),
]


@app.command("bundle")
def bundle_command(
    pipeline: Pipelines,
    output: Annotated[
        Path, typer.Option(help="The bundle folder (replaced if it holds a bundle).")
    ] = Path("build/functions"),
    extra: Annotated[
        list[str] | None,
        typer.Option(help="Extras of the library the pipelines need (e.g. dataprep,numpy)."),
    ] = None,
    requirement: Annotated[
        list[str] | None,
        typer.Option(help="A further pip requirement line for requirements.txt."),
    ] = None,
    include: Annotated[
        list[Path] | None,
        typer.Option(help="A further file or folder the pipelines import (relative path)."),
    ] = None,
) -> None:
    """Build the function source folder (entry points, library, pipelines, requirements)."""
    from resumable.deploy.bundle import build_bundle

    try:
        manifest = build_bundle(
            output,
            _split(pipeline),
            extras=_split(extra or []),
            requirements=requirement or [],
            include=include or [],
        )
    except (ResumableError, ValueError) as exc:
        _usage_error(exc)
    names = ", ".join(p["name"] for p in manifest["pipelines"].values())
    typer.echo(f"bundle of {names} in {output}")


def _plan(
    pipeline: Pipelines,
    project: Project,
    region: Region,
    prefix: Prefix = DEFAULT_PREFIX,
    delivery: Delivery = "push",
    bucket: Bucket = None,
    retention_days: Retention = 30,
    build_service_account: BuildAccount = None,
) -> DeploymentPlan:
    """The deployment the options describe (the options of ``tfvars`` and ``gcloud``)."""
    from resumable.deploy.plan import DELIVERIES, build_plan

    if delivery not in DELIVERIES:
        _usage_error(ValueError(f"--delivery must be one of {', '.join(DELIVERIES)}"))
    try:
        return build_plan(
            _split(pipeline),
            project=project,
            region=region,
            prefix=prefix,
            delivery="push" if delivery == "push" else "eventarc",
            bucket=bucket,
            run_retention_days=retention_days,
            build_service_account=build_service_account,
        )
    except (ResumableError, ValueError) as exc:
        _usage_error(exc)


def _with_plan(command: Callable[..., None]) -> Callable[..., None]:
    """``command(plan, ...)`` as a command whose options are :func:`_plan`'s, then its own:
    typer reads the signature given here, and the command gets the plan they describe."""
    options = _parameters(_plan)
    own = _parameters(command)[1:]
    names = [option.name for option in options]

    @functools.wraps(command)
    def with_plan(**given: Any) -> None:
        plan = _plan(**{name: given.pop(name) for name in names})
        command(plan, **given)

    with_plan.__signature__ = inspect.Signature([*options, *own])  # type: ignore[attr-defined]
    with_plan.__annotations__ = {p.name: p.annotation for p in [*options, *own]}
    return with_plan


def _parameters(function: Callable[..., Any]) -> list[inspect.Parameter]:
    """``function``'s parameters with their annotations evaluated (typer's metadata kept)."""
    hints = get_type_hints(function, localns={"DeploymentPlan": object}, include_extras=True)
    return [
        p.replace(annotation=hints[p.name]) for p in inspect.signature(function).parameters.values()
    ]


@app.command("tfvars")
@_with_plan
def tfvars_command(
    plan: DeploymentPlan,
    source: Annotated[Path, typer.Option(help="The bundle folder Terraform uploads.")] = Path(
        "build/functions"
    ),
    output: Annotated[
        str, typer.Option(help="Where to write the variables (JSON); - for stdout.")
    ] = "infra/terraform.tfvars.json",
) -> None:
    """Write the Terraform variables of infra/ for the pipelines."""
    from resumable.deploy.tfvars import dumps, tfvars, write_tfvars

    if output == "-":
        sys.stdout.write(dumps(tfvars(plan, source_dir=str(source.resolve()))))
        return
    write_tfvars(plan, Path(output), source_dir=source)
    typer.echo(
        f"wrote {output}: {len(plan.functions)} functions, {len(plan.topology.topics)} topics"
    )


@app.command("gcloud")
@_with_plan
def gcloud_command(
    plan: DeploymentPlan,
    source: Annotated[
        Path, typer.Option(help="The bundle folder (resumable deploy bundle builds it).")
    ] = Path("build/functions"),
    dry_run: DryRun = False,
    yes: Yes = False,
) -> None:
    """Print (--dry-run) or run the gcloud commands that deploy the pipelines."""
    from resumable.deploy.bundle import check_bundle
    from resumable.deploy.gcloud import actions, script

    steps = actions(plan, source=source)
    if dry_run:
        sys.stdout.write(script(plan, steps))
        return
    try:
        check_bundle(source, plan.pipelines)
    except ResumableError as exc:
        _usage_error(exc)
    summary = (
        f"deploy {len(plan.functions)} functions and {len(plan.topology.topics)} topics of "
        f"{', '.join(plan.pipelines)} to {plan.project} ({plan.region}) "
        f"with {len(steps)} gcloud commands"
    )
    _confirm_and_run(steps, summary, yes)
    typer.echo(f"deployed: publish a start message to {plan.topology.start_topic}")


@app.command("bootstrap")
def bootstrap_command(
    project: Project,
    region: Region,
    prefix: Prefix = DEFAULT_PREFIX,
    dry_run: DryRun = False,
    yes: Yes = False,
) -> None:
    """Once per project, as an Owner: enable the APIs, create the deployer account (Cloud
    Build deploys as it) and the builder account (builds the functions) with least
    privilege, and the Terraform state bucket. Print (--dry-run) or run the commands."""
    from resumable.deploy.bootstrap import Bootstrap, actions, script

    try:
        setup = Bootstrap.of(project, region, prefix)
    except ValueError as exc:
        _usage_error(exc)
    steps = actions(setup)
    if dry_run:
        sys.stdout.write(script(setup, steps))
        return
    _confirm_and_run(steps, f"set up {project} for deployments with {len(steps)} commands", yes)
    typer.echo(
        f"ready: Cloud Build deploys as {setup.deployer_email}, builds functions as "
        f"{setup.builder_email}; Terraform state in gs://{setup.state_bucket}"
    )


def _confirm_and_run(steps: list[Action], summary: str, yes: bool) -> None:
    """Ask (unless ``yes``), then run ``steps``; exit 1 at the first failing command."""
    from resumable.deploy.commands import run
    from resumable.errors import DeployError

    if not yes:
        if not sys.stdin.isatty():
            _usage_error(ValueError(f"not a terminal: pass --yes to {summary}"))
        typer.confirm(f"{summary}?", abort=True)
    try:
        run(steps, echo=lambda line: typer.echo(line, err=True))
    except DeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None


def _split(values: list[str]) -> list[str]:
    """``["a,b", "c"]`` → ``["a", "b", "c"]``: as RESUMABLE_PIPELINES lists them."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _usage_error(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(EXIT_USAGE)


register = commands.register
