"""UI — page load times of `resumable ui` with 1,000 runs in the store.

Two stores, each with ``--runs`` runs (default 1,000):

- **serverless**: run documents in the Firestore emulator and checkpoints in
  fake-gcs-server (the local cloud, started here). A few runs really run, through the
  worker code in this process; the rest are copies of their documents under other run
  ids, statuses, pipelines and creation times (what the pages read is the same).
- **in-process**: real ``Pipeline.run`` checkpoints in a local folder.

Each page is served by ``resumable ui`` (its own process, on 127.0.0.1) and fetched over
HTTP (time to the last byte, after two warm-up fetches); with Chromium installed, the runs and
run pages are also loaded in a headless browser (navigation start to the load event,
stylesheet and script included). Prints medians and p95 against the 200 ms target.

    .venv/bin/python benchmarks/ui_pages.py [--runs 1000] [--reps 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resumable import Pipeline  # noqa: E402
from resumable.serverless._control import start_run  # noqa: E402
from resumable.serverless._engine import Engine, PipelineRegistry  # noqa: E402
from resumable.serverless._messages import StartMessage, parse_step  # noqa: E402
from resumable.serverless._publisher import MemoryPublisher  # noqa: E402
from resumable.serverless._settings import Settings  # noqa: E402
from resumable.serverless._worker import handle_step  # noqa: E402
from resumable.storage import LocalStore  # noqa: E402

TARGET_MS = 200.0
STATUSES = ["completed"] * 14 + ["error"] * 3 + ["running"] * 2 + ["cancelled"]


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the pipeline ------------------------------------------------------------------------------


def _step(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def run(context: dict[str, Any]) -> dict[str, Any]:
        if context.get("fail") == name:
            raise ValueError(f"{name}: synthetic failure")
        rng = np.random.default_rng(len(name))
        if name == "decode":
            return {"frame": rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)}
        if name == "stats":
            return {"histogram": rng.random(32).astype(np.float32)}
        return {f"{name}_done": True}

    run.__name__ = name
    return run


STEPS: dict[str, dict[str, Any]] = {
    "fetch": {"function": _step("fetch")},
    "decode": {"function": _step("decode")},
    "thumbs": {"function": _step("thumbs"), "dependencies": ["decode"]},
    "stats": {"function": _step("stats"), "dependencies": ["decode"]},
    "merge": {"function": _step("merge"), "dependencies": ["thumbs", "stats"]},
    "render": {"function": _step("render")},
    "publish": {"function": _step("publish")},
}


def pipeline(**options: Any) -> Pipeline:
    return Pipeline("gallery", STEPS, cleanup_on_success=False, **options)


def graph() -> Pipeline:
    """The pipeline as `resumable ui --pipeline benchmarks/ui_pages.py:graph` loads it."""
    return pipeline()


# -- serving and timing ------------------------------------------------------------------------


class Server:
    """``resumable ui`` in a process of its own, as a user runs it."""

    def __init__(self, *options: str, env: dict[str, str] | None = None) -> None:
        import socket
        import subprocess

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "resumable.cli", "ui", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, *options],
            env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).read()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("resumable ui did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def fetch_ms(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as answer:
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{url}: HTTP {answer.status}")
    return (time.perf_counter() - started) * 1000


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered),
        "p95_ms": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max_ms": ordered[-1],
    }


def time_pages(base: str, pages: dict[str, str], reps: int) -> dict[str, dict[str, float]]:
    results = {}
    for label, path in pages.items():
        for _ in range(2):
            fetch_ms(base + path)
        results[label] = summary([fetch_ms(base + path) for _ in range(reps)])
    return results


def time_in_browser(base: str, pages: dict[str, str], reps: int) -> dict[str, dict[str, float]]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        note("chromium not installed: browser load times skipped (make chromium)")
        return {}
    from playwright.sync_api import sync_playwright

    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    results = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=flags)
        page = browser.new_page()
        for label, path in pages.items():
            samples = []
            for i in range(reps + 2):
                page.goto(base + path, wait_until="load")
                timing = page.evaluate(
                    "() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return n.loadEventEnd - n.startTime; }"
                )
                if i >= 2:
                    samples.append(float(timing))
            results[label] = summary(samples)
        browser.close()
    return results


# -- the serverless store ----------------------------------------------------------------------


def seed_serverless(engine: Engine, runs: int, real: int) -> list[str]:
    """``real`` runs through the worker, then copies of their documents up to ``runs``."""
    publisher = engine.publisher
    assert isinstance(publisher, MemoryPublisher)
    real_ids = []
    for i in range(real):
        params = {"n": i, **({"fail": "render"} if i % 4 == 3 else {})}
        run_id = f"real-{i:03d}"
        start_run(engine, StartMessage(pipeline="gallery", params=params, run_id=run_id))
        real_ids.append(run_id)
        while publisher.messages:
            message = publisher.messages.pop(0)
            outcome = handle_step(engine, parse_step(message.data))
            if not outcome.ack:
                publisher.messages.append(message)
    templates = [engine.runs.get(engine.doc_id("default", "gallery", r)) for r in real_ids]
    rng = random.Random(7)
    now = time.time()

    def copy(i: int) -> None:
        template = templates[i % len(templates)]
        assert template is not None
        status = rng.choice(STATUSES)
        state = template.model_copy(
            deep=True,
            update={
                "run_id": f"bench-{i:04d}",
                "pipeline": "gallery" if i % 3 else "archive",
                "status": status,
                "created_at": now - (runs - i) * 60.0,
                "finished_at": None if status == "running" else now - (runs - i) * 60.0 + 30,
                "error": "step render failed: ValueError: synthetic" if status == "error" else None,
            },
        )
        engine.runs.create(engine.doc_id("default", state.pipeline, state.run_id), state)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(copy, range(runs - real)))
    return real_ids


def bench_serverless(args: argparse.Namespace) -> dict[str, Any]:
    from emulators.launcher import LocalCloud
    from resumable.serverless._firestore import FirestoreRunStateStore, make_firestore_client
    from resumable.storage import open_store
    from resumable.storage.gcs import make_storage_client

    project = "resumable-uibench"
    with LocalCloud(project=project) as cloud:
        cloud.apply_env()
        os.environ["GOOGLE_CLOUD_PROJECT"] = project
        make_storage_client(project).create_bucket("uibench")
        settings = Settings(project=project, storage="gs://uibench/resumable")
        engine = Engine(
            settings=settings,
            registry=PipelineRegistry(pipelines=[pipeline()]),
            runs=FirestoreRunStateStore(make_firestore_client(project)),
            store=open_store(settings.storage),
            publisher=MemoryPublisher(),
        )
        started = time.perf_counter()
        real = seed_serverless(engine, args.runs, real=8)
        note(f"serverless: {args.runs} runs seeded in {time.perf_counter() - started:.1f}s")
        server = Server(
            env={
                "RESUMABLE_PROJECT": project,
                "RESUMABLE_STORAGE": settings.storage,
                "RESUMABLE_PIPELINES": f"{Path(__file__).resolve()}:graph",
            }
        )
        try:
            first = urllib.request.urlopen(server.url + "/").read().decode()
            cursor = first.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
            run = f"/runs/default/gallery/{real[0]}"
            pages = {
                "runs: newest 50": "/",
                "runs: status error": "/?status=error",
                "runs: pipeline filter": "/?pipeline=gallery",
                "runs: search by run id": "/?q=bench-05",
                "runs: page 2": cursor.replace("&amp;", "&"),
                "run page (7 steps)": run,
                "checkpoint: input of render": run + "/steps/render/input",
                "thumbnail (PNG)": run + "/steps/render/input/image?key=frame",
            }
            http = time_pages(server.url, pages, args.reps)
            browser = {}
            if not args.no_browser:
                browser = time_in_browser(
                    server.url, {"runs page": "/", "run page": run}, min(args.reps, 10)
                )
        finally:
            server.stop()
    return {"http": http, "browser": browser}


# -- the in-process store ---------------------------------------------------------------------


def bench_folder(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="ui-bench-", dir=args.tmp_dir))
    try:
        # Not durable: fsyncs would only slow the seeding, not the pages.
        store = LocalStore(root, durable=False)
        started = time.perf_counter()
        for i in range(args.runs):
            params = {"n": i, **({"fail": "render"} if i % 7 == 3 else {})}
            pipeline(storage=store, run_id=f"run-{i:04d}").run(params)
        note(f"in-process: {args.runs} runs checkpointed in {time.perf_counter() - started:.1f}s")
        server = Server("--storage", str(root), "--pipeline", f"{Path(__file__).resolve()}:graph")
        try:
            cold = fetch_ms(server.url + "/")  # builds the index: every manifest read once
            run = "/runs/default/gallery/run-0001"
            pages = {
                "runs: newest 50": "/",
                "runs: status error": "/?status=error",
                "runs: search by run id": "/?q=run-05",
                "runs: page 2": "/?cursor=50",
                "run page (7 steps)": run,
                "checkpoint: input of render": run + "/steps/render/input",
                "thumbnail (PNG)": run + "/steps/render/input/image?key=frame",
            }
            http = time_pages(server.url, pages, args.reps)
            browser = {}
            if not args.no_browser:
                browser = time_in_browser(
                    server.url, {"runs page": "/", "run page": run}, min(args.reps, 10)
                )
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"cold_index_ms": cold, "http": http, "browser": browser}


# -- report ---------------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    print(f"\nUI page loads with {report['runs']} runs in the store (benchmarks/ui_pages.py)")
    print(
        f"target: every page under {TARGET_MS:.0f} ms; load average at start "
        f"{report['load_1m']:.2f} on {os.cpu_count()} cores"
    )
    for store in ("serverless", "in-process"):
        result = report.get(store)
        if not result:
            continue
        print(
            f"\n{store}"
            + (
                " (Firestore and fake-gcs-server emulators)"
                if store == "serverless"
                else " (checkpoints in a local folder)"
            )
        )
        if "cold_index_ms" in result:
            print(
                f"  first runs page (builds the index of {report['runs']} manifests): "
                f"{result['cold_index_ms']:.0f} ms"
            )
        print(f"  {'HTTP, to the last byte':<34} {'median':>8} {'p95':>8} {'max':>8}")
        for label, row in result["http"].items():
            verdict = "ok" if row["p95_ms"] < TARGET_MS else "OVER"
            print(
                f"  {label:<34} {row['median_ms']:8.1f} {row['p95_ms']:8.1f} "
                f"{row['max_ms']:8.1f}  {verdict}"
            )
        if result.get("browser"):
            print(f"  {'Chromium, navigation to load':<34} {'median':>8} {'p95':>8} {'max':>8}")
            for label, row in result["browser"].items():
                verdict = "ok" if row["p95_ms"] < TARGET_MS else "OVER"
                print(
                    f"  {label:<34} {row['median_ms']:8.1f} {row['p95_ms']:8.1f} "
                    f"{row['max_ms']:8.1f}  {verdict}"
                )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="UI page load times with many runs")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--skip-serverless", action="store_true")
    parser.add_argument("--skip-folder", action="store_true")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--tmp-dir", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"runs": args.runs, "load_1m": os.getloadavg()[0]}
    if not args.skip_serverless:
        report["serverless"] = bench_serverless(args)
    if not args.skip_folder:
        report["in-process"] = bench_folder(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
