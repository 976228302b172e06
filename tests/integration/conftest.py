"""One local stack (emulators + a function process per step) for the serverless tests.

It runs in its own Pub/Sub and Firestore project on the session's emulators, so resets
by other tests' ``clean_cloud`` never touch its topics or run documents; its bucket is
re-created before each test in case a reset removed it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from resumable.dev._stack import DevStack
from resumable.serverless._engine import Engine
from resumable.serverless._settings import Settings
from resumable.serverless._topology import DeliveryPolicy

SUPPORT = Path(__file__).parent.parent / "support"
PIPELINES = [
    "tests.support.serverless_pipelines:faulty",
    "tests.support.serverless_pipelines:diamond",
    "tests.support.serverless_pipelines:exhaust",
    "tests.support.serverless_pipelines:mapped",
    "tests.support.serverless_pipelines:mapkill",
    "examples.dataprep.pipeline:build",
]


@pytest.fixture(scope="session")
def dev_stack(local_cloud: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    home = tmp_path_factory.mktemp("dev-stack")
    faults = home / "faults"
    faults.mkdir()
    stack = DevStack(
        PIPELINES,
        home=home,
        project="resumable-stack",
        bucket="resumable-stack",
        cloud=local_cloud,
        source=SUPPORT / "faulty_functions.py",
        lease_seconds=3.0,
        watchdog_interval=2.0,
        policy=DeliveryPolicy(
            ack_deadline_seconds=30,
            min_backoff_seconds=1,
            max_backoff_seconds=2,
            max_delivery_attempts=5,
            retry_later_allowance=1,
        ),
        extra_env={
            "RESUMABLE_TEST_FAULT_DIR": str(faults),
            "RESUMABLE_WATCHDOG_GRACE_SECONDS": "6",
        },
    )
    saved = dict(os.environ)
    try:
        stack.up()
    finally:
        _restore(saved)  # other tests keep the session cloud's own project
    try:
        yield stack
    finally:
        stack.down()


def _restore(saved: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def stack(dev_stack: DevStack) -> Iterator[DevStack]:
    """The session's stack with its bucket present and its environment applied."""
    saved = dict(os.environ)
    os.environ.update(dev_stack.client_env)
    dev_stack._create_bucket()
    try:
        yield dev_stack
    finally:
        _restore(saved)


@pytest.fixture
def engine(stack: DevStack) -> Engine:
    """An engine talking to the stack's services (to inspect and control runs)."""
    return Engine.from_settings(Settings.from_env())


@pytest.fixture
def fault_dir(stack: DevStack) -> Path:
    return Path(stack.extra_env["RESUMABLE_TEST_FAULT_DIR"])
