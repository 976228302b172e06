"""The ``resumable`` command line. Each module holds a group of commands; this one
mounts them all on the one ``app``."""

from resumable.cli import _deploy, _dev, _inspect, _runs, _ui, _watch
from resumable.cli._app import app, main

for _commands in (_runs, _watch, _inspect, _dev, _deploy, _ui):
    _commands.register(app)

__all__ = ["app", "main"]
