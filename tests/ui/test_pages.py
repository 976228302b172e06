"""The UI's pages and actions over in-memory services and a checkpoint folder, through
Starlette's test client: what the pages say, and which requests are refused.

The browser tests (test_browser.py) check the same on the local stack in Chromium.
"""

from __future__ import annotations

import html
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.api_core.exceptions import ServiceUnavailable
from starlette.testclient import TestClient

from resumable import tracing
from resumable.errors import (
    CorruptCheckpointError,
    InvalidIdError,
    ObjectNotFoundError,
    ResumableError,
    RunControlError,
)
from resumable.ui._app import create_app
from resumable.ui._cloud import CloudRuns
from resumable.ui._folder import FolderRuns
from resumable.ui._security import CSRF_COOKIE, Guard
from tests.serverless_fakes import drain, make_engine, start, state_of
from tests.ui.pipelines import build

ORIGIN = "http://testserver"


def token(client: TestClient, path: str = "/") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def post(client: TestClient, path: str, data: dict[str, str], **headers: str) -> Any:
    return client.post(
        path, data=data, headers={"origin": ORIGIN, **headers}, follow_redirects=False
    )


@pytest.fixture
def engine() -> Any:
    return make_engine(build())


@pytest.fixture
def cloud(engine: Any) -> TestClient:
    return TestClient(create_app(CloudRuns(engine), guard=Guard(["testserver"])))


def failed_run(engine: Any, workdir: Path, run_id: str = "run-1") -> None:
    start(
        engine,
        "gallery",
        {"workdir": str(workdir), "faults": {"render": {"fail_first": True}}},
        run_id,
    )
    drain(engine)


# -- serverless runs --------------------------------------------------------------------------


def test_runs_page_lists_runs_newest_first_with_counts_per_status(
    engine: Any, cloud: TestClient, tmp_path: Path
) -> None:
    failed_run(engine, tmp_path, "older")
    start(engine, "gallery", {"workdir": str(tmp_path)}, "newer")
    drain(engine)
    page = cloud.get("/")
    assert page.status_code == 200
    assert page.text.index('data-run="newer"') < page.text.index('data-run="older"')
    assert re.search(r'data-count="error">error <b>1</b>', page.text)
    assert re.search(r'data-count="completed">completed <b>1</b>', page.text)
    only_errors = cloud.get("/?status=error").text
    assert 'data-run="older"' in only_errors and 'data-run="newer"' not in only_errors
    found = cloud.get("/?q=new").text
    assert 'data-run="newer"' in found and 'data-run="older"' not in found


def test_runs_page_pages_through_runs_with_a_cursor(engine: Any, tmp_path: Path) -> None:
    for i in range(5):
        start(engine, "gallery", {"workdir": str(tmp_path)}, f"run-{i}")
    client = TestClient(create_app(CloudRuns(engine)))
    from resumable.ui import _app as app_module

    seen: list[str] = []
    original = app_module.PAGE_SIZE
    app_module.PAGE_SIZE = 2
    try:
        path: str | None = "/"
        while path:
            text = client.get(path).text
            seen += re.findall(r'data-run="([^"]+)"', text)
            more = re.search(r'href="([^"]+)" rel="next"', text)
            path = more.group(1).replace("&amp;", "&") if more else None
    finally:
        app_module.PAGE_SIZE = original
    assert seen == [f"run-{i}" for i in reversed(range(5))]


def test_run_page_shows_the_graph_the_failed_step_and_its_error(
    engine: Any, cloud: TestClient, tmp_path: Path
) -> None:
    failed_run(engine, tmp_path)
    page = cloud.get("/runs/default/gallery/run-1").text
    assert 'id="run-status" data-status="error"' in page
    assert re.search(r'class="node status-error" data-step="render"', page)
    assert re.search(r'class="node status-completed" data-step="merge"', page)
    assert (
        'data-from="thumbs" data-to="merge"' in page and 'data-from="stats" data-to="merge"' in page
    )
    assert "render: the frame is corrupt (first try)" in page
    assert 'labels.run_id="run-1" AND labels.step="render"' in html.unescape(page)
    assert 'id="resume-run"' in page and 'id="cancel-run"' not in page
    assert tracing.trace_hex("default", "gallery", "run-1") in page  # the run's trace


def test_checkpoint_browser_shows_dtypes_shapes_and_serves_image_thumbnails(
    engine: Any, cloud: TestClient, tmp_path: Path
) -> None:
    start(engine, "gallery", {"workdir": str(tmp_path)})
    drain(engine)
    page = cloud.get("/runs/default/gallery/run-1/steps/render/input").text
    row = re.search(r'<tr class="value" data-key="frame">.*?</tr>', page, re.S)
    assert row and "uint8" in row.group(0) and "48×64×3" in row.group(0)
    assert "float32" in page and "plus the outputs of fetch, decode, thumbs, stats, merge" in page
    image = cloud.get("/runs/default/gallery/run-1/steps/render/input/image?key=frame")
    assert image.headers["content-type"] == "image/png"
    assert png_size(image.content) == (64, 48)
    output = cloud.get("/runs/default/gallery/run-1/steps/render/output").text
    assert 'data-key="poster"' in output and 'data-key="frame"' not in output
    assert (
        cloud.get("/runs/default/gallery/run-1/steps/render/input/image?key=nope").status_code
        == 404
    )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    raw = zlib.decompress(data[idat + 4 : idat + 4 + length])
    assert len(raw) == height * (1 + width * 3)
    return width, height


def test_cancel_and_resume_from_the_page_change_the_run_document(
    engine: Any, cloud: TestClient, tmp_path: Path
) -> None:
    start(engine, "gallery", {"workdir": str(tmp_path)})
    csrf = token(cloud, "/runs/default/gallery/run-1")
    answer = post(cloud, "/runs/default/gallery/run-1/cancel", {"csrf": csrf})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/runs/default/gallery/run-1?done=cancel"
    assert state_of(engine, "gallery").cancel_requested
    drain(engine)
    assert state_of(engine, "gallery").status == "cancelled"
    answer = post(cloud, "/runs/default/gallery/run-1/resume", {"csrf": csrf, "from_step": ""})
    assert answer.status_code == 303
    drain(engine)
    assert state_of(engine, "gallery").status == "completed"
    answer = post(cloud, "/runs/default/gallery/run-1/resume", {"csrf": csrf, "from_step": "merge"})
    assert answer.status_code == 303
    rolled = state_of(engine, "gallery")
    assert rolled.generation == 2 and rolled.steps["merge"].status == "queued"
    assert rolled.steps["stats"].status == "completed"


def test_start_form_publishes_a_start_message(engine: Any, cloud: TestClient) -> None:
    csrf = token(cloud)
    answer = post(
        cloud,
        "/start",
        {"csrf": csrf, "pipeline": "gallery", "params": '{"n": 1}', "run_id": "from-ui"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/runs/default/gallery/from-ui?started=1")
    [message] = engine.publisher.messages
    assert b'"run_id":"from-ui"' in message.data.replace(b" ", b"")
    waiting = cloud.get(answer.headers["location"])
    assert 'data-status="waiting"' in waiting.text
    bad = post(cloud, "/start", {"csrf": csrf, "pipeline": "gallery", "params": "[1]"})
    assert bad.status_code == 409 and "params must be a JSON object" in bad.text


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"origin": "http://evil.example"}, "cross-site request refused"),
        ({"origin": "null"}, "cross-site request refused"),
        ({"origin": "", "referer": "http://evil.example/page"}, "cross-site request refused"),
        ({"sec-fetch-site": "cross-site"}, "Sec-Fetch-Site"),
    ],
)
def test_a_cross_site_post_is_refused_and_changes_nothing(
    engine: Any, cloud: TestClient, tmp_path: Path, headers: dict[str, str], why: str
) -> None:
    start(engine, "gallery", {"workdir": str(tmp_path)})
    csrf = token(cloud, "/runs/default/gallery/run-1")
    answer = post(cloud, "/runs/default/gallery/run-1/cancel", {"csrf": csrf}, **headers)
    assert answer.status_code == 403 and why in answer.text
    assert not state_of(engine, "gallery").cancel_requested


def test_a_post_without_the_csrf_token_of_its_cookie_is_refused(
    engine: Any, cloud: TestClient, tmp_path: Path
) -> None:
    start(engine, "gallery", {"workdir": str(tmp_path)})
    token(cloud)
    forged = Guard(["testserver"]).new_token()  # signed by another server
    for data in ({}, {"csrf": "x.y"}, {"csrf": forged}):
        answer = post(cloud, "/runs/default/gallery/run-1/cancel", data)
        assert answer.status_code == 403 and "CSRF token" in answer.text
    cloud.cookies.clear()
    answer = post(cloud, "/runs/default/gallery/run-1/cancel", {"csrf": forged})
    assert answer.status_code == 403
    assert not state_of(engine, "gallery").cancel_requested


def test_requests_for_another_host_are_refused(cloud: TestClient) -> None:
    """A DNS-rebinding page reaches the server under its own name."""
    answer = cloud.get("/", headers={"host": "rebind.example:8787"})
    assert answer.status_code == 421 and "unexpected Host" in answer.text


def test_pages_refuse_unsafe_ids_and_unknown_runs(cloud: TestClient) -> None:
    assert cloud.get("/runs/default/gallery/..%2Fx").status_code in (400, 404)
    assert cloud.get("/runs/default/gallery/nope").status_code == 404
    assert cloud.get("/?status=weird").status_code == 400


def test_live_events_stream_the_run_until_it_finishes(
    engine: Any, cloud: TestClient, tmp_path: Path
) -> None:
    start(engine, "gallery", {"workdir": str(tmp_path)})
    drain(engine)
    with cloud.stream("GET", "/runs/default/gallery/run-1/events") as events:
        body = "".join(events.iter_text())
    assert "event: run" in body and 'data-status="completed"' in body
    assert body.rstrip().endswith("data: finished")


# -- in-process runs in a folder --------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    build(storage=str(store), run_id="done-1").run({"workdir": str(tmp_path)})
    faults = {"render": {"fail": True}}
    build(storage=str(store), run_id="failed-1").run({"workdir": str(tmp_path), "faults": faults})
    return store


def test_folder_pages_show_in_process_runs_without_actions(folder: Path) -> None:
    source = FolderRuns(str(folder), ["tests/ui/pipelines.py:gallery"])
    client = TestClient(create_app(source))
    runs = client.get("/").text
    assert 'data-run="done-1" data-status="completed"' in runs
    assert 'data-run="failed-1" data-status="error"' in runs
    assert "start a run" not in runs
    run = client.get("/runs/default/gallery/failed-1").text
    assert "render: the frame is corrupt" in run
    assert 'data-from="decode" data-to="stats"' in run
    assert 'id="cancel-run"' not in run and 'id="resume-run"' not in run
    assert "--run-id failed-1 --resume" in run
    page = client.get("/runs/default/gallery/done-1/steps/merge/input").text
    assert re.search(r'data-key="histogram">.*?float32.*?>16<', page, re.S)
    image = client.get("/runs/default/gallery/done-1/steps/render/output/image?key=poster")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    refused = client.post(
        "/runs/default/gallery/failed-1/resume",
        data={"csrf": client.cookies[CSRF_COOKIE]},
        headers={"origin": ORIGIN},
    )
    assert refused.status_code == 409 and "resumable run --resume" in refused.text


def test_folder_pages_without_the_pipeline_draw_no_edges_and_say_why(folder: Path) -> None:
    client = TestClient(create_app(FolderRuns(str(folder))))
    run = client.get("/runs/default/gallery/done-1").text
    assert "data-from=" not in run and "--pipeline MODULE:ATTR" in run
    assert (
        "is built from the step graph"
        in client.get("/runs/default/gallery/done-1/steps/merge/input").text
    )
    assert (
        'data-key="summary"' in client.get("/runs/default/gallery/done-1/steps/merge/output").text
    )


def test_folder_index_sees_new_and_changed_runs(folder: Path, tmp_path: Path) -> None:
    from resumable.ui import _folder as folder_module

    source = FolderRuns(str(folder))
    client = TestClient(create_app(source))
    assert 'data-run="later"' not in client.get("/").text
    build(storage=str(folder), run_id="later").run({"workdir": str(tmp_path)})
    source._refreshed = float("-inf")  # as if REFRESH_SECONDS had passed
    assert folder_module.REFRESH_SECONDS > 0
    assert 'data-run="later" data-status="completed"' in client.get("/").text


def test_value_views_describe_arrays_and_images() -> None:
    from resumable.ui._values import is_image, value_view

    assert is_image(np.zeros((4, 5), np.uint8)) and is_image(np.zeros((4, 5, 3), np.uint8))
    assert not is_image(np.zeros((4, 5), np.float32)) and not is_image(
        np.zeros((4, 5, 2), np.uint8)
    )
    view = value_view(
        "a", np.arange(12, dtype=np.int16).reshape(3, 4), {"segment": "b3-x", "bytes": 99}
    )
    assert (view.dtype, view.shape, view.nbytes, view.stored_bytes) == ("int16", (3, 4), 24, 99)
    assert value_view("s", "x" * 1000).preview.endswith("…")  # type: ignore[union-attr]


# -- errors become pages that say what is wrong ---------------------------------------------------


class _Failing(FolderRuns):
    """An in-process source whose run page raises ``error``."""

    error: Exception = RuntimeError("unset")

    def run(self, key: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "said"),
    [
        (InvalidIdError("run id 'a..b' is not safe"), 400, "is not safe"),
        (RunControlError("the run is not resumable"), 409, "the run is not resumable"),
        (ObjectNotFoundError("runs/x/.checkpoint.json"), 410, "a checkpoint of the run is gone"),
        (CorruptCheckpointError("hash mismatch"), 500, "the checkpoint cannot be read: hash"),
        (ResumableError("something of ours"), 500, "something of ours"),
        (ServiceUnavailable("firestore is down"), 502, "the cloud service failed: Service"),
    ],
)
def test_each_library_error_is_a_page_with_its_status_and_reason(
    folder: Path, error: Exception, status: int, said: str
) -> None:
    source = _Failing(str(folder))
    source.error = error
    page = TestClient(create_app(source)).get("/runs/default/gallery/done-1")
    assert page.status_code == status
    assert said in html.unescape(page.text)


def test_requests_with_wrong_parts_are_refused_with_the_reason(folder: Path) -> None:
    client = TestClient(create_app(FolderRuns(str(folder))))
    unknown = client.get("/?status=sleeping")
    assert unknown.status_code == 400 and "unknown status" in html.unescape(unknown.text)
    side = client.get("/runs/default/gallery/done-1/steps/fetch/sideways")
    assert side.status_code == 400 and "input or output" in html.unescape(side.text)
    no_traceback = client.get("/runs/default/gallery/done-1/steps/fetch/traceback")
    assert no_traceback.status_code == 404
    assert client.get("/healthz").text == "ok"
