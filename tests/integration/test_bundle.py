"""The function bundle stands alone: installed into a fresh virtual environment from its
own requirements.txt (not this checkout), it serves every entry point with
``functions-framework --target ...``, and — wired to the emulators the way production
wires Cloud Run functions, one push subscription per function from the topology — it
runs a pipeline started by a message published to the start topic."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from emulators.launcher import LocalCloud
from resumable.definition._loader import load_pipeline
from resumable.deploy import build_bundle
from resumable.serverless._control import get_run
from resumable.serverless._engine import Engine
from resumable.serverless._run_state import RunState
from resumable.serverless._settings import Settings
from resumable.serverless._topology import DeliveryPolicy, FunctionSpec, build_topology
from resumable.storage.gcs import make_storage_client

pytestmark = [pytest.mark.emulators, pytest.mark.slow]

PIPELINE = "examples.quickstart:QuickstartPipeline"
PROJECT = "resumable-bundle"
TARGETS = {"start_run", "run_step", "dead_letter", "watchdog"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str, timeout: float = 0.5) -> bool:
    """Whether ``url`` gives an HTTP answer within ``timeout`` seconds."""
    try:
        urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError:
        return True  # any HTTP answer: the server is up
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bundle") / "functions"
    build_bundle(folder, [PIPELINE], extras=["numpy"])
    return folder


@pytest.fixture(scope="module")
def venv(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the bundle's requirements, and nothing else."""
    folder = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(folder / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    install = subprocess.run(
        [*pip, "--no-compile", "-r", str(bundle / "requirements.txt")],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert install.returncode == 0, f"pip install -r requirements.txt failed:\n{install.stderr}"
    found = subprocess.run(
        [str(folder / "bin" / "python"), "-c", "import resumable"],
        capture_output=True,
        check=False,
    )
    assert found.returncode != 0, "the fresh environment must not see this checkout's library"
    return folder


class Function:
    """One bundled function served by the fresh environment's functions-framework."""

    def __init__(self, spec: FunctionSpec, venv: Path, bundle: Path, env: dict[str, str]) -> None:
        self.spec = spec
        self.port = free_port()
        self.log = bundle.parent / f"{spec.name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(venv / "bin" / "functions-framework"),
                    f"--target={spec.target}",
                    f"--source={bundle / 'main.py'}",
                    "--signature-type=cloudevent",
                    "--host=127.0.0.1",
                    f"--port={self.port}",
                ],
                cwd=bundle,  # as on Cloud Run functions: the source folder
                env={**env, **spec.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.spec.name} is not serving:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def deployment(
    local_cloud: LocalCloud, venv: Path, bundle: Path
) -> Iterator[tuple[Settings, list[Function]]]:
    """The bundle deployed on the emulators: a function per topology entry, each behind a
    push subscription with the delivery policy and dead-lettering production has."""
    prefix = f"bundle{uuid.uuid4().hex[:6]}"
    bucket = f"bundle-{uuid.uuid4().hex[:10]}"
    make_storage_client(PROJECT).create_bucket(bucket)
    settings = Settings(
        project=PROJECT,
        storage=f"gs://{bucket}",
        pipelines=(PIPELINE,),
        topic_prefix=prefix,
    )
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONUNBUFFERED": "1",
        **local_cloud.env,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        **settings.to_env(),
    }
    topology = build_topology([load_pipeline(PIPELINE)], prefix)
    functions = [Function(spec, venv, bundle, env) for spec in topology.functions]
    try:
        for function in functions:
            function.wait_ready()
        _subscribe(topology.topics, topology.dead_letter_topic, functions)
        yield settings, functions
    finally:
        for function in functions:
            function.stop()


def _subscribe(topics: list[str], dead_letter: str, functions: list[Function]) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    for topic in topics:
        publisher.create_topic(name=publisher.topic_path(PROJECT, topic))
    policy = DeliveryPolicy.local()
    for function in functions:
        spec = function.spec
        request = {
            "name": subscriber.subscription_path(PROJECT, spec.subscription),
            "topic": publisher.topic_path(PROJECT, spec.topic),
            "push_config": {
                "push_endpoint": f"{function.url}/projects/{PROJECT}/topics/{spec.topic}"
            },
            "ack_deadline_seconds": policy.ack_deadline_seconds,
            "retry_policy": {"minimum_backoff": {"seconds": 1}, "maximum_backoff": {"seconds": 5}},
        }
        if spec.dead_letter:
            request["dead_letter_policy"] = {
                "dead_letter_topic": publisher.topic_path(PROJECT, dead_letter),
                "max_delivery_attempts": policy.delivery_attempts(spec),
            }
        subscriber.create_subscription(request=request)


def test_bundle_serves_every_entry_point_and_runs_a_published_start(
    deployment: tuple[Settings, list[Function]],
) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

    settings, functions = deployment
    assert {f.spec.target for f in functions} == TARGETS
    # Still serving: a generous wait per function (a loaded machine may take seconds to
    # answer while a function warms its engine up after the fork).
    assert all(answers(f.url, timeout=60) for f in functions)

    run_id = f"bundle-{uuid.uuid4().hex[:8]}"
    publisher = pubsub_v1.PublisherClient()
    start = publisher.topic_path(PROJECT, f"{settings.topic_prefix}-start")
    body = {"pipeline": "quickstart", "params": {"frames": 6, "size": 24}, "run_id": run_id}
    publisher.publish(start, orjson.dumps(body)).result(timeout=30)

    engine = Engine.from_settings(settings)
    state: RunState | None = None
    deadline = time.monotonic() + 300  # generous: the run ends much sooner on a quiet machine
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            state = get_run(engine, run_id, pipeline="quickstart")
        if state is not None and state.finished:
            break
        time.sleep(0.2)
    logs = "\n".join(f"== {f.spec.name}\n{f.log.read_text()[-2000:]}" for f in functions)
    assert state is not None and state.status == "completed", f"run: {state}\n{logs}"
    assert {name: step.commits for name, step in state.steps.items()} == dict.fromkeys(
        state.steps, 1
    )
