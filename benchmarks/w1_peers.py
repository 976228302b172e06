"""The peers (DBOS Transact, Prefect 3) on W1, each in a subprocess of a separate venv.

The peers are installed into their own virtual environment (default
``benchmarks/.peers-venv``, ignored by git) from ``peers/requirements.txt``, so they never
touch the project's venv. A peer that does not install or run is reported as
"not available: <reason>" instead of failing the benchmark.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import median, parse_result
from w1_results import MethodResult
from w1_workload import CRASH_EXIT_CODE, CRASH_STEP

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "peers" / "requirements.txt"
DEFAULT_VENV = HERE / ".peers-venv"
INSTALL_TIMEOUT = 1200
RUN_TIMEOUT = 1800
RESUMED_STEPS = [CRASH_STEP, "validate", "finalize"]


class PeerUnavailableError(Exception):
    """A peer could not be installed or run; the message is the reason."""


def _tail(text: str, lines: int = 1) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])[:300] or "no output"


def ensure_peers_venv(venv: Path, log: Any) -> Path:
    """The peers' Python, installing the venv from ``requirements.txt`` if needed."""
    python = venv / "bin" / "python"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = venv / ".requirements.sha256"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    log(f"installing the peers into {venv} (one time) ...")
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [
        [base, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
    ]
    for command in steps:
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise PeerUnavailableError(f"install timed out: {' '.join(command[:4])}") from None
        if done.returncode != 0:
            raise PeerUnavailableError(f"install failed: {_tail(done.stderr)}")
    stamp.write_text(wanted + "\n")
    return python


def peer_env(workdir: Path) -> dict[str, str]:
    """Offline, quiet, telemetry-free settings for the peers' processes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DBOS_"))}
    env.update(
        {
            "PREFECT_HOME": str(workdir / "prefect-home"),
            "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _run_driver(
    python: Path, driver: str, args: list[str], env: dict[str, str], expect: int = 0
) -> dict[str, Any] | None:
    """Run a driver in its own session; afterwards end whatever it left in that session.

    A driver killed by ``os._exit`` leaves its children behind (Prefect's ephemeral API
    server): they are ended through the driver's process group, which holds only processes
    this benchmark started. Output goes to files, which an orphan cannot hold open.
    """
    command = [str(python), str(HERE / "peers" / driver), *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, start_new_session=True)
        try:
            returncode = process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            _end_group(process.pid)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if returncode is None:
        raise PeerUnavailableError(f"{driver} {args[0]} timed out after {RUN_TIMEOUT} s")
    if returncode != expect:
        raise PeerUnavailableError(
            f"{driver} {args[0]} exited {returncode}: {_tail(stderr or stdout)}"
        )
    return parse_result(stdout)


def _end_group(pgid: int) -> None:
    """SIGTERM, then SIGKILL, the process group ``pgid`` (a driver's own session)."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _required(result: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if result is None:
        raise PeerUnavailableError(f"{what} printed no result")
    return result


def measure_peer(
    key: str,
    python: Path,
    workdir: Path,
    *,
    reps: int,
    load_reps: int,
    resume_reps: int,
    reference_digest: str,
) -> MethodResult:
    """Run one peer's driver: timed runs and loads, then crash-in-step-8 / resume cycles."""
    label = {"dbos": "DBOS Transact (SQLite)", "prefect": "Prefect 3"}[key]
    driver = f"{key}_driver.py"
    folder = workdir / key
    folder.mkdir(parents=True, exist_ok=True)
    env = peer_env(folder)
    db = ["--db", str(folder / "dbos.sqlite")] if key == "dbos" else []
    try:
        bench = _required(
            _run_driver(
                python,
                driver,
                ["bench", *db, "--reps", str(reps), "--load-reps", str(load_reps)],
                env,
            ),
            f"{driver} bench",
        )
        resumes: list[float] = []
        for rep in range(resume_reps):
            ident = ["--workflow-id" if key == "dbos" else "--run-key", f"w1-crash-{rep}"]
            _run_driver(python, driver, ["crash", *db, *ident], env, expect=CRASH_EXIT_CODE)
            resumed = _required(
                _run_driver(python, driver, ["resume", *db, *ident], env), f"{driver} resume"
            )
            if resumed["steps_run"] != RESUMED_STEPS:
                raise PeerUnavailableError(f"resume ran steps {resumed['steps_run']}")
            if resumed["digest"] != reference_digest:
                raise PeerUnavailableError("resumed context differs from an uninterrupted run")
            resumes.append(float(resumed["seconds"]))
    except PeerUnavailableError as exc:
        return MethodResult(key, label, available=False, reason=str(exc))
    versions = bench["versions"]
    result = MethodResult(
        key,
        label,
        total_s=median(bench["total_seconds"]),
        baseline_s=median(bench["plain_seconds"]),
        bytes_written=median(bench["write_syscall_bytes"]),
        load_s=median(bench["load_seconds"]),
        resume_s=median(resumes),
        samples={**bench, "resume_seconds": resumes},
    )
    result.notes.append(
        f"{', '.join(f'{k} {v}' for k, v in versions.items())}; A measured in the peer's "
        f"process: {median(bench['plain_seconds']):.3f} s; one-time setup (not timed): "
        f"{bench['setup_seconds']:.2f} s"
    )
    result.notes.append(
        "bytes written = write() syscall bytes of the peer's process tree (/proc/PID/io "
        f"wchar); storage grew by {median(bench['storage_growth_bytes']) / 1e6:.1f} MB per run"
    )
    if key == "dbos":
        result.notes.append(
            "step outputs pickled + base64 into SQLite (default rollback journal, "
            "synchronous=FULL); load = DBOS.list_workflow_steps; resume = DBOS.launch() "
            "recovering the pending workflow via its internal queue (polled every 1 s)"
        )
    else:
        result.notes.append(
            "results pickled (base64 in JSON) to $PREFECT_HOME/storage, no fsync; task cache "
            "key = run key + step; load = ResultStore.read of the 10 results; resume = re-run "
            "of the flow (steps 1-7 cached), ephemeral server started before timing"
        )
    return result
