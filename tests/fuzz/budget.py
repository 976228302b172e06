"""How long each fuzz target runs, and the bounds every example must stay within.

In CI every target is derandomized (the same examples on every run) and small: a few
seconds each. ``RESUMABLE_FUZZ_EXAMPLES=N`` (``make fuzz``) runs N examples per target
instead, randomized from pytest's ``--hypothesis-seed`` so that a failure can be replayed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import tracemalloc
from collections.abc import Iterator
from types import FrameType

from hypothesis import HealthCheck, settings

LONG_RUN_EXAMPLES = int(os.environ.get("RESUMABLE_FUZZ_EXAMPLES") or 0)
# No example may take longer (a hang) or allocate more through Python's allocators (an
# unchecked size claim): decoding a damaged checkpoint of a few MB needs far less.
EXAMPLE_SECONDS = 20
EXAMPLE_PEAK_BYTES = 96 * 1024 * 1024


def fuzz_settings(ci_examples: int) -> settings:
    return settings(
        max_examples=LONG_RUN_EXAMPLES or ci_examples,
        derandomize=not LONG_RUN_EXAMPLES,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


class Hang(Exception):
    """An example ran longer than EXAMPLE_SECONDS."""


@contextlib.contextmanager
def bounded() -> Iterator[None]:
    """Fail the example if it takes longer than EXAMPLE_SECONDS or if its Python-level
    allocations (numpy's included) peak above EXAMPLE_PEAK_BYTES."""

    def too_long(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"the example ran longer than {EXAMPLE_SECONDS} s")

    # pytest-timeout's alarm, if armed, is suspended meanwhile and re-armed after.
    previous = signal.signal(signal.SIGALRM, too_long)
    outer, _interval = signal.setitimer(signal.ITIMER_REAL, EXAMPLE_SECONDS)
    started = time.monotonic()
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
        assert peak <= EXAMPLE_PEAK_BYTES, f"the example allocated {peak} bytes at its peak"
    finally:
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            left = outer - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))
