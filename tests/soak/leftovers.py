"""After the stack is down: nothing of it may be left running."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from emulators.launcher import LOCAL_CLOUD_KIND
from emulators.processes import group_members, process_info
from emulators.registry import Registry

REGISTRY_CLOUD = LOCAL_CLOUD_KIND
REGISTRY_FUNCTIONS = "resumable-dev-functions"  # the kind DevStack records its servers as


def leftovers(
    function_groups: Iterable[int],
    ports: Iterable[int],
    emulator_groups: Mapping[str, int],
    registry_kinds: Iterable[str],
    home: Path,
) -> list[str]:
    """What is still alive: a process in one of the function servers' or emulators'
    process groups, a functions-framework server on one of the stack's ports, or a
    record of this process in the emulators registry of one of ``registry_kinds`` — for
    function servers, those of a stack under ``home`` only (a test session may run another
    stack of its own meanwhile)."""
    found = []
    for pgid in sorted(set(function_groups)):
        for member in group_members(pgid):
            found.append(f"function server group {pgid}: pid {member.pid} {member.cmdline[:80]}")
    for name, pgid in sorted(emulator_groups.items()):
        for member in group_members(pgid):
            found.append(f"{name} emulator group {pgid}: pid {member.pid} {member.cmdline[:80]}")
    flags = {f"--port {port}" for port in ports}
    for entry in Path("/proc").iterdir():
        info = process_info(int(entry.name)) if entry.name.isdigit() else None
        if (
            info
            and "functions_framework" in info.cmdline
            and any(flag in info.cmdline for flag in flags)
        ):
            found.append(f"a function server on the stack's port: pid {info.pid}")
    kinds = set(registry_kinds)
    for record in Registry().records():
        kind = record.info.get("kind")
        if record.owner_pid != os.getpid() or kind not in kinds:
            continue
        if kind == REGISTRY_FUNCTIONS and not str(record.info.get("home", "")).startswith(
            str(home)
        ):
            continue
        found.append(f"emulators registry still lists {record.run_id}")
    return sorted(set(found))
