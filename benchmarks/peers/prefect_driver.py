"""W1 on Prefect 3, one task per step with ``persist_result=True``.

Runs in the peers' virtual environment with ``PREFECT_HOME`` set to a temporary folder:
Prefect starts its ephemeral local API server (SQLite) and persists task results under
``$PREFECT_HOME/storage``. Modes::

    bench  --reps N           # N timed flow runs, each followed by timed result loads
    crash  --run-key KEY      # dies in step 8 (os._exit), like a crash
    resume --run-key KEY      # re-runs the flow: steps 1-7 come from their persisted results

Every task returns its context keys (numpy arrays included), which Prefect persists with
its default (pickle) serializer. A task's cache key is ``{run key}-{step}``: the cheapest
key that lets a re-run of the flow reuse what the crashed run persisted (Prefect's
default cache policy hashes every input, the whole context, and includes the flow run
id, so a new run would recompute everything). Each mode prints one result line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_common import emit_result, folder_bytes, median, tree_write_bytes
from prefect import flow, task
from prefect.results import ResultStore, get_default_result_storage
from w1_workload import (
    CRASH_ENV,
    CRASH_STEP,
    Context,
    Step,
    W1Config,
    context_digest,
    crash_if_requested,
    initial_context,
    make_steps,
    run_steps,
)

CONFIG = W1Config()
FINAL_CONTEXTS: dict[str, Context] = {}
STEPS_RUN: list[str] = []


def _cache_key(name: str) -> Any:
    def key(_task_context: Any, parameters: dict[str, Any]) -> str:
        return f"{parameters['run_key']}-{name}"

    return key


def _prefect_task(name: str, step: Step) -> Any:
    def body(context: Context, run_key: str) -> Context:
        crash_if_requested(name)
        STEPS_RUN.append(name)
        return step(context)

    body.__name__ = body.__qualname__ = name
    return task(name=name, persist_result=True, cache_key_fn=_cache_key(name))(body)


TASKS = [(name, _prefect_task(name, step)) for name, step in make_steps(CONFIG)]


@flow(name="w1")
def w1_flow(run_key: str) -> None:
    context = initial_context(CONFIG)
    for _name, step_task in TASKS:
        context.update(step_task(context, run_key))
    FINAL_CONTEXTS[run_key] = context


@flow(name="warm-up")
def warm_up() -> None:
    """A no-op flow: starts the ephemeral API server before anything is timed."""


def load_results(run_key: str) -> Context:
    """The context as Prefect has it: the initial context plus every persisted task result."""
    store = ResultStore(result_storage=get_default_result_storage(), cache_result_in_memory=False)
    context = initial_context(CONFIG)
    for name, _task in TASKS:
        context.update(store.read(f"{run_key}-{name}").result)
    return context


def _storage() -> Path:
    return Path(os.environ["PREFECT_HOME"]) / "storage"


def bench(reps: int, load_reps: int) -> dict[str, Any]:
    began = time.perf_counter()
    warm_up()
    setup = time.perf_counter() - began
    reference = context_digest(run_steps(CONFIG))
    plain, totals, written, stored, loads = [], [], [], [], []
    for rep in range(reps):
        t0 = time.perf_counter()
        run_steps(CONFIG)
        plain.append(time.perf_counter() - t0)
        run_key = f"w1-bench-{rep}-{uuid.uuid4().hex[:8]}"
        size_before, wchar_before = folder_bytes(_storage()), tree_write_bytes()
        t0 = time.perf_counter()
        w1_flow(run_key)
        totals.append(time.perf_counter() - t0)
        written.append(tree_write_bytes() - wchar_before)
        stored.append(folder_bytes(_storage()) - size_before)
        if context_digest(FINAL_CONTEXTS.pop(run_key)) != reference:
            raise RuntimeError("Prefect run produced a different context")
        load_results(run_key)  # warm
        samples = []
        for _ in range(load_reps):
            t0 = time.perf_counter()
            loaded = load_results(run_key)
            samples.append(time.perf_counter() - t0)
        if context_digest(loaded) != reference:
            raise RuntimeError("Prefect load returned a different context")
        loads.append(median(samples))
    return {
        "versions": {"prefect": version("prefect")},
        "setup_seconds": setup,
        "plain_seconds": plain,
        "total_seconds": totals,
        "write_syscall_bytes": written,
        "storage_growth_bytes": stored,
        "load_seconds": loads,
        "folder_bytes_end": folder_bytes(Path(os.environ["PREFECT_HOME"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["bench", "crash", "resume"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--load-reps", type=int, default=3)
    parser.add_argument("--run-key", default="w1-crash")
    args = parser.parse_args()
    if "PREFECT_HOME" not in os.environ:
        raise SystemExit("set PREFECT_HOME to a temporary folder")
    if args.mode == "bench":
        emit_result(bench(args.reps, args.load_reps))
    elif args.mode == "crash":
        warm_up()
        os.environ[CRASH_ENV] = CRASH_STEP
        w1_flow(args.run_key)
        raise SystemExit("W1 did not crash in step 8")
    else:
        began = time.perf_counter()
        warm_up()
        setup = time.perf_counter() - began
        began = time.perf_counter()
        w1_flow(args.run_key)
        seconds = time.perf_counter() - began
        emit_result(
            {
                "seconds": seconds,
                "setup_seconds": setup,
                "steps_run": list(STEPS_RUN),
                "digest": context_digest(FINAL_CONTEXTS[args.run_key]),
            }
        )


if __name__ == "__main__":
    main()
