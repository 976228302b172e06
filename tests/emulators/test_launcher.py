"""The launcher: fast failure on missing software, clean stops, no leftovers, resets.

Tests without the `emulators` marker start nothing and run in `make unit` too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import yaml
from probe_support import ProbeFacts, wait_until

from emulators import LocalCloud, MissingPrerequisite, PortInUse, check_prerequisites
from emulators.cycles import run_cycle
from emulators.defaults import (
    DEFAULT_FIRESTORE_PORT,
    DEFAULT_PROJECT,
    DEFAULT_PUBSUB_PORT,
    DEFAULT_STORAGE_PORT,
)
from emulators.ports import can_bind, is_listening
from emulators.processes import group_members

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", "emulators", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_nothing_left(pgids: Iterable[int], ports: Iterable[int]) -> None:
    pgids, ports = list(pgids), list(ports)
    assert wait_until(lambda: not any(group_members(g) for g in pgids), timeout=10), [
        (g, [m.cmdline[:80] for m in group_members(g)]) for g in pgids
    ]
    assert not any(is_listening(p) for p in ports), ports
    assert all(can_bind(p) for p in ports), ports


def _ports(env: dict[str, str]) -> list[int]:
    hosts = [v for k, v in env.items() if k.endswith("_HOST")]
    return [int(h.rsplit(":", 1)[1]) for h in hosts]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A registry of its own, so these runs never touch the session's."""
    return tmp_path / "state"


@pytest.fixture
def cli_env(state_dir: Path) -> dict[str, str]:
    return {**os.environ, "RESUMABLE_EMULATORS_STATE": str(state_dir)}


# -- without emulators ---------------------------------------------------------------------


def _fake_tool(tmp_path: Path, tool: str) -> Path:
    """A stand-in for `gcloud` (in an SDK folder with the emulator components) or `java`
    (Java 17), so that these tests need neither installed."""
    if tool == "java":
        java = tmp_path / "jdk" / "bin" / "java"
        java.parent.mkdir(parents=True, exist_ok=True)
        java.write_text("#!/bin/sh\necho 'openjdk version \"17.0.15\" 2025-04-15' >&2\n")
        java.chmod(0o755)
        return java
    sdk = tmp_path / "google-cloud-sdk"
    (sdk / "bin").mkdir(parents=True, exist_ok=True)
    (sdk / "lib" / "surface" / "beta").mkdir(parents=True, exist_ok=True)
    (sdk / "platform" / "pubsub-emulator" / "lib").mkdir(parents=True, exist_ok=True)
    (sdk / "platform" / "pubsub-emulator" / "lib" / "cloud-pubsub-emulator-0.8.20.jar").touch()
    (sdk / "platform" / "cloud-firestore-emulator").mkdir(parents=True, exist_ok=True)
    (sdk / "platform" / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar").touch()
    gcloud = sdk / "bin" / "gcloud"
    gcloud.write_text("#!/bin/sh\nexit 1\n")
    gcloud.chmod(0o755)
    return gcloud


def _without(tools: Iterable[str], tmp_path: Path) -> str:
    """A PATH holding only links to stand-ins for the given tools (and nothing else)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for tool in tools:
        (folder / tool).symlink_to(_fake_tool(tmp_path, tool))
    return str(folder)


def test_start_without_gcloud_or_java_fails_at_once_naming_what_to_install(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "PATH": _without([], tmp_path)}
    env.pop("JAVA_HOME", None)
    done = subprocess.run(
        [PYTHON, "-m", "emulators", "start"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # far below the launcher's start timeout: it did not try to start
    )
    assert done.returncode == 2
    assert "gcloud (the Google Cloud CLI) is not on PATH" in done.stderr
    assert "https://cloud.google.com/sdk/docs/install" in done.stderr
    assert "Java is not on PATH" in done.stderr
    assert "openjdk-17-jre-headless" in done.stderr


def test_start_without_java_names_only_java(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "PATH": _without(["gcloud"], tmp_path)}
    done = subprocess.run(
        [PYTHON, "-m", "emulators", "start"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "Java is not on PATH" in done.stderr
    assert "gcloud (the Google Cloud CLI) is not on PATH" not in done.stderr
    assert "component" not in done.stderr


def test_missing_emulator_components_are_named_with_install_commands(tmp_path: Path) -> None:
    sdk = tmp_path / "bare-sdk"  # gcloud without its emulator components
    (sdk / "bin").mkdir(parents=True)
    (sdk / "bin" / "gcloud").write_text("#!/bin/sh\n")
    (sdk / "bin" / "gcloud").chmod(0o755)
    java_dir = Path(_without(["java"], tmp_path))
    with pytest.raises(MissingPrerequisite) as caught:
        check_prerequisites({"PATH": f"{sdk / 'bin'}:{java_dir}"})
    message = str(caught.value)
    assert "gcloud components install pubsub-emulator" in message
    assert "gcloud components install cloud-firestore-emulator" in message
    assert "apt-get install google-cloud-cli-pubsub-emulator" in message
    assert "Java" not in message


def test_export_lines_name_hosts_and_project() -> None:
    cloud = LocalCloud(project="p-1", pubsub_port=1001, firestore_port=1002, storage_port=1003)
    assert cloud.export_lines() == [
        "export PUBSUB_EMULATOR_HOST=127.0.0.1:1001",
        "export FIRESTORE_EMULATOR_HOST=127.0.0.1:1002",
        "export STORAGE_EMULATOR_HOST=http://127.0.0.1:1003",
        "export GOOGLE_CLOUD_PROJECT=p-1",
        "export GCLOUD_PROJECT=p-1",
        "export CLOUDSDK_CORE_PROJECT=p-1",
    ]


def test_docker_compose_uses_the_launcher_ports_project_and_variables() -> None:
    compose = yaml.safe_load((REPO / "emulators" / "docker-compose.yml").read_text())
    defaults = LocalCloud(
        DEFAULT_PROJECT, DEFAULT_PUBSUB_PORT, DEFAULT_FIRESTORE_PORT, DEFAULT_STORAGE_PORT
    )
    assert compose["x-local-cloud-env"] == defaults.env
    services = compose["services"]
    expected_ports = {
        "pubsub": DEFAULT_PUBSUB_PORT,
        "firestore": DEFAULT_FIRESTORE_PORT,
        "storage": DEFAULT_STORAGE_PORT,
    }
    assert set(services) == set(expected_ports)
    for name, port in expected_ports.items():
        assert services[name]["ports"] == [f"127.0.0.1:{port}:{port}"]
        command = " ".join(services[name]["command"])
        assert f"0.0.0.0:{port}" in command or f"-port {port}" in command
    assert f"--project={DEFAULT_PROJECT}" in services["pubsub"]["command"]
    cli_env = subprocess.run(
        [PYTHON, "-m", "emulators", "env", "--defaults"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert cli_env == defaults.export_lines()


def test_sessions_not_asking_for_the_fixtures_start_nothing(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Without gcloud and Java on PATH, a session that never requests `local_cloud` passes,
    and one test that requests it errors with the install hint."""
    (tmp_path / "test_sample.py").write_text(
        "def test_plain():\n    assert True\n\ndef test_cloud(local_cloud):\n    pass\n"
    )
    env = {**cli_env, "PATH": _without([], tmp_path)}
    run = [PYTHON, "-m", "pytest", "-p", "emulators.pytest_plugin", "-q", "-p", "no:cacheprovider"]
    plain = subprocess.run(
        [*run, "test_sample.py::test_plain"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode == 0, plain.stdout
    unit = subprocess.run(
        [*run, "-m", "not emulators", "test_sample.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unit.returncode == 0, unit.stdout  # test_cloud was marked and deselected
    assert "1 deselected" in unit.stdout
    cloud = subprocess.run(
        [*run, "test_sample.py::test_cloud"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cloud.returncode == 1
    assert "MissingPrerequisite" in cloud.stdout
    assert "apt-get install google-cloud-cli" in cloud.stdout


# -- with emulators ------------------------------------------------------------------------


@pytest.mark.emulators
def test_start_stop_cycles_leave_no_process_or_port(
    tmp_path: Path, state_dir: Path, probe_facts: ProbeFacts
) -> None:
    """The cheap version of `python -m emulators cycles -n 20`."""
    cycles = [run_cycle(tmp_path / str(i), state_dir) for i in range(2)]
    probe_facts.record(
        "launcher start/stop cycles [start s, stop s]", [[c.start_s, c.stop_s] for c in cycles]
    )
    for cycle in cycles:
        assert cycle.java_processes == 2
        assert len(cycle.ports) == 4  # the three servers and Firestore's WebSocket port
        assert cycle.clean, (cycle.leaked_processes, cycle.bound_ports)


@pytest.mark.emulators
def test_killed_owner_leaves_nothing_after_the_next_start(
    tmp_path: Path, state_dir: Path, cli_env: dict[str, str]
) -> None:
    owner = _cli("start", "--free-ports", "--json", f"--log-dir={tmp_path / 'a'}", env=cli_env)
    assert owner.stdout is not None
    described = json.loads(owner.stdout.readline())
    pgids, ports = list(described["process_groups"].values()), _ports(described["env"])
    owner.kill()  # SIGKILL: no cleanup runs
    owner.wait(timeout=10)
    time.sleep(0.5)
    assert all(group_members(g) for g in pgids)  # the servers outlived their owner

    with LocalCloud(log_dir=tmp_path / "b", state_dir=state_dir) as cloud:
        _assert_nothing_left(pgids, ports)
        assert cloud.running
        now_running = list(cloud.process_groups.values()), _ports(cloud.env)
    _assert_nothing_left(*now_running)


@pytest.mark.emulators
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_stops_everything_on_ctrl_c_and_sigterm(
    sig: signal.Signals, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    cli = _cli("start", "--free-ports", "--json", f"--log-dir={tmp_path}", env=cli_env)
    assert cli.stdout is not None
    described = json.loads(cli.stdout.readline())
    for name in ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"):
        assert name in described["env"]
    assert {p.name for p in tmp_path.iterdir()} >= {"pubsub.log", "firestore.log", "storage.log"}
    cli.send_signal(sig)
    assert cli.wait(timeout=20) == 0
    assert "local cloud stopped" in (cli.stderr.read() if cli.stderr else "")
    _assert_nothing_left(described["process_groups"].values(), _ports(described["env"]))


@pytest.mark.emulators
def test_given_port_in_use_fails_fast_naming_the_port(tmp_path: Path, state_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cloud = LocalCloud(pubsub_port=port, log_dir=tmp_path, state_dir=state_dir)
        with pytest.raises(PortInUse, match=f"port {port} for the pubsub emulator"):
            cloud.start()
        assert not cloud.running and not cloud.process_groups  # refused before starting any


@pytest.mark.emulators
def test_reset_empties_topics_subscriptions_documents_and_buckets(
    local_cloud: LocalCloud, gcs_bucket: str
) -> None:
    from google.cloud import firestore, pubsub_v1, storage

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    project = f"projects/{local_cloud.project}"
    topic = publisher.create_topic(name=f"{project}/topics/reset-me").name
    subscriber.create_subscription(name=f"{project}/subscriptions/reset-me", topic=topic)
    db = firestore.Client(project=local_cloud.project)
    db.collection("runs").document("r").set({"a": 1})
    db.collection("runs").document("r").collection("steps").document("s").set({"b": 2})
    gcs = storage.Client()
    gcs.bucket(gcs_bucket).blob("x/y").upload_from_string(b"data")

    local_cloud.reset()

    assert list(publisher.list_topics(project=project)) == []
    assert list(subscriber.list_subscriptions(project=project)) == []
    assert list(db.collection("runs").list_documents()) == []
    assert not db.collection("runs").document("r").collection("steps").document("s").get().exists
    assert list(gcs.list_buckets()) == []
    subscriber.close()


@pytest.mark.emulators
def test_gcs_bucket_fixture_gives_a_bucket_with_generation_preconditions(
    gcs_bucket: str, local_cloud: LocalCloud
) -> None:
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud import storage

    assert os.environ["STORAGE_EMULATOR_HOST"] == local_cloud.storage_url
    blob = storage.Client().bucket(gcs_bucket).blob("runs/r/.checkpoint.json")
    blob.upload_from_string(b"{}", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        blob.upload_from_string(b"{}", if_generation_match=0)
    assert blob.download_as_bytes() == b"{}"


@pytest.mark.emulators
def test_external_mode_uses_running_servers_without_owning_them(local_cloud: LocalCloud) -> None:
    external = LocalCloud.external(local_cloud.env)
    assert (external.pubsub_host, external.firestore_host, external.storage_url) == (
        local_cloud.pubsub_host,
        local_cloud.firestore_host,
        local_cloud.storage_url,
    )
    with external:
        external.reset()
        assert external.process_groups == {}
    assert all(group_members(g) for g in local_cloud.process_groups.values())


@pytest.fixture(autouse=True)
def _no_leftover_runs(state_dir: Path) -> Iterator[None]:
    yield
    runs = state_dir / "runs"
    assert not runs.exists() or not list(runs.iterdir()), "a run was left in the registry"
