"""The soak's printout."""

from __future__ import annotations

import os

from .driver import Report
from .logs import NOTABLE


def format_report(report: Report) -> str:
    config, counts, verdict = report.config, report.counts, report.verdict
    statuses = verdict.statuses
    lines = [
        f"soak: {config.runs} runs, seed {config.seed}, {os.cpu_count()} cores, lease "
        f"{config.lease_seconds:g} s, storage fault rate {config.storage_fault_rate:g}",
        _row("runs", config.runs, f"started {counts['starts']}"),
        _row(
            "  ended",
            sum(statuses.values()),
            f"completed {statuses['completed']}, error {statuses['error']}, "
            f"cancelled {statuses['cancelled']}",
        ),
        _row(
            "kills (SIGKILL)",
            report.kills,
            ", ".join(f"{s} {n}" for s, n in sorted(report.kills_by_step.items()))
            + f"; restarts by the stack {report.restarts}",
        ),
        _row("duplicate starts", counts["duplicate starts"]),
        _row("duplicate step messages", counts["duplicate step messages"]),
        _row("cancels", counts["cancels"], f"+ {counts['cancels of finished runs']} of ended runs"),
        _row(
            "resumes",
            counts["resumes"] + counts["resume after cancels"] + counts["resumes --from-step"],
            f"after cancel {counts['resume after cancels']}, of running runs "
            f"{counts['resumes']}, --from-step {counts['resumes --from-step']}; refused "
            f"{counts['resumes refused'] + counts['roll-backs refused']}, roll-back not "
            f"applicable {counts['roll-backs not applicable']}",
        ),
        _row(
            "user requests retried",
            sum(n for k, n in counts.items() if k.startswith("user requests retried")),
            "run document busy or an emulator slow to answer, as a user would retry",
        ),
        _row(
            "storage faults injected",
            sum(report.faults.values()),
            f"of {report.storage_requests} requests: refused {report.faults['refused']}, "
            f"response lost {report.faults['lost']}, slowed past the lease "
            f"{report.faults['slow']}",
        ),
        _row(
            "step executions",
            sum(report.executions.values()),
            ", ".join(f"{s} {n}" for s, n in sorted(report.executions.items()))
            + f"; scan resumed from saved progress {report.resumed_from_progress}",
        ),
        _row(
            "dead letters",
            sum(report.logs.dead_letters.values()),
            ", ".join(f"{v}: {n}" for v, n in sorted(report.logs.dead_letters.items())),
        ),
        *(_row(what, report.logs.notable[what]) for what in NOTABLE),
        _row("errors as configured", len(verdict.failed_as_configured)),
        _row("given up (kills/faults)", len(verdict.given_up)),
        *(f"    - {line}" for line in verdict.given_up),
        _row("failures", len(report.failures)),
        *(f"    - {line}" for line in report.failures),
        _row(
            "wall time",
            f"{report.wall_seconds:.1f} s",
            f"chaos {report.chaos_seconds:.1f} s, then every run ended within "
            f"{report.settle_seconds:.1f} s",
        ),
        _row(
            "left behind",
            "nothing" if not _left(report) else "SEE FAILURES",
            f"checked {report.leftovers_checked}",
        ),
    ]
    return "\n".join(lines)


def _row(label: str, value: object, detail: str = "") -> str:
    return f"  {label:<34}{value!s:>8}" + (f"   ({detail})" if detail else "")


def _left(report: Report) -> bool:
    return any(f.startswith("left behind") for f in report.failures)
