"""pytest fixtures for the local cloud. Enable with `pytest_plugins = ["emulators.pytest_plugin"]`.

- `local_cloud` (session): starts the three servers the first time a test asks for it, sets
  the emulator variables in os.environ, stops everything at session end — also after
  failures, Ctrl-C or SIGTERM. Sessions whose tests never ask for it start nothing.
- `clean_cloud` (function): the same LocalCloud, reset (empty) before the test.
- `gcs_bucket` (function): the name of a new, uniquely named bucket on the clean cloud.

Tests that use these fixtures get the `emulators` marker automatically, so
`pytest -m "not emulators"` skips them. `--local-cloud=external` (or
RESUMABLE_LOCAL_CLOUD=external) uses servers that are already running, e.g. from
`docker compose -f emulators/docker-compose.yml up`, found through the usual variables.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from emulators.launcher import LocalCloud

_FIXTURES = frozenset({"local_cloud", "clean_cloud", "gcs_bucket"})
_started: list[tuple[LocalCloud, float]] = []  # and its startup time (s)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("local cloud").addoption(
        "--local-cloud",
        choices=("start", "external"),
        default=os.environ.get("RESUMABLE_LOCAL_CLOUD", "start"),
        help="start: launch the emulators for this session (default); external: use running "
        "ones named by PUBSUB_EMULATOR_HOST, FIRESTORE_EMULATOR_HOST, STORAGE_EMULATOR_HOST",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "emulators: needs the local cloud (Pub/Sub, Firestore, Cloud Storage)"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Before `-m` deselects anything, so the marker added here counts.
    for item in items:
        if _FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.emulators)


@pytest.fixture(scope="session")
def local_cloud(request: pytest.FixtureRequest) -> Iterator[LocalCloud]:
    """The session's LocalCloud, started and applied to os.environ."""
    if request.config.getoption("--local-cloud") == "external":
        cloud = LocalCloud.external()
    else:
        cloud = LocalCloud(started_by="pytest")
    started = time.monotonic()
    cloud.start()
    _started.append((cloud, time.monotonic() - started))
    try:
        cloud.apply_env()
        yield cloud
    finally:
        cloud.stop()


@pytest.fixture
def clean_cloud(local_cloud: LocalCloud) -> LocalCloud:
    """The session's LocalCloud after `reset()`: no documents, topics, subscriptions, buckets."""
    local_cloud.reset()
    return local_cloud


@pytest.fixture
def gcs_bucket(clean_cloud: LocalCloud) -> str:
    """A new bucket on fake-gcs-server (created through google-cloud-storage); its name.

    The next reset removes it with its objects.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[attr-defined,unused-ignore]

    name = f"test-{uuid.uuid4().hex[:16]}"
    client = storage.Client(
        project=clean_cloud.project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": clean_cloud.storage_url},
    )
    try:
        client.create_bucket(name)
    finally:
        client.close()
    return name


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for cloud, seconds in _started:
        where = "external" if cloud.is_external else f"logs in {cloud.log_dir}"
        terminalreporter.write_line(f"local cloud: ready in {seconds:.1f} s, {where}")
