"""What the function processes logged: an error that is not a dead letter means something
raised where it must not (in production, a 500 and a redelivery forever) or the protocol
met a state it cannot handle (a damaged input, an unwritable run document)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

DEAD_LETTER = "dead letter: "
# A Python exception that escaped a function: Flask logs it in plain text, then its
# traceback. (The servers' own plain lines, such as gunicorn's, are not the engine's.)
ESCAPED = re.compile(rb"Exception on /|^Traceback \(most recent call last\)")
# Warnings the summary counts. The heartbeat holds a lease from claim to commit however slow
# storage is, so a live worker losing its lease means it froze (CPU starvation).
NOTABLE = {
    "lease lost by a live worker": re.compile(r"^(lease lost|stale attempt)"),
    "attempt released (storage error)": re.compile(r"^step \w+: "),
    "progress not saved": re.compile(r"^progress not saved"),
    "watchdog re-publish": re.compile(r"^watchdog re-published"),
}


@dataclass
class FunctionLogs:
    unexpected: list[str] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)  # by verdict
    notable: Counter[str] = field(default_factory=Counter)


def read_function_logs(folder: Path) -> FunctionLogs:
    """Unexpected lines (errors, and exceptions that escaped a function), dead letters and
    notable warnings."""
    logs = FunctionLogs()
    unexpected, dead_letters = logs.unexpected, logs.dead_letters
    for path in sorted(folder.glob("*.log")):
        for raw in path.read_bytes().splitlines():
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                if ESCAPED.search(raw):
                    unexpected.append(f"{path.name}: {raw[:200].decode(errors='replace')}")
                continue
            message = str(line.get("message", ""))
            if message.startswith(DEAD_LETTER):
                dead_letters[message[len(DEAD_LETTER) :].split(" (")[0][:60]] += 1
            elif line.get("severity") in ("ERROR", "CRITICAL", "ALERT", "EMERGENCY"):
                unexpected.append(f"{path.name}: {message.splitlines()[0][:200]}")
            else:
                logs.notable.update(k for k, p in NOTABLE.items() if p.match(message))
    return logs
