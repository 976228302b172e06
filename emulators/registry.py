"""A record of every process group a launcher started, so a later start can reap leftovers.

A test run killed with SIGKILL gets no chance to stop its emulators: their process groups
outlive it, holding ports. Each launcher therefore writes one JSON file per run naming its
owner (pid + start time) and its process groups; the next launcher start — in any
directory, by the same user — stops the groups of every run whose owner is gone.

The registry lives in the user's temp directory (override: RESUMABLE_EMULATORS_STATE), not
in a checkout, so that a leftover is found whichever folder the next run starts from.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emulators.processes import group_members, start_ticks, terminate_group

STATE_DIR_VARIABLE = "RESUMABLE_EMULATORS_STATE"


@dataclass(frozen=True)
class GroupRecord:
    """A process group and a text every one of its genuine members has in its command line.

    The signature guards against pid reuse: a group whose processes all died may have its
    number reused, and an unrelated group must never be killed.
    """

    name: str
    pgid: int
    signature: str
    leaves_first: bool = False


@dataclass(frozen=True)
class RunRecord:
    """One launcher run: who owns it, which groups it started, and what it serves."""

    run_id: str
    owner_pid: int
    owner_start: int | None
    groups: list[GroupRecord]
    info: dict[str, Any] = field(default_factory=dict)

    def owner_alive(self) -> bool:
        """Whether the process that started this run still runs (same pid and start time)."""
        return start_ticks(self.owner_pid) == self.owner_start


def default_state_dir() -> Path:
    """RESUMABLE_EMULATORS_STATE, or a per-user folder in the temp directory."""
    if configured := os.environ.get(STATE_DIR_VARIABLE):
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"resumable-emulators-{os.getuid()}"


class Registry:
    """The folder of run records. Safe to use from several processes at once."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_state_dir()) / "runs"

    def write(self, record: RunRecord) -> None:
        """Create or replace a run's record (atomically: a reader never sees half a file)."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / f"{record.run_id}.json"
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(asdict(record), indent=2))
        tmp.replace(target)

    def remove(self, run_id: str) -> None:
        """Forget a run (after it stopped its groups)."""
        (self.root / f"{run_id}.json").unlink(missing_ok=True)

    def records(self) -> list[RunRecord]:
        """Every recorded run, oldest first; unreadable files are skipped."""
        found = []
        for path in sorted(self.root.glob("*.json"), key=_mtime):
            try:
                raw = json.loads(path.read_text())
                groups = [GroupRecord(**g) for g in raw.pop("groups")]
                found.append(RunRecord(groups=groups, **raw))
            except (OSError, ValueError, TypeError, KeyError):
                continue
        return found

    def live_runs(self) -> list[RunRecord]:
        """Runs whose owner is still running, oldest first."""
        return [r for r in self.records() if r.owner_alive()]

    def reap_stale(self) -> list[RunRecord]:
        """Stop the groups of every run whose owner is gone, forget those runs, return them."""
        reaped = []
        for record in self.records():
            if record.owner_alive():
                continue
            for group in record.groups:
                members = group_members(group.pgid)
                if any(group.signature in m.cmdline for m in members):
                    terminate_group(group.pgid, leaves_first=group.leaves_first)
            self.remove(record.run_id)
            reaped.append(record)
        return reaped


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
