"""Where a step's logs are: the Cloud Logging filter to paste, and, on the local stack,
the traceback read back from the function logs ``resumable dev up`` writes.

The run document keeps a failed step's error message (bounded); the traceback is in the
worker's log line about it, a JSON line carrying ``run_id`` and ``step`` (see
``resumable.log``). In production that line is in Cloud Logging, found with
:func:`cloud_logging_filter`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TAIL_BYTES = 4 * 1024 * 1024  # of each log file: recent failures are at the end


def cloud_logging_filter(run_id: str, step: str | None = None) -> str:
    """The Logs Explorer query for a run's (or one step's) log lines."""
    query = f'labels.run_id="{run_id}"'
    if step is not None:
        query += f' AND labels.step="{step}"'
    return query


def find_traceback(run_id: str, step: str, *, logs_dir: Path | None) -> str | None:
    """The latest traceback logged for ``step`` of ``run_id`` in the local stack's
    function logs (``*.log`` in ``logs_dir``), or ``None``."""
    if logs_dir is None or not logs_dir.is_dir():
        return None
    needle = json.dumps(run_id)
    found: tuple[float, str] | None = None
    for path in logs_dir.glob("*.log"):
        try:
            mtime = path.stat().st_mtime
            lines = _tail(path)
        except OSError:
            continue
        for line in reversed(lines):
            if needle not in line or "Traceback" not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            message = str(entry.get("message") or "")
            if entry.get("run_id") != run_id or entry.get("step") != step:
                continue
            if "Traceback" in message and (found is None or mtime > found[0]):
                found = (mtime, message)
            break
    return found[1] if found else None


def _tail(path: Path) -> list[str]:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - TAIL_BYTES))
        data = f.read()
    return data.decode("utf-8", "replace").splitlines()
