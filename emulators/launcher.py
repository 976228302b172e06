"""`LocalCloud`: the Pub/Sub and Firestore emulators and fake-gcs-server, as one unit.

    with LocalCloud() as cloud:      # free ports, project "resumable-local"
        cloud.apply_env()            # PUBSUB_EMULATOR_HOST=127.0.0.1:PORT, ...
        ...                          # official clients now talk to the emulators
        cloud.reset()                # empty everything between tests

Guarantees:
- `start()` returns only once every server answers a real request; on failure it stops
  whatever started and raises (`MissingPrerequisite` within about a second, before
  starting anything, when gcloud, an emulator component, Java or fake-gcs-server is missing).
- `stop()` returns only once no process of the three is left (Java children included)
  and their ports are free. It runs on `with` exit, at interpreter exit, and — via SIGTERM
  or SIGHUP handlers — when the process is told to terminate. A run killed outright is
  cleaned up by the next `start()` on this machine (see `emulators.registry`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from itertools import count
from pathlib import Path
from types import TracebackType

from emulators import termination
from emulators.defaults import (
    DEFAULT_PROJECT,
    FIRESTORE_EMULATOR_HOST,
    LOCALHOST,
    PROJECT_VARIABLES,
    PUBSUB_EMULATOR_HOST,
    STORAGE_EMULATOR_HOST,
)
from emulators.errors import EmulatorStartError, LocalCloudError, PortInUse
from emulators.ports import can_bind, free_port, is_listening
from emulators.prereqs import check_prerequisites
from emulators.processes import ManagedProcess, start_ticks
from emulators.registry import GroupRecord, Registry, RunRecord
from emulators.reset import Resetter
from emulators.services import FIRESTORE, PUBSUB, SERVICES, STORAGE, Service, child_env, command

DEFAULT_LOG_ROOT = Path(".emulators") / "logs"
LOCAL_CLOUD_KIND = "local-cloud"  # registry records of other kinds name other processes
_KEEP_LOG_DIRS = 20
_run_counter = count(1)


class LocalCloud:
    """The three local servers on 127.0.0.1, started together and stopped together.

    Ports left as None are chosen free at `start()`. Logs go to `log_dir` (default:
    `.emulators/logs/<run id>/` under the current directory, the newest 20 kept), one file
    per server. `state_dir` overrides where runs are recorded (see `emulators.registry`);
    `started_by` labels the record ("cli" runs are those `python -m emulators stop` stops).
    `external()` builds one for servers someone else runs (docker-compose).
    """

    def __init__(
        self,
        project: str = DEFAULT_PROJECT,
        pubsub_port: int | None = None,
        firestore_port: int | None = None,
        storage_port: int | None = None,
        log_dir: Path | str | None = None,
        *,
        startup_timeout: float = 120.0,
        state_dir: Path | None = None,
        started_by: str = "library",
    ) -> None:
        self.project = project
        self._ports: dict[str, int | None] = {
            PUBSUB.name: pubsub_port,
            FIRESTORE.name: firestore_port,
            STORAGE.name: storage_port,
        }
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self.startup_timeout = startup_timeout
        self._registry = Registry(state_dir)
        self.started_by = started_by
        self._external = False
        self._processes: dict[str, ManagedProcess] = {}
        self._run_id: str | None = None
        self._resetter: Resetter | None = None
        self._saved_env: dict[str, str | None] = {}
        self._lock = threading.RLock()

    @classmethod
    def external(cls, env: Mapping[str, str] | None = None) -> LocalCloud:
        """A LocalCloud for servers already running elsewhere (e.g. `docker compose up`),
        read from PUBSUB_EMULATOR_HOST, FIRESTORE_EMULATOR_HOST, STORAGE_EMULATOR_HOST and
        GOOGLE_CLOUD_PROJECT. `start()` only waits for them to answer; `stop()` leaves them
        running; `reset()` works as usual."""
        env = os.environ if env is None else env
        try:
            pubsub = _port_of(env[PUBSUB_EMULATOR_HOST])
            firestore = _port_of(env[FIRESTORE_EMULATOR_HOST])
            storage = _port_of(env[STORAGE_EMULATOR_HOST])
        except KeyError as missing:
            raise LocalCloudError(f"external local cloud: {missing} is not set") from None
        cloud = cls(env.get("GOOGLE_CLOUD_PROJECT", DEFAULT_PROJECT), pubsub, firestore, storage)
        cloud._external = True
        return cloud

    # -- addresses ---------------------------------------------------------------------

    def port(self, service: str) -> int:
        """The port of "pubsub", "firestore" or "storage"."""
        port = self._ports[service]
        if port is None:
            raise LocalCloudError(f"the {service} port is chosen at start(); start first")
        return port

    @property
    def pubsub_host(self) -> str:
        """host:port for PUBSUB_EMULATOR_HOST."""
        return f"{LOCALHOST}:{self.port(PUBSUB.name)}"

    @property
    def firestore_host(self) -> str:
        """host:port for FIRESTORE_EMULATOR_HOST."""
        return f"{LOCALHOST}:{self.port(FIRESTORE.name)}"

    @property
    def storage_url(self) -> str:
        """http://host:port for STORAGE_EMULATOR_HOST."""
        return f"http://{LOCALHOST}:{self.port(STORAGE.name)}"

    @property
    def env(self) -> dict[str, str]:
        """The variables that point official clients (and gcloud) at this local cloud."""
        variables = {
            PUBSUB_EMULATOR_HOST: self.pubsub_host,
            FIRESTORE_EMULATOR_HOST: self.firestore_host,
            STORAGE_EMULATOR_HOST: self.storage_url,
        }
        variables.update(dict.fromkeys(PROJECT_VARIABLES, self.project))
        return variables

    def export_lines(self) -> list[str]:
        """`export NAME=value` lines for a POSIX shell, one per variable of `env`."""
        return [f"export {name}={value}" for name, value in self.env.items()]

    def apply_env(self) -> None:
        """Set `env` in os.environ; `stop()` puts back the values it replaced."""
        for name, value in self.env.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    @property
    def log_dir(self) -> Path:
        """The folder holding pubsub.log, firestore.log and storage.log."""
        if self._log_dir is None:
            raise LocalCloudError("the log folder is chosen at start(); start first")
        return self._log_dir

    @property
    def is_external(self) -> bool:
        """Whether the servers are run by someone else (see `external()`)."""
        return self._external

    @property
    def running(self) -> bool:
        """Whether this object started the servers and has not stopped them."""
        return bool(self._processes) or (self._external and self._resetter is not None)

    @property
    def process_groups(self) -> dict[str, int]:
        """Process group id of each server this object started (empty when external)."""
        return {name: process.pid for name, process in self._processes.items()}

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> LocalCloud:
        """Start the three servers and return once each answers; idempotent."""
        with self._lock:
            if self.running:
                return self
            if self._external:
                self._wait_ready({})
            else:
                self._start_processes()
            self._resetter = Resetter(
                project=self.project,
                pubsub_host=self.pubsub_host,
                firestore_host=self.firestore_host,
                storage_url=self.storage_url,
            )
            return self

    def stop(self) -> None:
        """Stop the servers (all processes, ports freed) and restore os.environ; idempotent."""
        with self._lock:
            if self._resetter is not None:
                self._resetter.close()
                self._resetter = None
            processes = list(self._processes.values())
            # In parallel: each group takes a few hundred ms to wind down.
            stoppers = [threading.Thread(target=p.stop, daemon=True) for p in processes]
            for thread in stoppers:
                thread.start()
            interrupted: BaseException | None = None
            for thread in stoppers:
                # A second Ctrl-C must not abandon the processes half-stopped.
                while thread.is_alive():
                    try:
                        thread.join()
                    except KeyboardInterrupt as error:
                        interrupted = error
            self._processes.clear()
            if self._run_id is not None:
                self._registry.remove(self._run_id)
                self._run_id = None
            atexit.unregister(self.stop)
            termination.untrack(self)
            self._restore_env()
            if interrupted is not None:
                raise interrupted

    def reset(self) -> None:
        """Empty the project: documents, subscriptions, snapshots, topics, buckets."""
        if self._resetter is None:
            raise LocalCloudError("reset() needs a started local cloud")
        self._resetter.reset()

    def signal_now(self) -> None:
        """SIGTERM every server group without waiting (used by signal handlers)."""
        for process in list(self._processes.values()):
            process.signal_now()

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------

    def _start_processes(self) -> None:
        tools = check_prerequisites()
        self._registry.reap_stale()
        self._choose_ports()
        self._run_id = f"{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}-{next(_run_counter)}"
        if self._log_dir is None:
            self._log_dir = DEFAULT_LOG_ROOT.absolute() / self._run_id
            _prune_log_dirs(DEFAULT_LOG_ROOT.absolute(), keep=_KEEP_LOG_DIRS)
        data_dir = self.log_dir / "pubsub-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = child_env()
        atexit.register(self.stop)
        termination.track(self)
        try:
            offsets = {}
            for service in SERVICES:
                log_path = self.log_dir / f"{service.name}.log"
                offsets[service.name] = log_path.stat().st_size if log_path.exists() else 0
                argv = command(
                    service,
                    tools,
                    port=self.port(service.name),
                    project=self.project,
                    data_dir=data_dir,
                )
                process = ManagedProcess(
                    service.name, argv, log_path, env=env, leaves_first=service.wrapped
                )
                process.start()
                self._processes[service.name] = process
                self._record()
            self._wait_ready(offsets)
        except BaseException:
            self.stop()
            raise

    def _choose_ports(self) -> None:
        for service in SERVICES:
            port = self._ports[service.name]
            if port is None:
                self._ports[service.name] = free_port()
            elif not can_bind(port):
                raise PortInUse(
                    f"port {port} for the {service.name} emulator is in use; pass another "
                    f"(--{service.name}-port N, or 0 for any free port) or stop what listens "
                    "there"
                )

    def _record(self) -> None:
        assert self._run_id is not None
        owner = os.getpid()
        self._registry.write(
            RunRecord(
                run_id=self._run_id,
                owner_pid=owner,
                owner_start=start_ticks(owner),
                groups=[
                    GroupRecord(name, process.pid, _service(name).signature, process.leaves_first)
                    for name, process in self._processes.items()
                ],
                info={
                    "project": self.project,
                    "env": self.env,
                    "log_dir": str(self.log_dir),
                    "kind": LOCAL_CLOUD_KIND,
                    "started_by": self.started_by,
                },
            )
        )

    def _wait_ready(self, log_offsets: Mapping[str, int]) -> None:
        """Poll all servers at once until each has logged its ready line (when it has one)
        and answers HTTP; raise EmulatorStartError on an early exit or at the timeout."""
        deadline = time.monotonic() + self.startup_timeout
        pending = list(SERVICES)
        while pending:
            for service in list(pending):
                process = self._processes.get(service.name)
                if process is not None and (code := process.exit_code()) is not None:
                    raise EmulatorStartError(
                        f"the {service.name} emulator exited with code {code} while starting;"
                        f" end of {process.log_path}:\n{process.log_tail()}"
                    )
                logged = (
                    process is None
                    or service.ready_log is None
                    or _log_contains(process.log_path, service.ready_log, log_offsets)
                )
                if logged and service.answers(self.port(service.name), self.project):
                    pending.remove(service)
            if pending and time.monotonic() > deadline:
                raise EmulatorStartError(self._timeout_message(pending))
            if pending:
                time.sleep(0.05)

    def _timeout_message(self, pending: list[Service]) -> str:
        parts = [f"not ready after {self.startup_timeout:.0f} s:"]
        for service in pending:
            port = self.port(service.name)
            state = "listening but not answering" if is_listening(port) else "not listening"
            parts.append(f"- {service.name} on port {port}: {state}")
            if (process := self._processes.get(service.name)) is not None:
                parts.append(f"  end of {process.log_path}:\n{process.log_tail(15)}")
        return "\n".join(parts)

    def _restore_env(self) -> None:
        for name, previous in self._saved_env.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous
        self._saved_env.clear()


def _service(name: str) -> Service:
    return next(s for s in SERVICES if s.name == name)


def _port_of(address: str) -> int:
    return int(address.rstrip("/").rsplit(":", 1)[1])


def _log_contains(path: Path, text: str, offsets: Mapping[str, int]) -> bool:
    # Only the part written by this run counts: a given log_dir may hold earlier runs' logs.
    try:
        with path.open("rb") as log:
            log.seek(offsets.get(path.stem, 0))
            return text.encode() in log.read()
    except OSError:
        return False


def _prune_log_dirs(root: Path, *, keep: int) -> None:
    if not root.is_dir():
        return
    runs = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.name)
    for old in runs[:-keep] if len(runs) > keep else []:
        shutil.rmtree(old, ignore_errors=True)
