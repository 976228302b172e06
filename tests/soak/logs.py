"""What the function processes logged: an error that is not a dead letter means something
raised where it must not (in production, a 500 and a redelivery forever) or the protocol
met a state it cannot handle (a damaged input, an unwritable run document)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

DEAD_LETTER = "dead letter: "


def read_function_logs(folder: Path) -> tuple[list[str], Counter[str]]:
    """Unexpected lines (errors, and output that is not a structured log line, such as a
    traceback printed by the server), and the dead letters by verdict."""
    unexpected: list[str] = []
    dead_letters: Counter[str] = Counter()
    for path in sorted(folder.glob("*.log")):
        for raw in path.read_bytes().splitlines():
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                unexpected.append(f"{path.name}: {raw[:200].decode(errors='replace')}")
                continue
            message = str(line.get("message", ""))
            if message.startswith(DEAD_LETTER):
                dead_letters[message[len(DEAD_LETTER) :].split(" (")[0][:60]] += 1
            elif line.get("severity") in ("ERROR", "CRITICAL", "ALERT", "EMERGENCY"):
                unexpected.append(f"{path.name}: {message.splitlines()[0][:200]}")
    return unexpected, dead_letters
