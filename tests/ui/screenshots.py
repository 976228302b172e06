"""The README's screenshots of `resumable ui`, made again with

    .venv/bin/python -m tests.ui.screenshots docs/ui

Runs of the ``gallery`` test pipeline go through the real worker code over in-memory
services (a dozen runs, some failed, one resumed and caught while a step runs); the UI
serves them and headless Chromium takes the runs page and that run's page.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from resumable.serverless._messages import parse_step
from resumable.serverless._publisher import MemoryPublisher
from resumable.serverless._worker import handle_step
from resumable.ui._cloud import CloudRuns
from tests.serverless_fakes import claim, drain, make_engine, start
from tests.ui.conftest import CHROMIUM_FLAGS, chromium_path, serve
from tests.ui.pipelines import build


def populate(workdir: Path) -> tuple[CloudRuns, str]:
    engine = make_engine(build())
    for i in range(11):
        faults: dict[str, Any] = {"decode": {"sleep": 0.05 + 0.02 * (i % 4)}}
        if i in (3, 8):
            faults["render"] = {"fail": True}
        start(engine, "gallery", {"workdir": str(workdir), "faults": faults}, f"nightly-{400 + i}")
        drain(engine)
    run_id = "nightly-411"
    slow = {step: {"sleep": 0.4} for step in ("fetch", "decode", "thumbs", "stats")}
    slow["stats"]["fail_first"] = True
    params = {"workdir": str(workdir), "faults": slow}
    start(engine, "gallery", params, run_id)
    drain(engine)
    from resumable.serverless._control import resume_run

    state = engine.runs.get(engine.doc_id("default", "gallery", run_id))
    assert state is not None
    resume_run(engine, state)
    publisher = engine.publisher
    assert isinstance(publisher, MemoryPublisher)
    while publisher.messages:  # deliver everything but merge, which is caught running
        message = parse_step(publisher.messages.pop(0).data)
        if message.step != "merge":
            handle_step(engine, message)
    claim(engine, "gallery", "merge", run_id)
    time.sleep(1.2)
    return CloudRuns(engine), run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    executable = chromium_path()
    if executable is None:
        print("chromium is not installed (make chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    args.folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ui-screens-") as workdir:
        source, run_id = populate(Path(workdir))
        served = serve(source)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=executable, args=CHROMIUM_FLAGS
                )
                page = browser.new_page(viewport={"width": 1200, "height": 760})
                page.goto(served.url + "/")
                page.screenshot(path=str(args.folder / "runs.png"))
                page.goto(f"{served.url}/runs/default/gallery/{run_id}")
                page.wait_for_selector('.node.status-running[data-step="merge"]')
                page.screenshot(path=str(args.folder / "run.png"), full_page=True)
                browser.close()
        finally:
            served.stop()
    print(f"screenshots in {args.folder}: runs.png, run.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
