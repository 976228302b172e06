"""``python -m tests.simulation --seeds N [--start S] [--inprocess]``: run many schedules
of the serverless protocol (or, with ``--inprocess``, of the in-process runner); ``make
sim`` runs both.

A failing seed prints its problems and the command that replays it alone:
``python -m tests.simulation --start SEED --seeds 1 --verbose``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from .inprocess import schedule
from .invariants import check
from .world import simulate


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation")
    parser.add_argument("--seeds", type=int, default=2000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--inprocess", action="store_true")
    args = parser.parse_args()
    failed = 0
    began = time.monotonic()
    logging.getLogger("resumable").setLevel(logging.CRITICAL)
    for seed in range(args.start, args.start + args.seeds):
        if args.inprocess:
            problems = schedule(seed)
        else:
            world = simulate(seed)
            problems = check(world)
            if args.verbose:
                print(describe(seed, world))
        if problems:
            failed += 1
            print(f"seed {seed}: {len(problems)} problem(s)")
            for problem in problems:
                print(f"  - {problem}")
            flag = " --inprocess" if args.inprocess else ""
            print(f"  replay: python -m tests.simulation{flag} --start {seed} --seeds 1 --verbose")
    took = time.monotonic() - began
    each = took / args.seeds * 1000
    print(f"{args.seeds} schedules, {failed} failed, {took:.1f} s ({each:.0f} ms each)")
    return 1 if failed else 0


def describe(seed: int, world: object) -> str:
    from .world import World

    assert isinstance(world, World)
    lines = [f"seed {seed}: faults {world.faults}, crash rate {world.sim.crash_rate}"]
    for plan in world.runs:
        state = world.state(plan.run_id)
        lines.append(
            f"  {plan.run_id} ({plan.pipeline}): {state.status if state else 'none'}"
            f" gen {state.generation if state else '-'} error {state.error if state else ''}"
        )
    for op in world.ops:
        lines.append(f"  op {op.time:.0f} {op.kind} {op.run} {op.step or ''}: {op.outcome}")
    lines.append(
        f"  crashes/faults: {len(world.sim.crashes)}; commits {len(world.documents.commits)}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
