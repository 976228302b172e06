"""Deployable entry points: ``functions-framework --target <name> --source main.py``.

Targets: ``start_run``, ``run_step`` (one deployment per step, ``RESUMABLE_STEP`` set),
``dead_letter``, ``watchdog``. Configuration comes from the environment (see
``resumable.serverless.Settings``).
"""

from resumable.serverless.entrypoints import dead_letter, run_step, start_run, watchdog

__all__ = ["dead_letter", "run_step", "start_run", "watchdog"]
