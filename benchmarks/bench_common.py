"""Small measuring helpers shared by the benchmark and the peers' drivers (stdlib only)."""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RESULT_PREFIX = "W1-RESULT "


def write_syscall_bytes(pid: int | str = "self") -> int:
    """Bytes this process passed to write-like syscalls so far (``wchar`` of /proc/PID/io)."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_pids(pid: int) -> list[int]:
    """Every descendant of ``pid`` (Linux ``/proc/PID/task/*/children``)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(children)
            pending.extend(children)
    return found


def tree_write_bytes() -> int:
    """``wchar`` of this process plus its live descendants (e.g. a local API server)."""
    return write_syscall_bytes() + sum(write_syscall_bytes(p) for p in child_pids(os.getpid()))


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    if not folder.exists():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def emit_result(result: Mapping[str, Any]) -> None:
    """Print a driver's result as one prefixed JSON line on stdout."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The last result line a driver printed, or ``None``."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            parsed: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return parsed
    return None
