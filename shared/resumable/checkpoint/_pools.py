"""The process's shared worker threads: each pool is created the first time it is used
(a process that never writes a blob starts no thread) and then serves every run of the
process, so that work is overlapped without a thread per run."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


class SharedPool:
    """A process-wide :class:`ThreadPoolExecutor` of ``workers`` threads named ``name``,
    created on the first call. Thread-safe."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
            return self._pool
