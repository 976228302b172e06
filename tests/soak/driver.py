"""One soak: the local stack, the runs, the chaos, the checks, the summary.

1. the emulators (or the caller's running ones), a fault proxy in front of
   fake-gcs-server for the function processes, and the dev stack: one functions-framework
   process per step, restarted when it dies, the watchdog ticking as Cloud Scheduler would;
2. the users start the runs and play the plan (duplicates, cancels, resumes), while the
   killer SIGKILLs step functions; both stop when their work is done;
3. every run must then end within ``end_timeout_seconds``; the checks run, the stack goes
   down, and nothing of it may be left running.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from resumable.dev._stack import DevStack
from resumable.serverless._engine import Engine
from resumable.serverless._settings import Settings
from resumable.serverless._topology import DeliveryPolicy

from . import pipeline
from .checks import Verdict, check_runs
from .faultproxy import FaultProxy
from .killer import Killer
from .ledger import Ledger
from .leftovers import REGISTRY_CLOUD, REGISTRY_FUNCTIONS, leftovers
from .logs import FunctionLogs, read_function_logs
from .observer import Observer
from .plan import RunPlan, SoakConfig, make_plan
from .users import Users

PROJECT = "resumable-soak"
PIPELINE_REF = "tests.soak.pipeline:soak"
WATCHDOG_SECONDS = 3.0


@dataclass
class Report:
    config: SoakConfig
    verdict: Verdict = field(default_factory=Verdict)
    counts: Counter[str] = field(default_factory=Counter)
    kills_by_step: Counter[str] = field(default_factory=Counter)
    restarts: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    storage_requests: int = 0
    executions: Counter[str] = field(default_factory=Counter)
    resumed_from_progress: int = 0
    logs: FunctionLogs = field(default_factory=FunctionLogs)
    failures: list[str] = field(default_factory=list)
    leftovers_checked: str = ""
    chaos_seconds: float = 0.0
    settle_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def kills(self) -> int:
        return sum(self.kills_by_step.values())


def run_soak(
    config: SoakConfig, *, cloud: Any = None, out: TextIO | None = None, keep: bool = False
) -> Report:
    """Run a soak; ``cloud``: a running ``emulators.LocalCloud`` to use (left running),
    else the soak starts its own and stops it. ``keep``: leave the work folder (the
    functions' and emulators' logs) in place, for an investigation."""
    began = time.monotonic()
    report = Report(config)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    say = functools.partial(_say, out, began)
    owned = cloud is None
    try:
        with _saved_environment():
            if owned:
                from emulators.launcher import LocalCloud

                cloud = LocalCloud(project=PROJECT, log_dir=workdir / "emulators").start()
            emulator_groups = dict(cloud.process_groups) if owned else {}
            try:
                groups, ports = _soak(config, cloud, workdir, report, say)
            finally:
                if owned:
                    cloud.stop()
        kinds = {REGISTRY_FUNCTIONS, *([REGISTRY_CLOUD] if owned else [])}
        report.failures += [
            f"left behind: {x}" for x in leftovers(groups, ports, emulator_groups, kinds, workdir)
        ]
        report.leftovers_checked = (
            f"{len(groups)} function server process groups, "
            f"{len(emulator_groups)} emulator process groups, the emulators registry"
        )
    finally:
        if keep:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report.wall_seconds = time.monotonic() - began
    return report


def _soak(
    config: SoakConfig, cloud: Any, workdir: Path, report: Report, say: Any
) -> tuple[set[int], list[int]]:
    """The soak on a running cloud; returns the process groups and ports of every function
    server it ran, for the check that none is left."""
    plans = make_plan(config, token=uuid.uuid4().hex[:6])
    proxy = FaultProxy(
        cloud.storage_url,
        rate=config.storage_fault_rate,
        seed=config.seed,
        slow_seconds=config.lease_seconds,
    ).start()
    logs = workdir / "logs"
    logs.mkdir()
    stack = DevStack(
        [PIPELINE_REF],
        home=workdir / "stack",
        project=PROJECT,
        bucket=PROJECT,
        cloud=cloud,
        lease_seconds=config.lease_seconds,
        watchdog_interval=WATCHDOG_SECONDS,
        policy=DeliveryPolicy.local(),
        extra_env={
            "STORAGE_EMULATOR_HOST": proxy.url,  # the functions' storage goes through faults
            "SOAK_ITEM_SECONDS": str(config.item_seconds),
            "SOAK_LOG_DIR": str(logs),
            "SOAK_GATE": str(workdir / "hold"),
        },
    )
    ledger = Ledger()
    killer: Killer | None = None
    try:
        stack.up()
        say(f"stack up: {len(stack.functions)} function processes; starting {config.runs} runs")
        engine = Engine.from_settings(Settings.from_env())  # the soak's own view: no faults
        gate = workdir / "hold"
        gate.touch()  # runs hold in ``scan`` until the killer is done (see pipeline.py)
        killer = _play(config, stack, engine, plans, ledger, proxy, report, say, gate)
        report.verdict = check_runs(
            engine,
            plans,
            ledger,
            reference=pipeline.reference,
            faults_by_run=proxy.faults_by_run,
        )
        report.failures += report.verdict.failures
        report.restarts = sum(p.restarts for p in stack.functions.values())
        if report.restarts < killer.kills:
            report.failures.append(f"{killer.kills} kills but {report.restarts} restarts")
    finally:
        ports = [p.port for p in stack.functions.values()]
        stack.down()
        proxy.stop()
    report.counts = ledger.counts
    report.kills_by_step = Counter(k.step for k in ledger.kills)
    report.faults = proxy.faults
    report.storage_requests = proxy.requests
    report.executions, report.resumed_from_progress = _executions(logs)
    report.logs = read_function_logs(stack.home / "logs")
    report.failures += [f"function log: {line}" for line in report.logs.unexpected]
    return (killer.all_pids() if killer else set()), ports


def _play(
    config: SoakConfig,
    stack: DevStack,
    engine: Engine,
    plans: list[RunPlan],
    ledger: Ledger,
    proxy: FaultProxy,
    report: Report,
    say: Any,
    gate: Path,
) -> Killer:
    """The chaos, until the users played every operation and the killer is done (or
    nothing is left to kill); then every run gets ``end_timeout_seconds`` to end. The
    ``gate`` keeps every run from ending until the killer is done, so that a slow machine
    gets its kills too."""
    observer = Observer(engine, [p.run_id for p in plans]).start()
    users = Users(
        engine, ledger, plans, project=PROJECT, prefix=stack.prefix,
        patience=config.end_timeout_seconds,
    )  # fmt: skip
    killer = Killer(
        stack, observer, ledger, kills=config.kills, mean_gap=config.kill_gap_seconds,
        min_uptime=2 * config.kill_gap_seconds, seed=config.seed,
    )  # fmt: skip
    began = time.monotonic()
    # A run stuck with nothing to kill must not keep the chaos going for ever.
    deadline = began + config.start_window + config.end_timeout_seconds
    users.start_playing()
    killer.start()
    try:
        last = 0.0
        while time.monotonic() < deadline:
            unfinished = observer.unfinished()
            if killer.kills >= config.kills or not killer.is_alive():
                gate.unlink(missing_ok=True)
                users.runs_may_end.set()
            if users.done() and not (killer.kills < config.kills and unfinished):
                break
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                say(
                    f"{config.runs - len(unfinished)}/{config.runs} runs ended, "
                    f"{killer.kills} kills, {proxy.injected} storage faults"
                )
            observer.wait(2.0)
        killer.stop()
        gate.unlink(missing_ok=True)
        users.runs_may_end.set()
        report.chaos_seconds = time.monotonic() - began
        settled = time.monotonic()
        while observer.unfinished() and time.monotonic() < settled + config.end_timeout_seconds:
            observer.wait(5.0)
        report.settle_seconds = time.monotonic() - settled
    finally:
        killer.stop()
        gate.unlink(missing_ok=True)
        users.stop()
        observer.stop()
    if killer.kills < config.kills:
        report.failures.append(
            f"only {killer.kills} of {config.kills} kills: the runs ended first (use more "
            "runs or a shorter kill gap)"
        )
    report.failures += [f"user operation failed: {e}" for e in users.errors]
    return killer


def _executions(logs: Path) -> tuple[Counter[str], int]:
    """Step executions by step, and how many ``scan`` executions resumed from progress."""
    by_step: Counter[str] = Counter()
    resumed = 0
    path = logs / pipeline.EXECUTIONS
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        parts = line.split()
        if len(parts) == 4:
            by_step[parts[1]] += 1
            resumed += parts[1] == "scan" and parts[2] != "0"
    return by_step, resumed


@contextmanager
def _saved_environment() -> Iterator[None]:
    """The stack points ``os.environ`` at itself; the caller gets its own back."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _say(out: TextIO | None, began: float, line: str) -> None:
    if out is not None:
        print(f"  {time.monotonic() - began:6.1f}s  {line}", file=out, flush=True)
