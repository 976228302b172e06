"""W1 checkpoint by checkpoint: what each one costs floor C and resumable, and what
exactness alone costs at each.

    .venv/bin/python benchmarks/w1_checkpoints.py [--reps N] [--tmp-dir DIR] [--json]

``w1_inprocess.py`` gives one overhead per run; this splits it by step. Each step's
function is wrapped with a clock, so the time from a step's return to the next step's
call (to the run's return, after the last step) is that step's checkpoint. C and resumable
runs alternate, ``--reps`` of each (11), medians per step.

Beside them, per step, the **witness pass** on the context that step left: walking every
value and XXH3 over every writeable array (``EntryCache.start``/``help``/``finish``), which
is what resumable must do at every checkpoint to see a value changed in place without being
returned (the default, exact mode). Timed on the same context, warm, outside a run: a
lower bound of what exactness adds to each checkpoint, before any byte is written.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from w1_floors import RawIncrementalCheckpointer
from w1_workload import Context, Step, W1Config, initial_context, make_steps

from resumable import Pipeline
from resumable.checkpoint._codec import LARGE_BINARY
from resumable.checkpoint._reuse import EntryCache

DEFAULT_TMP = Path(__file__).resolve().parent / ".bench-tmp"


class StepClock:
    """Marks each wrapped step's call and return, in order."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def wrap(self, step: Step) -> Step:
        def timed(context: Context) -> Context:
            self.marks.append(time.perf_counter())
            updates = step(context)
            self.marks.append(time.perf_counter())
            return updates

        timed.__name__ = step.__name__
        return timed

    def checkpoints(self, ended: float) -> list[float]:
        """Seconds from each step's return to the next step's call (or to ``ended``)."""
        returns = self.marks[1::2]
        calls = [*self.marks[2::2], ended]
        return [call - back for back, call in zip(returns, calls, strict=True)]


def run_c(steps: list[tuple[str, Step]], folder: Path, config: W1Config) -> None:
    writer = RawIncrementalCheckpointer(folder)
    context = initial_context(config)
    for _name, step in steps:
        updates = step(context)
        context.update(updates)
        writer.after_step(context, updates)


def run_resumable(
    steps: list[tuple[str, Step]], storage: Path, run_id: str, config: W1Config
) -> None:
    pipeline = Pipeline(
        "w1",
        {name: {"function": step} for name, step in steps},
        storage=str(storage),
        run_guid=run_id,
        cleanup_on_success=False,
        fail_on_checkpoint_error=True,
    )
    result = pipeline.run(initial_context(config))
    if result["status"] != "completed":
        raise RuntimeError(f"resumable run ended {result['status']}: {result['errors']}")


def timed_checkpoints(clock: StepClock, run: Callable[[], None]) -> list[float]:
    clock.marks.clear()
    gc.collect()
    run()
    return clock.checkpoints(time.perf_counter())


def witness_pass(context: Context, reps: int) -> float:
    """Median seconds of one exact witness pass over ``context`` (warm)."""
    cache = EntryCache()
    seconds = []
    for _ in range(reps):
        began = time.perf_counter()
        started = {key: cache.start(value) for key, value in context.items()}
        cache.help(started.values())
        for key, walked in started.items():
            cache.finish(key, walked, LARGE_BINARY)
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def witness_passes(config: W1Config, reps: int = 9) -> list[float]:
    """Seconds of the exact witness pass on the context each W1 step leaves (warm)."""
    context = initial_context(config)
    seconds = []
    for _name, step in make_steps(config):
        context.update(step(context))
        seconds.append(witness_pass(context, reps))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--tmp-dir", type=Path, default=DEFAULT_TMP)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    config = W1Config()
    clock = StepClock()
    steps = [(name, clock.wrap(step)) for name, step in make_steps(config)]
    names = [name for name, _ in steps]
    args.tmp_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="w1-checkpoints-", dir=args.tmp_dir))
    try:
        c_runs, r_runs = [], []
        for rep in range(args.reps):
            c_folder = workdir / "c" / f"run-{rep}"
            c_run = partial(run_c, steps, c_folder, config)
            r_run = partial(run_resumable, steps, workdir / "r", f"run-{rep}", config)
            c_runs.append(timed_checkpoints(clock, c_run))
            r_runs.append(timed_checkpoints(clock, r_run))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    witness = witness_passes(config)
    rows = [
        {
            "after_step": name,
            "c_ms": 1000 * statistics.median(run[i] for run in c_runs),
            "resumable_ms": 1000 * statistics.median(run[i] for run in r_runs),
            "witness_ms": 1000 * witness[i],
        }
        for i, name in enumerate(names)
    ]
    if args.json:
        print(json.dumps({"reps": args.reps, "checkpoints": rows}))
        return
    print(f"W1 checkpoint by checkpoint, median of {args.reps} runs each (ms)")
    print(f"{'after step':20s} {'C':>8s} {'resumable':>10s} {'R - C':>8s} {'witness':>8s}")
    for row in rows:
        extra = row["resumable_ms"] - row["c_ms"]
        print(
            f"{row['after_step']:20s} {row['c_ms']:8.2f} {row['resumable_ms']:10.2f} "
            f"{extra:8.2f} {row['witness_ms']:8.2f}"
        )
    total = {k: sum(float(r[k]) for r in rows) for k in ("c_ms", "resumable_ms", "witness_ms")}
    print(
        f"{'sum':20s} {total['c_ms']:8.2f} {total['resumable_ms']:10.2f} "
        f"{total['resumable_ms'] - total['c_ms']:8.2f} {total['witness_ms']:8.2f}"
    )
    print(
        f"resumable / C: {total['resumable_ms'] / total['c_ms']:.2f}x; C plus the witness "
        f"passes alone: {(total['c_ms'] + total['witness_ms']) / total['c_ms']:.2f}x C"
    )
    print(
        "(the last row's resumable figure includes the run's final checkpoint; the witness "
        "column is warm and writes nothing)"
    )


if __name__ == "__main__":
    main()
