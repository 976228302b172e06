"""``resumable ui``: where it listens, what it refuses, and that the installed command
serves its pages and assets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from resumable.cli._app import app
from resumable.cli._ui import is_loopback
from resumable.ui._graph import layers, render_svg
from resumable.ui._models import StepView
from resumable.ui._security import Guard, RequestRefused, host_name
from tests.ui.conftest import free_port
from tests.ui.pipelines import build


def test_a_non_loopback_host_needs_allow_remote() -> None:
    result = CliRunner().invoke(app, ["ui", "--host", "0.0.0.0", "--storage", "/nonexistent"])
    assert result.exit_code == 2
    assert "no authentication" in result.output and "--allow-remote" in result.output


def test_without_a_deployment_it_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("RESUMABLE_PROJECT", "RESUMABLE_STORAGE", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RESUMABLE_DEV_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["ui"])
    assert result.exit_code == 2 and "missing setting" in result.output


def test_loopback_names() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "example.com", "::"))


def test_the_command_serves_pages_and_packaged_assets_on_loopback(tmp_path: Path) -> None:
    build(storage=str(tmp_path), run_id="cli-1").run({"workdir": str(tmp_path)})
    port = free_port()
    command = [sys.executable, "-m", "resumable.cli", "ui", "--port", str(port)]
    command += ["--storage", str(tmp_path)]
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                page = urllib.request.urlopen(base + "/", timeout=30).read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        assert 'data-run="cli-1"' in page
        for asset in ("/static/ui.css", "/static/ui.js", "/static/favicon.svg"):
            assert urllib.request.urlopen(base + asset, timeout=30).status == 200
        request = urllib.request.Request(base + "/", headers={"Host": "rebind.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 421
    finally:
        # Ctrl-C, as a user stops it (and uvicorn, after its shutdown, re-raises a SIGTERM
        # with its default action: the process would end before coverage saves its data)
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=20)[0].decode()
    assert f"resumable ui on http://127.0.0.1:{port}/" in output
    assert server.returncode == 0, output  # "0 stopped with Ctrl-C"


def test_the_guard_accepts_only_same_origin_posts_with_a_signed_token() -> None:
    guard = Guard(["127.0.0.1"])
    token = guard.new_token()
    good = {
        "host": "127.0.0.1:8787",
        "origin": "http://127.0.0.1:8787",
        "referer": None,
        "fetch_site": "same-origin",
        "cookie": token,
        "token": token,
    }
    guard.check_post(**good)
    for change in (
        {"origin": "http://127.0.0.1:9999"},
        {"origin": None, "referer": "http://other:8787/x"},
        {"fetch_site": "same-site"},
        {"token": guard.new_token()},
        {"cookie": None},
        {"host": "evil.example:8787", "origin": "http://evil.example:8787"},
    ):
        with pytest.raises(RequestRefused):
            guard.check_post(**{**good, **change})
    assert host_name("[::1]:8787") == "[::1]" and host_name("Localhost:1") == "localhost"


def test_the_graph_lays_steps_out_in_layers_of_their_dependencies() -> None:
    steps = [
        StepView("a", "completed", []),
        StepView("b", "completed", ["a"]),
        StepView("c", "running", ["a"]),
        StepView("d", "not_started", ["b", "c"]),
        StepView("e", "not_started", []),
    ]
    assert layers(steps) == [["a", "e"], ["b", "c"], ["d"]]
    svg = render_svg(steps)
    assert svg.count('class="edge') == 4 and 'class="node status-running" data-step="c"' in svg
    assert "data-from" not in render_svg(steps, edges=False)


class _Served:
    """What ``uvicorn.run`` was asked to serve (the command's last call)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def __call__(self, app: Any, **options: Any) -> None:
        self.calls.append((app, options))


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> _Served:
    import uvicorn

    fake = _Served()
    monkeypatch.setattr(uvicorn, "run", fake)
    return fake


@pytest.fixture
def runs_folder(tmp_path: Path) -> Path:
    build(storage=str(tmp_path / "runs"), run_id="cli-2").run({"workdir": str(tmp_path)})
    return tmp_path / "runs"


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, ["ui", *args])


def test_allow_remote_serves_beyond_loopback_with_a_warning(
    served: _Served, runs_folder: Path
) -> None:
    result = _invoke(["--host", "0.0.0.0", "--allow-remote", "--storage", str(runs_folder)])
    assert result.exit_code == 0, result.output
    assert "NO authentication" in result.output
    assert "resumable ui on http://0.0.0.0:8787/" in result.output
    ((web, options),) = served.calls
    assert options["host"] == "0.0.0.0" and options["port"] == 8787
    # behind a proxy the Host is the service's own name: any Host is answered
    client = TestClient(web, base_url="http://ui.example")
    assert 'data-run="cli-2"' in client.get("/").text


def test_allow_host_names_the_only_hosts_a_remote_ui_answers(
    served: _Served, runs_folder: Path
) -> None:
    args = ["--host", "10.1.2.3", "--allow-remote", "--allow-host", "ui.example"]
    result = _invoke([*args, "--storage", str(runs_folder), "--port", "9000"])
    assert result.exit_code == 0, result.output
    ((web, _),) = served.calls
    assert TestClient(web, base_url="http://ui.example").get("/").status_code == 200
    assert TestClient(web, base_url="http://evil.example").get("/").status_code == 421


def test_an_ipv6_loopback_url_is_bracketed(served: _Served, runs_folder: Path) -> None:
    result = _invoke(["--host", "::1", "--port", "9001", "--storage", str(runs_folder)])
    assert result.exit_code == 0, result.output
    assert "resumable ui on http://[::1]:9001/" in result.output
    ((web, options),) = served.calls
    assert options["host"] == "::1"
    assert TestClient(web, base_url="http://[::1]:9001").get("/").status_code == 200


def test_open_opens_the_runs_page_in_a_browser(
    served: _Served, runs_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from resumable.cli import _ui

    opened: list[str] = []
    done = threading.Event()

    def fake_open(url: str) -> None:
        opened.append(url)
        done.set()

    monkeypatch.setattr(_ui.webbrowser, "open", fake_open)
    result = _invoke(["--open", "--port", "9002", "--storage", str(runs_folder)])
    assert result.exit_code == 0, result.output
    assert done.wait(timeout=30)
    assert opened == ["http://127.0.0.1:9002/"]


def test_pipeline_without_storage_is_a_usage_error(served: _Served) -> None:
    result = _invoke(["--pipeline", "tests.ui.pipelines:gallery"])
    assert result.exit_code == 2
    assert "--pipeline goes with --storage" in result.output
    assert served.calls == []


def test_a_pipeline_that_does_not_load_is_a_usage_error(served: _Served, runs_folder: Path) -> None:
    result = _invoke(["--storage", str(runs_folder), "--pipeline", "tests.ui.pipelines:absent"])
    assert result.exit_code == 2
    assert "error:" in result.output and "absent" in result.output
    assert served.calls == []


def test_without_the_ui_extra_it_says_which_package_is_missing(
    served: _Served, monkeypatch: pytest.MonkeyPatch, runs_folder: Path
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = _invoke(["--storage", str(runs_folder)])
    assert result.exit_code == 2
    assert "needs the 'ui' extra (uvicorn is missing)" in result.output
    assert served.calls == []
