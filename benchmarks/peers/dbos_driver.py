"""W1 on DBOS Transact (SQLite system database), one ``@DBOS.step`` per step.

Runs in the peers' virtual environment, never in the project's. Modes::

    bench  --db FILE --reps N          # N timed runs, each followed by timed loads
    crash  --db FILE --workflow-id ID  # dies in step 8 (os._exit), like a crash
    resume --db FILE --workflow-id ID  # launch (recovers the workflow) until it completes

Every step returns its context keys (numpy arrays included), which DBOS serialises into
the system database: that is DBOS's checkpoint. The workflow's own input is the run key
only, and its return value is ``None``, so DBOS stores the context once, as step outputs.
Each mode prints one result line (see ``bench_common.emit_result``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_common import emit_result, folder_bytes, median, tree_write_bytes
from dbos import DBOS, SetWorkflowID
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


def _dbos_step(name: str, step: Step) -> Any:
    def body(context: Context) -> Context:
        crash_if_requested(name)
        STEPS_RUN.append(name)
        return step(context)

    body.__name__ = body.__qualname__ = f"w1_{name}"
    return DBOS.step(name=f"w1_{name}")(body)


def _launch(db: Path) -> None:
    DBOS(
        config={
            "name": "w1-bench",
            "system_database_url": f"sqlite:///{db}",
            "log_level": "WARNING",
        }
    )
    DBOS.launch()


# Registered at import time, before DBOS.launch(), as DBOS requires.
STEPS = [(name, _dbos_step(name, step)) for name, step in make_steps(CONFIG)]


@DBOS.workflow(name="w1_workflow")
def w1_workflow(run_key: str) -> None:
    context = initial_context(CONFIG)
    for _name, step in STEPS:
        context.update(step(context))
    FINAL_CONTEXTS[run_key] = context


def load_outputs(workflow_id: str) -> Context:
    """The context as DBOS has it: the initial context plus every recorded step output."""
    context = initial_context(CONFIG)
    for info in DBOS.list_workflow_steps(workflow_id):
        context.update(info["output"])
    return context


def _db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def bench(db: Path, reps: int, load_reps: int) -> dict[str, Any]:
    began = time.perf_counter()
    _launch(db)
    setup = time.perf_counter() - began
    reference = context_digest(run_steps(CONFIG))
    plain, totals, written, stored, loads = [], [], [], [], []
    for rep in range(reps):
        t0 = time.perf_counter()
        run_steps(CONFIG)
        plain.append(time.perf_counter() - t0)
        workflow_id = f"w1-bench-{rep}-{uuid.uuid4().hex[:8]}"
        size_before, wchar_before = _db_bytes(db), tree_write_bytes()
        t0 = time.perf_counter()
        with SetWorkflowID(workflow_id):
            w1_workflow(workflow_id)
        totals.append(time.perf_counter() - t0)
        written.append(tree_write_bytes() - wchar_before)
        stored.append(_db_bytes(db) - size_before)
        if context_digest(FINAL_CONTEXTS.pop(workflow_id)) != reference:
            raise RuntimeError("DBOS run produced a different context")
        load_outputs(workflow_id)  # warm
        samples = []
        for _ in range(load_reps):
            t0 = time.perf_counter()
            loaded = load_outputs(workflow_id)
            samples.append(time.perf_counter() - t0)
        if context_digest(loaded) != reference:
            raise RuntimeError("DBOS load returned a different context")
        loads.append(median(samples))
    return {
        "versions": {"dbos": version("dbos"), "sqlalchemy": version("sqlalchemy")},
        "setup_seconds": setup,
        "plain_seconds": plain,
        "total_seconds": totals,
        "write_syscall_bytes": written,
        "storage_growth_bytes": stored,
        "load_seconds": loads,
        "storage_bytes_end": _db_bytes(db),
        "folder_bytes_end": folder_bytes(db.parent),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["bench", "crash", "resume"])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--load-reps", type=int, default=3)
    parser.add_argument("--workflow-id", default="w1-crash")
    args = parser.parse_args()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    if args.mode == "bench":
        emit_result(bench(args.db, args.reps, args.load_reps))
    elif args.mode == "crash":
        os.environ[CRASH_ENV] = CRASH_STEP
        _launch(args.db)
        with SetWorkflowID(args.workflow_id):
            w1_workflow(args.workflow_id)
        raise SystemExit("W1 did not crash in step 8")
    else:
        began = time.perf_counter()
        _launch(args.db)  # recovers the pending workflow
        DBOS.retrieve_workflow(args.workflow_id).get_result()
        seconds = time.perf_counter() - began
        emit_result(
            {
                "seconds": seconds,
                "steps_run": list(STEPS_RUN),
                "digest": context_digest(FINAL_CONTEXTS[args.workflow_id]),
            }
        )
    DBOS.destroy()


if __name__ == "__main__":
    main()
