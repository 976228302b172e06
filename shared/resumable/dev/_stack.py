"""The local stack: emulators, topics and push subscriptions as production has them, and
one functions-framework process per step, restarted when it dies (as Cloud Run starts a
new instance). ``resumable dev up`` runs it; ``resumable dev down`` stops it.

The stack's state (ports, pids, names) is kept in ``.resumable-dev/state.json`` so that
``dev down`` and the CLI find it; a detached stack is a supervisor process that owns
every child and stops them all on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resumable._defaults import DEFAULT_PREFIX
from resumable._log import logger
from resumable.dev._functions import FunctionProcess, free_port
from resumable.serverless import _naming as naming
from resumable.serverless import entrypoints
from resumable.serverless._topology import DeliveryPolicy, FunctionSpec, Topology, build_topology

DEFAULT_HOME = Path(".resumable-dev")
# The entry points' own file is a functions-framework source: found inside the installed
# package, wherever it is (a checkout, a wheel).
FUNCTIONS_SOURCE = Path(entrypoints.__file__ or "")


def state_path(home: Path | None = None) -> Path:
    return (home or Path(os.environ.get("RESUMABLE_DEV_HOME", DEFAULT_HOME))) / "state.json"


@dataclass
class DevStack:
    """The whole local stack for some pipelines (``MODULE:ATTR`` references)."""

    pipelines: Sequence[str]
    home: Path = DEFAULT_HOME
    project: str = "resumable-local"
    bucket: str = "resumable-local"
    prefix: str = DEFAULT_PREFIX
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy.local)
    lease_seconds: float = 10.0
    watchdog_interval: float = 10.0
    source: Path = FUNCTIONS_SOURCE
    cloud: Any = None  # a running emulators.LocalCloud to reuse (then not stopped by down)
    extra_env: dict[str, str] = field(default_factory=dict)
    topology: Topology | None = None
    functions: dict[str, FunctionProcess] = field(default_factory=dict)
    _owns_cloud: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    # Held while a dead server is restarted and recorded: ``down`` takes it after setting
    # ``_stop``, so that no restart starts a server (or records one) once it stopped them.
    _restarting: threading.Lock = field(default_factory=threading.Lock)

    # -- up -----------------------------------------------------------------------------

    def up(self) -> dict[str, Any]:
        """Start everything; returns the stack's description (what ``--json`` prints)."""
        from emulators.launcher import LocalCloud
        from resumable.definition._loader import load_pipeline

        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        if self.cloud is None:
            self.cloud = LocalCloud(project=self.project, log_dir=self.home / "logs" / "emulators")
            self.cloud.start()
            self._owns_cloud = True
        self.cloud.apply_env()
        os.environ.update(self.client_env)
        try:
            pipelines = [load_pipeline(ref) for ref in self.pipelines]
            self.topology = build_topology(pipelines, self.prefix)
            self._create_bucket()
            self._start_functions()
            self._provision()
            self._supervise()
        except BaseException:
            self.down()
            raise
        info = self.describe()
        state_path(self.home).write_text(
            json.dumps({**info, "supervisor_pid": os.getpid()}, indent=2)
        )
        return info

    @property
    def client_env(self) -> dict[str, str]:
        """What a client (the CLI, a test, a publisher) needs to reach this stack."""
        env = dict(self.cloud.env) if self.cloud else {}
        env.update(
            {
                "GOOGLE_CLOUD_PROJECT": self.project,
                "RESUMABLE_PROJECT": self.project,
                "RESUMABLE_STORAGE": f"gs://{self.bucket}/resumable",
                "RESUMABLE_PIPELINES": ",".join(self.pipelines),
                "RESUMABLE_TOPIC_PREFIX": self.prefix,
            }
        )
        return env

    def _function_env(self, spec: FunctionSpec) -> dict[str, str]:
        paths = [str(Path.cwd()), os.environ.get("PYTHONPATH", "")]
        return {
            **os.environ,
            **self.client_env,
            **spec.env,
            **self.extra_env,
            "RESUMABLE_LEASE_SECONDS": str(self.lease_seconds),
            "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "PYTHONUNBUFFERED": "1",
        }

    def _create_bucket(self) -> None:
        from resumable.storage.gcs import make_storage_client

        client = make_storage_client(self.project)
        with contextlib.suppress(Exception):
            client.create_bucket(self.bucket)
        if not client.bucket(self.bucket).exists():
            raise RuntimeError(f"could not create bucket {self.bucket!r} on fake-gcs-server")

    def _start_functions(self) -> None:
        assert self.topology is not None
        for spec in self.topology.functions:
            process = FunctionProcess(
                spec=spec,
                port=free_port(),
                env=self._function_env(spec),
                log_path=self.home / "logs" / f"{spec.name}.log",
                source=self.source,
            )
            process.start()
            self.functions[spec.name] = process
        self._record_functions()
        for process in self.functions.values():
            process.wait_ready()

    def _record_functions(self) -> None:
        """Register the function servers with the emulators' registry, so that if this
        process is killed outright, the next local-cloud start stops them."""
        from emulators.processes import start_ticks
        from emulators.registry import GroupRecord, Registry, RunRecord

        owner = os.getpid()
        Registry().write(
            RunRecord(
                run_id=self._registry_id,
                owner_pid=owner,
                owner_start=start_ticks(owner),
                groups=[
                    GroupRecord(p.spec.name, p.pid, "functions_framework")
                    for p in self.functions.values()
                    if p.pid is not None
                ],
                info={"kind": "resumable-dev-functions", "home": str(self.home)},
            )
        )

    @property
    def _registry_id(self) -> str:
        return f"dev-functions-{os.getpid()}-{id(self)}"

    def _provision(self) -> None:
        """Topics, then push subscriptions with retry and dead-letter policies."""
        from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]
        from google.protobuf import duration_pb2

        assert self.topology is not None
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        for topic in self.topology.topics:
            with contextlib.suppress(Exception):
                publisher.create_topic(name=naming.topic_path(self.project, topic))
        dead_letter = naming.topic_path(self.project, self.topology.dead_letter_topic)
        for spec in self.topology.functions:
            process = self.functions[spec.name]
            request: dict[str, Any] = {
                "name": naming.subscription_path(self.project, spec.subscription),
                "topic": naming.topic_path(self.project, spec.topic),
                # The path makes functions-framework's CloudEvent source name the topic.
                "push_config": {
                    "push_endpoint": f"{process.url}/projects/{self.project}/topics/{spec.topic}"
                },
                "ack_deadline_seconds": self.policy.ack_deadline_seconds,
                "retry_policy": {
                    "minimum_backoff": duration_pb2.Duration(
                        seconds=int(self.policy.min_backoff_seconds)
                    ),
                    "maximum_backoff": duration_pb2.Duration(
                        seconds=int(self.policy.max_backoff_seconds)
                    ),
                },
            }
            if spec.dead_letter:
                request["dead_letter_policy"] = {
                    "dead_letter_topic": dead_letter,
                    "max_delivery_attempts": self.policy.delivery_attempts(spec),
                }
            with contextlib.suppress(Exception):
                subscriber.delete_subscription(subscription=request["name"])
            subscriber.create_subscription(request=request)

    def _supervise(self) -> None:
        def restart_dead() -> None:
            while not self._stop.wait(0.2):
                for process in self.functions.values():
                    try:
                        with self._restarting:
                            if self._stop.is_set():
                                return
                            restarted = process.ensure_running()
                            if restarted:
                                self._record_functions()
                        if restarted:
                            process.wait_ready()
                    except Exception:
                        logger.exception(f"restarting {process.spec.name} failed")

        def tick_watchdog() -> None:
            from resumable.serverless._publisher import PubSubPublisher

            assert self.topology is not None
            publisher = PubSubPublisher(self.project)
            while not self._stop.wait(self.watchdog_interval):
                with contextlib.suppress(Exception):
                    publisher.publish(self.topology.watchdog_topic, b"{}")

        for target in (restart_dead, tick_watchdog):
            thread = threading.Thread(target=target, daemon=True, name=target.__name__)
            thread.start()
            self._threads.append(thread)

    # -- describe and down ----------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        assert self.topology is not None
        step_topics: dict[str, str] = {}
        pipelines: dict[str, dict[str, str]] = {}
        functions: dict[str, dict[str, Any]] = {}
        for spec in self.topology.functions:
            process = self.functions[spec.name]
            entry = {
                "url": process.url,
                "pid": process.pid,
                "name": spec.name,
                "target": spec.target,
            }
            if spec.target == "run_step" and spec.pipeline and spec.step:
                path = naming.topic_path(self.project, spec.topic)
                pipelines.setdefault(spec.pipeline, {})[spec.step] = path
                key = spec.step if spec.step not in step_topics else f"{spec.pipeline}.{spec.step}"
                step_topics[key] = path
                functions[key] = entry
            else:
                functions[spec.target] = entry
        return {
            "project": self.project,
            "bucket": self.bucket,
            "storage": f"gs://{self.bucket}/resumable",
            "start_topic": naming.topic_path(self.project, self.topology.start_topic),
            "dead_letter_topic": naming.topic_path(self.project, self.topology.dead_letter_topic),
            "step_topics": step_topics,
            "pipelines": pipelines,
            "functions": functions,
            "env": self.client_env,
            "logs": str(self.home / "logs"),
            # Process groups of the emulators this stack started (none when it reuses a
            # running cloud): what `dev down` must leave nothing of.
            "emulators": dict(self.cloud.process_groups) if self._owns_cloud else {},
        }

    def step_process(self, pipeline: str, step: str) -> FunctionProcess:
        """The function process serving ``step`` of ``pipeline``."""
        assert self.topology is not None
        return self.functions[self.topology.step_functions(pipeline)[step].name]

    def serve_forever(self) -> None:
        """Block until SIGTERM or SIGINT, then stop everything."""
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.down()

    def down(self) -> None:
        self._stop.set()
        with self._restarting:
            pass  # a restart under way has recorded its server: it is stopped below
        for thread in self._threads:
            thread.join(timeout=5)
        # In parallel: each server takes about half a second to wind down.
        stoppers = [threading.Thread(target=p.stop) for p in self.functions.values()]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        if self.functions:
            from emulators.registry import Registry

            Registry().remove(self._registry_id)
        if self.cloud is not None and self._owns_cloud:
            self.cloud.stop()
        with contextlib.suppress(FileNotFoundError):
            state_path(self.home).unlink()


def read_state(home: Path | None = None) -> dict[str, Any] | None:
    path = state_path(home)
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def down_detached(home: Path | None = None, timeout: float = 60.0) -> bool:
    """Stop a detached stack; returns whether one was running."""
    state = read_state(home)
    if state is None:
        return False
    pid = int(state.get("supervisor_pid", 0))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process_alive(pid):
        time.sleep(0.1)
    if process_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Whatever the supervisor could not stop: its function servers and emulators, by
    # process group.
    groups = [entry.get("pid") for entry in state.get("functions", {}).values()]
    groups += list(state.get("emulators", {}).values())
    for group in groups:
        with contextlib.suppress(ProcessLookupError, TypeError, ValueError):
            if int(group) > 1:  # never 0: that would be our own process group
                os.killpg(int(group), signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        state_path(home).unlink()
    return True


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs (a zombie child of ours counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m resumable.dev._stack serve --pipeline REF... --home DIR``: the supervisor
    of a detached stack (``resumable dev up --detach`` starts it)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m resumable.dev._stack")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--pipeline", action="append", default=[])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--lease-seconds", type=float, default=10.0)
    parser.add_argument("--watchdog-interval", type=float, default=10.0)
    args = parser.parse_args(argv)
    stack = DevStack(
        args.pipeline,
        home=args.home,
        lease_seconds=args.lease_seconds,
        watchdog_interval=args.watchdog_interval,
    )
    stack.up()
    stack.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
