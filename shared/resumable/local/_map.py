"""A map step in this process: the step's function per item on worker threads, the
finished items checkpointed in batches as the step's progress, so that a killed or failed
run resumes with only the items not done (or failed) yet.

Progress keys (internal to the step, removed from its output):
``{step}.__map_items__`` (the items, listed once) and ``{step}.__map_done_N__`` (a batch
of finished items: their results and failures by index).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from types import MappingProxyType
from typing import Any

from resumable.definition._map import CONTINUE_IN_ITEM, list_items, map_output
from resumable.definition._spec import StepSpec
from resumable.definition._step_api import Continue, step_kwargs
from resumable.errors import NonRetryableError, is_retryable

# Finished items are checkpointed together: at most this long apart, or after this many
# (each checkpoint writes a manifest; an item finished since the last one runs again after
# a kill). The environment can change both, e.g. to 1 item for items of minutes each.
BATCH_SECONDS = float(os.environ.get("RESUMABLE_MAP_CHECKPOINT_SECONDS", "5"))
BATCH_ITEMS = int(os.environ.get("RESUMABLE_MAP_CHECKPOINT_ITEMS", "100"))


def items_key(step: str) -> str:
    return f"{step}.__map_items__"


def batch_key(step: str, number: int) -> str:
    return f"{step}.__map_done_{number:06d}__"


def _is_internal(step: str, key: str) -> bool:
    return key.startswith(f"{step}.__map_")


class MapRun:
    """One call of a map step: the items not finished yet, run on ``workers`` threads."""

    def __init__(
        self,
        spec: StepSpec,
        context: dict[str, Any],
        *,
        save_progress: Callable[[Mapping[str, Any]], bool],
        should_stop: Callable[[], bool],
        time_left: Callable[[], float],
        workers: int,
        retry_delay: Callable[[int], float],
        wait_stop: Callable[[float], bool],
    ) -> None:
        self.spec = spec
        self.context = context
        self.save_progress = save_progress
        self.should_stop = should_stop
        self.kwargs = step_kwargs(spec.function, should_stop, time_left)
        self.kwargs.pop("save_progress", None)  # an item's progress is its result
        self.workers = max(1, workers)
        self.retry_delay = retry_delay
        self.wait_stop = wait_stop
        self._lock = threading.Lock()
        self._unsaved: dict[str, dict[int, Any]] = {"results": {}, "failed": {}}

    def __call__(self) -> Any:
        step = self.spec.name
        if items_key(step) not in self.context:
            assert self.spec.map is not None
            self.save_progress({items_key(step): list_items(self.spec.map, step, self.context)})
        items: list[Any] = list(self.context[items_key(step)])
        results, failed = self._finished()
        pending = [i for i in range(len(items)) if i not in results]
        view = MappingProxyType(
            {k: v for k, v in self.context.items() if not _is_internal(step, k)}
        )
        stopped = self._run(items, pending, view)
        self._save_batch()
        results, failed = self._finished()
        if stopped:
            return Continue()
        return self._output(items, results, failed)

    def _run(self, items: list[Any], pending: list[int], view: Mapping[str, Any]) -> bool:
        """Run the pending items; ``True`` if a stop request cut the run short."""
        last_save = time.monotonic()
        queue = list(reversed(pending))
        running: dict[Future[None], int] = {}
        with ThreadPoolExecutor(self.workers, thread_name_prefix="resumable-item") as pool:
            while queue or running:
                # One item at least per call, even past the deadline: every continuation
                # moves the step forward.
                while (
                    queue
                    and len(running) < self.workers
                    and (not self.should_stop() or len(queue) == len(pending))
                ):
                    index = queue.pop()
                    running[pool.submit(self._item, index, items[index], view)] = index
                if not running:
                    return True  # stopped before the queue emptied
                done, _ = wait(list(running), timeout=BATCH_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    future.result()
                unsaved = len(self._unsaved["results"]) + len(self._unsaved["failed"])
                if unsaved >= BATCH_ITEMS or time.monotonic() - last_save >= BATCH_SECONDS:
                    self._save_batch()
                    last_save = time.monotonic()
        return False

    def _item(self, index: int, item: Any, view: Mapping[str, Any]) -> None:
        tries = 0
        while True:
            tries += 1
            try:
                result = self.spec.function(item, view, **self.kwargs)
                if isinstance(result, Continue):
                    raise NonRetryableError(CONTINUE_IN_ITEM)
            except Exception as exc:
                if is_retryable(exc) and tries <= self.spec.retries:
                    if self.wait_stop(self.retry_delay(tries)):
                        return  # stopping: the item stays unfinished
                    continue
                with self._lock:
                    self._unsaved["failed"][index] = f"{type(exc).__name__}: {exc}"
                return
            with self._lock:
                self._unsaved["results"][index] = result
            return

    def _save_batch(self) -> None:
        with self._lock:
            batch, self._unsaved = self._unsaved, {"results": {}, "failed": {}}
        if not batch["results"] and not batch["failed"]:
            return
        number = sum(1 for k in self.context if k.startswith(f"{self.spec.name}.__map_done_"))
        self.save_progress({batch_key(self.spec.name, number): batch})

    def _finished(self) -> tuple[dict[int, Any], dict[int, str]]:
        """Results and failures so far, later batches overriding earlier ones (an item
        that failed, then succeeded on a resume, counts as succeeded)."""
        results: dict[int, Any] = {}
        failed: dict[int, str] = {}
        prefix = f"{self.spec.name}.__map_done_"
        for key in sorted(k for k in self.context if k.startswith(prefix)):
            batch = self.context[key]
            for index, error in batch["failed"].items():
                failed[int(index)] = error
                results.pop(int(index), None)
            for index, result in batch["results"].items():
                results[int(index)] = result
                failed.pop(int(index), None)
        return results, failed

    def _output(
        self, items: list[Any], results: dict[int, Any], failed: dict[int, str]
    ) -> dict[str, Any]:
        assert self.spec.map is not None
        output = map_output(self.spec.map, self.spec.name, items, results, failed)
        for key in [k for k in self.context if _is_internal(self.spec.name, k)]:
            del self.context[key]
        return output
