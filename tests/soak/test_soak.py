"""A short chaos soak in CI: a few runs on the session's emulators, some kills, every
fault kind of ``make soak`` at least once (see ``tests/soak/__init__.py``)."""

from __future__ import annotations

import pytest

from emulators.launcher import LocalCloud

from .driver import run_soak
from .plan import SoakConfig
from .summary import format_report

pytestmark = [pytest.mark.emulators, pytest.mark.slow]


def test_a_short_soak_ends_every_run_as_an_uninterrupted_run_would(
    local_cloud: LocalCloud,
) -> None:
    config = SoakConfig(runs=8, kills=4, seed=8, start_window_seconds=4.0)
    report = run_soak(config, cloud=local_cloud)
    print(format_report(report))
    assert report.failures == []
    assert report.kills >= config.kills
    assert sum(report.verdict.statuses.values()) == config.runs
    assert report.counts["duplicate starts"] and report.counts["duplicate step messages"]
    assert report.counts["cancels"] and sum(report.faults.values())
