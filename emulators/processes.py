"""Child processes that own a whole process group, and stopping such groups completely.

The emulators run as `gcloud` (Python) → [`bash`] → `java`; killing only the direct child
leaves Java running with the port bound. Every child therefore starts in its own session,
so its process group holds all its descendants, and stopping means: no live process left
in that group. Process details come from /proc on Linux and from `ps` elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessInfo:
    """One live process as /proc shows it."""

    pid: int
    ppid: int
    pgid: int
    start_ticks: int
    cmdline: str


def process_info(pid: int) -> ProcessInfo | None:
    """The process with this pid, or None if there is none or it is a zombie."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        raw_cmd = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    state, ppid, pgid, start_ticks = fields[0], int(fields[1]), int(fields[2]), int(fields[19])
    if state in ("Z", "X"):
        return None
    cmdline = raw_cmd.replace(b"\0", b" ").decode(errors="replace").strip()
    return ProcessInfo(pid, ppid, pgid, start_ticks, cmdline)


def has_proc() -> bool:
    """Whether /proc describes processes (Linux). Elsewhere group membership is not listed."""
    return (_PROC / "self" / "stat").exists()


def group_members(pgid: int) -> list[ProcessInfo]:
    """Live (non-zombie) processes in process group `pgid`."""
    if not has_proc():
        return [p for p in _ps_processes() if p.pgid == pgid]
    infos = (process_info(int(e.name)) for e in _PROC.iterdir() if e.name.isdigit())
    return [info for info in infos if info is not None and info.pgid == pgid]


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks after boot), or None if it is not running.

    Together with the pid this names one process for good: pids are reused, start times
    are not. Without /proc it is 0 for any existing process.
    """
    if not has_proc():
        return 0 if _pid_exists(pid) else None
    info = process_info(pid)
    return None if info is None else info.start_ticks


def terminate_group(
    pgid: int,
    *,
    leader: subprocess.Popen[bytes] | None = None,
    leaves_first: bool = False,
    timeout: float = 10.0,
) -> None:
    """Stop every process in group `pgid` and return once none is left.

    With `leaves_first` (for wrappers such as gcloud → java), the processes without children
    get SIGTERM first, so that their parents reap them and exit on their own, leaving no
    zombie to the init process. Supervisors that restart their workers (gunicorn) must not
    be stopped that way. Then the group gets SIGTERM, and SIGKILL once `timeout` has
    passed. `leader`, when this process started the group, is reaped too.
    """
    deadline = time.monotonic() + timeout
    if (
        not leaves_first
        or not _signal_leaves(pgid)
        or not _wait_group_gone(pgid, leader, min(deadline, time.monotonic() + timeout / 2))
    ):
        _killpg(pgid, signal.SIGTERM)
        if not _wait_group_gone(pgid, leader, deadline):
            _killpg(pgid, signal.SIGKILL)
            _wait_group_gone(pgid, leader, time.monotonic() + 5.0)
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL was sent above
            leader.wait(timeout=5.0)


def signal_group_now(pgid: int, *, leaves_first: bool = False) -> None:
    """Start stopping the group without waiting: SIGTERM the group, or with `leaves_first`
    only its leaves (whose parents then exit by themselves) if there are any.

    For signal handlers: it takes no locks and returns at once.
    """
    if not leaves_first or not _signal_leaves(pgid):
        _killpg(pgid, signal.SIGTERM)


class ManagedProcess:
    """A child process started in its own session, writing stdout and stderr to a log file.

    Guarantee: after `stop()` returns, no process of its group is alive. `leaves_first`:
    see `terminate_group`.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        leaves_first: bool = False,
    ) -> None:
        self.name = name
        self.leaves_first = leaves_first
        self.argv = list(argv)
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        """Start the process; it becomes the leader of a new process group."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The leader's pid, which is also the process group id."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._popen.pid

    def exit_code(self) -> int | None:
        """The leader's exit code, or None while it runs."""
        return None if self._popen is None else self._popen.poll()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the whole group (see `terminate_group`); a no-op if never started."""
        if self._popen is not None:
            terminate_group(
                self._popen.pid,
                leader=self._popen,
                leaves_first=self.leaves_first,
                timeout=timeout,
            )
        if self._log is not None:
            self._log.close()
            self._log = None

    def signal_now(self) -> None:
        """SIGTERM the whole group without waiting (for signal handlers)."""
        if self._popen is not None and self._popen.returncode is None:
            signal_group_now(self._popen.pid, leaves_first=self.leaves_first)


def _signal_leaves(pgid: int) -> bool:
    """SIGTERM the group's members that have no children; False if there were none to find."""
    members = group_members(pgid)
    parents = {m.ppid for m in members}
    leaves = [m for m in members if m.pid not in parents and m.pid != pgid]
    for leaf in leaves:
        _kill(leaf.pid, signal.SIGTERM)
    return bool(leaves)


def _wait_group_gone(pgid: int, leader: subprocess.Popen[bytes] | None, deadline: float) -> bool:
    while True:
        if leader is not None:
            leader.poll()  # reap the leader, or it stays a zombie member of the group
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _ps_processes() -> list[ProcessInfo]:
    """All live processes from `ps`, where there is no /proc (macOS, BSD)."""
    try:
        out = subprocess.run(
            ["ps", "-A", "-o", "pid=,ppid=,pgid=,stat=,command="],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.splitlines():
        parts = line.split(None, 4)
        if len(parts) == 5 and not parts[3].startswith("Z"):
            found.append(ProcessInfo(int(parts[0]), int(parts[1]), int(parts[2]), 0, parts[4]))
    return found


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
