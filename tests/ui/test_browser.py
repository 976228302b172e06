"""`resumable ui` in a real headless Chromium, on the local stack and on a checkpoint
folder: what a person sees and what their clicks do to the runs.

Runs are started the way any publisher starts them: a start message published with the
official Pub/Sub client. Steps wait at "gates" (files the test creates) so that a run is
caught running for as long as a test needs.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable.dev._stack import DevStack
from resumable.serverless import _naming as naming
from resumable.serverless._engine import Engine
from resumable.serverless._run_state import RunState
from tests.ui.conftest import Served, serve, wait_for
from tests.ui.pipelines import build

pytestmark = pytest.mark.slow


def publish_start(stack: DevStack, run_id: str, params: dict[str, Any]) -> None:
    """Start a run as any client would: the official Pub/Sub client, a JSON message."""
    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(stack.project, naming.start_topic(stack.prefix))
    message = {"pipeline": "gallery", "params": params, "run_id": run_id}
    publisher.publish(topic, json.dumps(message).encode()).result(timeout=30)


def run_doc(engine: Engine, run_id: str) -> RunState | None:
    return engine.runs.get(engine.doc_id("default", "gallery", run_id))


def wait_run(engine: Engine, run_id: str, what: str, check: Any, timeout: float = 60) -> RunState:
    def ready() -> RunState | None:
        state = run_doc(engine, run_id)
        return state if state is not None and check(state) else None

    result: RunState = wait_for(ready, f"run {run_id} {what}", timeout)
    return result


def gated(workdir: Path, *steps: str, **more: Any) -> dict[str, Any]:
    faults: dict[str, Any] = {step: {"gate": True} for step in steps}
    for step, fault in more.items():
        faults.setdefault(step, {}).update(fault)
    return {"workdir": str(workdir), "faults": faults}


def open_gate(workdir: Path, step: str) -> None:
    (workdir / f"open-{step}").touch()


def unique(name: str) -> str:
    return f"{name}-{int(time.time() * 1000) % 10_000_000}"


# -- serverless runs on the local stack -------------------------------------------------------


def test_runs_page_lists_runs_started_by_the_official_client(
    stack: DevStack, ui_engine: Engine, cloud_ui: Served, page: Any, workdir: Path
) -> None:
    page.goto(cloud_ui.url + "/")
    first, second = unique("listed-a"), unique("listed-b")
    publish_start(stack, first, {"workdir": str(workdir)})
    publish_start(stack, second, gated(workdir, "fetch"))
    # The page refreshes itself: both runs appear without a reload.
    page.wait_for_selector(f'tr.run[data-run="{first}"]', timeout=30_000)
    page.wait_for_selector(f'tr.run[data-run="{second}"][data-status="running"]')
    page.wait_for_selector(f'tr.run[data-run="{first}"][data-status="completed"]', timeout=60_000)
    open_gate(workdir, "fetch")
    page.fill("#search", second)
    page.click("form.filters button[type=submit]")
    page.wait_for_selector(f'tr.run[data-run="{second}"]')
    assert page.locator("tr.run").count() == 1
    page.click(f'tr.run[data-run="{second}"] a')
    page.wait_for_selector("#run-status")
    assert page.url.endswith(f"/runs/default/gallery/{second}")


def test_a_running_runs_page_updates_live_until_it_completes(
    stack: DevStack, ui_engine: Engine, cloud_ui: Served, page: Any, workdir: Path
) -> None:
    run_id = unique("live")
    publish_start(stack, run_id, gated(workdir, "merge"))
    wait_run(ui_engine, run_id, "running merge", lambda s: s.steps["merge"].status == "running")
    page.goto(f"{cloud_ui.url}/runs/default/gallery/{run_id}")
    page.wait_for_selector('#run-status[data-status="running"]')
    page.wait_for_selector('.node.status-running[data-step="merge"]')
    page.wait_for_selector('.node.status-completed[data-step="stats"]')
    page.evaluate("window.notReloaded = true")
    open_gate(workdir, "merge")
    page.wait_for_selector('.node.status-completed[data-step="merge"]', timeout=60_000)
    page.wait_for_selector('#run-status[data-status="completed"]', timeout=60_000)
    assert page.evaluate("window.notReloaded === true"), "the page was reloaded"
    statuses = page.eval_on_selector_all("tr.step", "rows => rows.map(r => r.dataset.status)")
    assert statuses == ["completed"] * 7
    assert page.locator("svg.timeline rect.bar.status-completed").count() == 7


def test_a_failed_steps_error_is_shown_with_its_traceback(
    stack: DevStack, ui_engine: Engine, cloud_ui: Served, page: Any, workdir: Path
) -> None:
    run_id = unique("failed")
    publish_start(stack, run_id, {"workdir": str(workdir), "faults": {"render": {"fail": True}}})
    wait_run(ui_engine, run_id, "failed", lambda s: s.status == "error")
    page.goto(f"{cloud_ui.url}/runs/default/gallery/{run_id}")
    page.wait_for_selector('#run-status[data-status="error"]')
    assert page.locator('.node.status-error[data-step="render"]').count() == 1
    assert page.locator('.node.status-not_started[data-step="publish"]').count() == 1
    message = page.locator('tr.step-error[data-step="render"] .error-message')
    assert "NonRetryableError: render: the frame is corrupt" in message.inner_text()
    assert "render: the frame is corrupt" in page.inner_text("#run-error")
    message.click()  # open the details: the traceback is read from the function's log
    traceback = page.locator('tr.step-error[data-step="render"] pre.traceback')
    wait_for(lambda: "Traceback" in traceback.inner_text(), "the traceback", 20)
    assert 'raise NonRetryableError(f"{step}: the frame is corrupt")' in traceback.inner_text()


def test_the_cancel_button_cancels_a_running_run(
    stack: DevStack, ui_engine: Engine, cloud_ui: Served, page: Any, workdir: Path
) -> None:
    run_id = unique("cancel")
    publish_start(stack, run_id, gated(workdir, "decode"))
    wait_run(ui_engine, run_id, "running decode", lambda s: s.steps["decode"].status == "running")
    page.goto(f"{cloud_ui.url}/runs/default/gallery/{run_id}")
    page.click("#cancel-run")  # the confirmation is accepted
    page.wait_for_selector("#cancel-requested")
    assert run_doc(ui_engine, run_id).cancel_requested  # type: ignore[union-attr]
    open_gate(workdir, "decode")  # the running step finishes, nothing after it starts
    page.wait_for_selector('#run-status[data-status="cancelled"]', timeout=60_000)
    state = run_doc(ui_engine, run_id)
    assert state is not None and state.status == "cancelled"
    assert state.steps["decode"].status == "completed"
    assert {state.steps[s].status for s in ("thumbs", "stats", "merge")} == {"cancelled"}


def test_resume_and_resume_from_a_step_work_from_the_page(
    stack: DevStack, ui_engine: Engine, cloud_ui: Served, page: Any, workdir: Path
) -> None:
    run_id = unique("resume")
    publish_start(
        stack, run_id, {"workdir": str(workdir), "faults": {"render": {"fail_first": True}}}
    )
    wait_run(ui_engine, run_id, "failed", lambda s: s.status == "error")
    page.goto(f"{cloud_ui.url}/runs/default/gallery/{run_id}")
    page.click("#resume-run")
    page.wait_for_selector('#run-status[data-status="completed"]', timeout=60_000)
    resumed = run_doc(ui_engine, run_id)
    assert resumed is not None and resumed.generation == 1
    assert resumed.steps["render"].attempt == 2 and resumed.steps["stats"].attempt == 1
    page.select_option("#from-step", "stats")
    page.click("#resume-from")
    page.wait_for_selector(".done")
    page.wait_for_selector('#run-status[data-status="completed"]', timeout=60_000)
    rolled = run_doc(ui_engine, run_id)
    assert rolled is not None and rolled.generation == 2
    assert rolled.steps["stats"].attempt == 2  # rolled back and run again
    assert rolled.steps["merge"].attempt == 2 and rolled.steps["render"].attempt == 3
    assert rolled.steps["thumbs"].attempt == 1 and rolled.steps["decode"].attempt == 1


class _AttackerSite:
    """Another origin (another port) whose page posts a form to the UI."""

    def __init__(self, target: str) -> None:
        html = (
            f'<form id="f" method="post" action="{target}"><input name="csrf" value="guess">'
            '<button id="go">win a prize</button></form>'
        ).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://localhost:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def attacker(request: pytest.FixtureRequest) -> Iterator[type[_AttackerSite]]:
    sites: list[_AttackerSite] = []

    class Site(_AttackerSite):
        def __init__(self, target: str) -> None:
            super().__init__(target)
            sites.append(self)

    yield Site
    for site in sites:
        site.close()


def test_a_cross_site_post_is_refused(
    stack: DevStack,
    ui_engine: Engine,
    cloud_ui: Served,
    page: Any,
    workdir: Path,
    attacker: Any,
) -> None:
    run_id = unique("csrf")
    publish_start(stack, run_id, gated(workdir, "fetch"))
    wait_run(ui_engine, run_id, "running", lambda s: s.steps["fetch"].status == "running")
    page.goto(f"{cloud_ui.url}/runs/default/gallery/{run_id}")  # the user has the UI open
    site = attacker(f"{cloud_ui.url}/runs/default/gallery/{run_id}/cancel")
    page.goto(site.url)
    with page.expect_navigation():
        page.click("#go")
    assert "cross-site request refused" in page.inner_text("#problem")
    state = run_doc(ui_engine, run_id)
    assert state is not None and not state.cancel_requested and state.status == "running"
    open_gate(workdir, "fetch")


def test_the_checkpoint_browser_shows_dtype_shape_and_an_image_thumbnail(
    stack: DevStack, ui_engine: Engine, cloud_ui: Served, page: Any, workdir: Path
) -> None:
    run_id = unique("browse")
    publish_start(stack, run_id, {"workdir": str(workdir)})
    wait_run(ui_engine, run_id, "completed", lambda s: s.status == "completed")
    page.goto(f"{cloud_ui.url}/runs/default/gallery/{run_id}")
    page.click('tr.step[data-step="render"] a.input-link')
    frame = page.locator('tr.value[data-key="frame"]')
    assert frame.locator(".dtype").inner_text() == "uint8"
    assert frame.locator(".shape").inner_text() == "48×64×3"
    histogram = page.locator('tr.value[data-key="histogram"]')
    assert histogram.locator(".dtype").inner_text() == "float32"
    assert histogram.locator(".shape").inner_text() == "16"
    thumbnail = frame.locator("img.thumb")
    thumbnail.scroll_into_view_if_needed()
    wait_for(lambda: thumbnail.evaluate("img => img.complete && img.naturalWidth"), "the thumbnail")
    assert thumbnail.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [64, 48]
    page.click("text=output")
    page.wait_for_selector('tr.value[data-key="poster"] img.thumb')


# -- in-process runs in a folder --------------------------------------------------------------


@pytest.fixture
def folder_ui(tmp_path: Path) -> Iterator[tuple[Served, Path]]:
    from resumable.ui._folder import FolderRuns

    store = tmp_path / "checkpoints"
    store.mkdir()
    served = serve(FolderRuns(str(store), ["tests/ui/pipelines.py:gallery"]))
    try:
        yield served, store
    finally:
        served.stop()


def test_the_same_pages_show_an_in_process_run_in_a_folder(
    folder_ui: tuple[Served, Path], page: Any, workdir: Path, attacker: Any
) -> None:
    served, store = folder_ui
    build(storage=str(store), run_id="broken").run(
        {"workdir": str(workdir), "faults": {"render": {"fail": True}}}
    )
    pipeline = build(storage=str(store), run_id="inproc")
    running = threading.Thread(target=pipeline.run, args=(gated(workdir, "merge"),))
    running.start()
    try:
        wait_for((workdir / "open-merge").parent.exists, "the workdir")
        page.goto(served.url + "/")
        page.wait_for_selector('tr.run[data-run="inproc"][data-status="running"]', timeout=30_000)
        page.wait_for_selector('tr.run[data-run="broken"][data-status="error"]')
        page.click('tr.run[data-run="inproc"] a')
        page.wait_for_selector('.node.status-completed[data-step="stats"]', timeout=30_000)
        page.evaluate("window.notReloaded = true")
        open_gate(workdir, "merge")
        page.wait_for_selector('#run-status[data-status="completed"]', timeout=30_000)
        assert page.evaluate("window.notReloaded === true"), "the page was reloaded"
        assert page.locator("#cancel-run, #resume-run").count() == 0
    finally:
        open_gate(workdir, "merge")
        running.join(timeout=60)
    page.click('tr.step[data-step="render"] a.input-link')
    frame = page.locator('tr.value[data-key="frame"]')
    assert frame.locator(".dtype").inner_text() == "uint8"
    assert frame.locator(".shape").inner_text() == "48×64×3"
    thumbnail = frame.locator("img.thumb")
    wait_for(lambda: thumbnail.evaluate("img => img.complete && img.naturalWidth"), "the thumbnail")
    page.goto(served.url + "/runs/default/gallery/broken")
    assert "render: the frame is corrupt" in page.inner_text('tr.step-error[data-step="render"]')
    site = attacker(served.url + "/runs/default/gallery/broken/resume")
    page.goto(site.url)
    with page.expect_navigation():
        page.click("#go")
    assert "cross-site request refused" in page.inner_text("#problem")
