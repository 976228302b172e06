"""``python -m tests.soak [--runs N] [--kills K] [--seed S]``: the chaos soak on the local
stack (``make soak``); defaults from ``SOAK_RUNS``, ``SOAK_KILLS``, ``SOAK_SEED``.
Exits 1 when any check failed."""

from __future__ import annotations

import argparse
import logging
import sys

from .driver import run_soak
from .plan import SoakConfig
from .summary import format_report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--kills", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--storage-faults", type=float, help="share of storage requests failed")
    parser.add_argument("--lease", type=float, help="seconds a step's lease lives (default 5)")
    parser.add_argument("--kill-gap", type=float, help="mean seconds between kills (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the logs (path printed)")
    args = parser.parse_args()
    config = SoakConfig.from_env(
        runs=args.runs,
        kills=args.kills,
        seed=args.seed,
        storage_fault_rate=args.storage_faults,
        lease_seconds=args.lease,
        kill_gap_seconds=args.kill_gap,
    )
    # The stack's own warnings (a killed function restarted) are what the soak causes.
    logging.getLogger("resumable").setLevel(logging.ERROR)
    report = run_soak(config, out=sys.stdout, keep=args.keep)
    print(format_report(report))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
