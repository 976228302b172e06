"""Floor C's resume after a crash in step 8, in a fresh process (as resumable's is timed).

    python benchmarks/w1_c_resume.py --folder DIR     # prints a result line

``DIR`` holds floor C's files after steps 1-7 (what a crash in step 8 leaves: every file
was fsynced when written). The timer covers what resumable's resume timer covers: loading
the checkpoint and running steps 8-10 with their checkpoints, not interpreter start and
imports.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import emit_result
from w1_floors import RawIncrementalCheckpointer, load_raw_incremental
from w1_workload import CRASH_STEP, W1Config, context_digest, initial_context, make_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True)
    args = parser.parse_args()
    config = W1Config()
    steps = make_steps(config)
    first = [name for name, _ in steps].index(CRASH_STEP)
    gc.collect()
    began = time.perf_counter()
    context = {**initial_context(config), **load_raw_incremental(args.folder)}
    resumer = RawIncrementalCheckpointer(args.folder)
    for _name, step in steps[first:]:
        updates = step(context)
        context.update(updates)
        resumer.after_step(context, updates)
    seconds = time.perf_counter() - began
    emit_result({"seconds": seconds, "digest": context_digest(context)})


if __name__ == "__main__":
    main()
