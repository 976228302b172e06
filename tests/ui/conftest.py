"""Fixtures of the UI's browser tests: one Chromium, one local stack, UI servers.

The browser is Debian's ``chromium`` (``make chromium`` installs it), driven by
Playwright with ``executable_path``: Playwright's own browser download is never used.
Where it is missing, the browser tests skip and say so.

The stack serves the ``gallery`` pipeline (tests/ui/pipelines.py) in its own Pub/Sub and
Firestore project on the session's emulators (as tests/integration does), so the other
tests' resets never touch its topics or run documents; its bucket is re-created before
each test in case a reset removed it.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable.dev._stack import DevStack
from resumable.serverless._engine import Engine
from resumable.serverless._settings import Settings
from resumable.serverless._topology import DeliveryPolicy

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_PIPELINES = ["tests.ui.pipelines:gallery"]
TRACES_ENV = "RESUMABLE_TRACES"


def chromium_path() -> str | None:
    for candidate in (os.environ.get("RESUMABLE_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session (each test opens its own context)."""
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "Debian's chromium is not installed: `make chromium` installs it (apt-get, as "
            "root), or set RESUMABLE_CHROMIUM to a Chromium binary"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        # launch() gives every browser a fresh temporary profile (its --user-data-dir).
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page; confirmation dialogs are accepted."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())
    try:
        yield tab
    finally:
        context.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """An ASGI app served by uvicorn on a thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="ui-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the UI server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(source: Any) -> Served:
    from resumable.ui._app import create_app
    from resumable.ui._security import Guard

    return Served(create_app(source, guard=Guard(["127.0.0.1", "localhost"])))


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


# -- the local stack -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def ui_stack(local_cloud: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    home = tmp_path_factory.mktemp("ui-stack")
    traces = home / "traces"  # every function process writes its spans here
    traces.mkdir()
    stack = DevStack(
        UI_PIPELINES,
        home=home,
        project="resumable-ui",
        bucket="resumable-ui",
        cloud=local_cloud,
        lease_seconds=5.0,
        watchdog_interval=2.0,
        policy=DeliveryPolicy(
            ack_deadline_seconds=30,
            min_backoff_seconds=1,
            max_backoff_seconds=2,
            max_delivery_attempts=5,
            retry_later_allowance=1,
        ),
        extra_env={TRACES_ENV: f"file:{traces}"},
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


@pytest.fixture(scope="session")
def ui_engine(ui_stack: DevStack) -> Engine:
    """An engine on the stack's services, its clients made while the stack's environment
    is applied (so the session's own emulator settings do not leak in)."""
    saved = dict(os.environ)
    os.environ.update(ui_stack.client_env)
    try:
        engine = Engine.from_settings(Settings.from_env())
        engine.store.exists("warm-up")  # the storage client is made on first use
    finally:
        _restore(saved)
    return engine


@pytest.fixture(scope="session")
def cloud_ui(ui_stack: DevStack, ui_engine: Engine) -> Iterator[Served]:
    """The UI of the local stack, as `resumable ui` serves it."""
    from resumable.ui._cloud import CloudRuns

    served = serve(CloudRuns(ui_engine, logs_dir=ui_stack.home / "logs"))
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def stack(ui_stack: DevStack, ui_engine: Engine) -> DevStack:
    """The session's stack, its bucket present."""
    saved = dict(os.environ)
    os.environ.update(ui_stack.client_env)
    try:
        ui_stack._create_bucket()
    finally:
        _restore(saved)
    return ui_stack


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where a run's gates and failure markers live (the functions see the same disk)."""
    return tmp_path
