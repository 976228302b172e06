"""Where the deployment is: the one the environment names (``RESUMABLE_PROJECT``,
``RESUMABLE_STORAGE``, ... read by :meth:`~resumable.serverless._settings.Settings.from_env`),
or, when neither of the first two is set, the local stack ``resumable dev up`` started
(its ``state.json`` in ``.resumable-dev/`` or ``$RESUMABLE_DEV_HOME``). The CLI and the
web UI both find it here."""

from __future__ import annotations

import os
import sys

from resumable.dev import _stack as devstack
from resumable.errors import NotConfiguredError
from resumable.serverless._engine import Engine
from resumable.serverless._settings import Settings


def local_stack_env() -> dict[str, str] | None:
    """The client settings of the running local stack, or ``None`` when there is none
    (no state file, or its supervisor process is gone)."""
    try:
        state = devstack.read_state()
    except ValueError:
        return None  # being written: the stack is still starting
    if state is None:
        return None
    pid = int(state.get("supervisor_pid") or 0)
    if pid <= 0 or not devstack.process_alive(pid):
        print(
            f"note: ignoring {devstack.state_path()}: the local stack that wrote it (pid "
            f"{pid}) is gone; `resumable dev down` removes it",
            file=sys.stderr,
        )
        return None
    return {str(k): str(v) for k, v in dict(state.get("env") or {}).items()}


def engine_from_env() -> Engine:
    """The services of the deployment the environment names (or of the local stack).

    Raises :class:`NotConfiguredError` saying which variable is missing.
    """
    if not (os.environ.get("RESUMABLE_PROJECT") or os.environ.get("RESUMABLE_STORAGE")):
        stack_env = local_stack_env()
        if stack_env:
            os.environ.update(stack_env)
    try:
        settings = Settings.from_env().require()
    except RuntimeError as exc:
        raise NotConfiguredError(
            f"{exc}; or start a local stack with `resumable dev up --detach`"
        ) from None
    return Engine.from_settings(settings)
