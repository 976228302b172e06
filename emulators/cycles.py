"""Start/stop cycles with leak checks: `python -m emulators cycles -n 20`.

Each cycle starts a LocalCloud on free ports, checks all three answer, stops it, and then
checks that nothing is left: no live process in any of its process groups, and none of
its ports — the three servers' and the Firestore emulator's own WebSocket port — bound.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from emulators.launcher import LocalCloud
from emulators.ports import can_bind, is_listening
from emulators.processes import group_members
from emulators.services import SERVICES

_WEBSOCKET = re.compile(rb"Started WebSocket server on ws://[^:]+:(\d+)")


@dataclass(frozen=True)
class Cycle:
    """One start/stop: how long each took, and what was left behind (nothing, ideally)."""

    start_s: float
    stop_s: float
    java_processes: int
    ports: list[int]
    leaked_processes: list[str]
    bound_ports: list[int]

    @property
    def clean(self) -> bool:
        return not self.leaked_processes and not self.bound_ports


def run_cycle(log_dir: Path, state_dir: Path | None = None) -> Cycle:
    """Start and stop one LocalCloud; report timings and leftovers."""
    cloud = LocalCloud(log_dir=log_dir, state_dir=state_dir)
    started = time.monotonic()
    cloud.start()
    start_s = time.monotonic() - started
    pgids = list(cloud.process_groups.values())
    ports = [cloud.port(s.name) for s in SERVICES]
    for service in SERVICES:
        if not service.answers(cloud.port(service.name), cloud.project):
            raise AssertionError(f"{service.name} does not answer after start()")
    ports += _websocket_ports(log_dir / "firestore.log")
    # The Java servers are gcloud's children, in its process group: they must be found too.
    java = sum("java" in m.cmdline for g in pgids for m in group_members(g))
    started = time.monotonic()
    cloud.stop()
    stop_s = time.monotonic() - started
    leaked = [f"{m.pid} {m.cmdline[:100]}" for g in pgids for m in group_members(g)]
    bound = [p for p in ports if is_listening(p) or not can_bind(p)]
    return Cycle(round(start_s, 2), round(stop_s, 2), java, ports, leaked, bound)


def _websocket_ports(log: Path) -> list[int]:
    try:
        return [int(m) for m in _WEBSOCKET.findall(log.read_bytes())]
    except OSError:
        return []
