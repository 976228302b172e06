"""What the soak did, as the checks need it: per run, the cancels, resumes and roll-backs
that were applied (``True``), refused (``False``) or whose outcome is unknown (``None``:
the request raised, it may or may not have been applied); and the kills, by step."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Operation:
    kind: str  # "cancel", "resume" or "from_step"
    at: float  # wall-clock time, comparable with run documents' timestamps
    applied: bool | None
    steps: frozenset[str] = frozenset()  # the steps a --from-step resume rolled back


@dataclass(frozen=True)
class Kill:
    at: float  # wall-clock time
    step: str
    pid: int


@dataclass
class Ledger:
    counts: Counter[str] = field(default_factory=Counter)
    operations: dict[str, list[Operation]] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def record(
        self, run_id: str, kind: str, applied: bool | None, steps: frozenset[str] = frozenset()
    ) -> None:
        with self._lock:
            self.operations.setdefault(run_id, []).append(
                Operation(kind, time.time(), applied, steps)
            )

    def killed(self, step: str, pid: int) -> None:
        with self._lock:
            self.kills.append(Kill(time.time(), step, pid))

    def of(self, run_id: str) -> list[Operation]:
        with self._lock:
            return list(self.operations.get(run_id, []))

    def kills_of(self, step: str, start: float, end: float) -> int:
        """Kills of ``step``'s function between two wall-clock times."""
        with self._lock:
            return sum(1 for k in self.kills if k.step == step and start <= k.at <= end)
