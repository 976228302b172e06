"""``resumable ui``: serve the web UI for the deployment the CLI finds, or for the
in-process runs in a storage folder (``--storage``).

It binds to 127.0.0.1 by default. The UI has no authentication of its own, so binding
to another interface needs ``--allow-remote`` (deploy it behind IAM instead: see
infra/README.md). Exit codes: 0 stopped with Ctrl-C; 2 a wrong command line, a missing
``ui`` extra, or no deployment found.
"""

from __future__ import annotations

import ipaddress
import sys
import threading
import webbrowser
from typing import Annotated

import typer

from resumable import errors
from resumable.cli._app import Commands

EXIT_USAGE = 2
commands = Commands()
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


@commands.command("ui")
def ui_command(
    host: Annotated[str, typer.Option(help="The interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="The port to listen on.")] = 8787,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the runs page in a browser.")
    ] = False,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Show the in-process runs checkpointed here (a folder, file:// or "
            "gs://BUCKET/PREFIX) instead of the serverless deployment."
        ),
    ] = None,
    pipeline: Annotated[
        list[str] | None,
        typer.Option(
            "--pipeline",
            metavar="MODULE:ATTR",
            help="With --storage: a pipeline whose step graph the pages draw (repeatable).",
        ),
    ] = None,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Allow a non-loopback --host. The UI has no authentication: only behind "
            "IAM or a private network.",
        ),
    ] = False,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            metavar="NAME",
            help="Another Host name the UI answers to (a proxy's or tunnel's name).",
        ),
    ] = None,
) -> None:
    """Serve the web UI: runs, step graphs, checkpoints and live progress, with actions.

    Against the deployment the other commands find (the local stack, or RESUMABLE_*
    variables and application default credentials), or with --storage against the
    in-process runs in a folder or bucket.
    """
    if not is_loopback(host) and not allow_remote:
        raise _fail(
            f"--host {host} would expose the UI beyond this machine, and it has no "
            "authentication of its own: pass --allow-remote to do it anyway (deploy it "
            "behind IAM, e.g. Cloud Run without public invokers: see infra/README.md)"
        )
    try:
        import uvicorn

        from resumable.ui._app import create_app
        from resumable.ui._security import Guard
    except ImportError as exc:
        raise _fail(
            f"resumable ui needs the 'ui' extra ({exc.name} is missing): "
            "pip install 'resumable[ui]'"
        ) from None
    from resumable.ui._models import RunSource

    source: RunSource
    try:
        if storage:
            from resumable.ui._folder import FolderRuns

            source = FolderRuns(storage, pipeline or [])
        else:
            if pipeline:
                raise _fail("--pipeline goes with --storage (a deployment names its pipelines)")
            from resumable.ui._cloud import CloudRuns

            source = CloudRuns.from_env()
    except (errors.NotConfiguredError, errors.PipelineLoadError, errors.InvalidIdError) as exc:
        raise _fail(str(exc)) from None
    extra_hosts = list(allow_host or [])
    if is_loopback(host):
        allowed: list[str] | None = [*LOOPBACK_NAMES, host, *extra_hosts]
    else:
        # Behind a proxy (Cloud Run) the Host is the service's name, known to the proxy.
        allowed = [host, *extra_hosts] if extra_hosts else None
        print(
            f"warning: serving on {host}, beyond this machine; the UI has NO authentication "
            "of its own: anyone who reaches this port can read runs and checkpoints and "
            "cancel, resume or start runs",
            file=sys.stderr,
        )
    web = create_app(source, guard=Guard(allowed))
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    url = f"http://{shown}:{port}/"
    print(f"resumable ui on {url} ({source.description}); Ctrl-C stops it")
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(
        web,
        host=host.strip("[]"),
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )


register = commands.register
