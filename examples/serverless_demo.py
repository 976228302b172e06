"""The serverless demo: the video data-prep pipeline, event-driven on the local cloud, with
one step's function instance killed in the middle of its step.

1. start the local stack: the official Pub/Sub and Firestore emulators, fake-gcs-server,
   and one functions-framework process per step, pushed to by Pub/Sub (``DevStack``);
2. make a synthetic clip and start a run the way any client would: publish
   ``{"pipeline": "dataprep", "params": {...}}`` to the start topic with the official
   google-cloud-pubsub client;
3. follow the run document live; once ``extract_frames`` has saved progress mid-step,
   SIGKILL its function's process group (what an instance crash does);
4. the stack starts a new instance (as Cloud Run would), Pub/Sub redelivers the step's
   message, the new instance claims the step once the dead one's lease has expired and
   continues from the saved frames; the run completes;
5. print a summary and compare the dataset, file by file, with an in-process run of the
   same pipeline on the same clip;
7. run the folder pipeline (``examples/dataprep/folder.py``: a map step, one item per clip)
   over four clips in the bucket, SIGKILL the map's function while it processes the last
   (longest) clip, and check that this clip alone runs again and the map completes.

Run with ``make demo``. Exits non-zero if anything is off; always stops the stack.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ``python examples/serverless_demo.py`` from anywhere
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.live import Live  # noqa: E402
from rich.table import Table  # noqa: E402

from examples.dataprep import pipeline as dataprep  # noqa: E402
from examples.dataprep.dataset import MANIFEST, read_dataset  # noqa: E402
from examples.dataprep.video import make_test_clip  # noqa: E402
from resumable.dev import DevStack  # noqa: E402
from resumable.serverless import Engine, RunFiles, RunState, Settings  # noqa: E402

PIPELINE_REF = "examples.dataprep.pipeline:build"
FOLDER_REF = "examples.dataprep.folder:build"
PIPELINE = dataprep.PIPELINE_NAME
MAP_STEP = "process_clips"
FOLDER_CLIPS = {"clip-a": 24, "clip-b": 24, "clip-c": 24, "clip-long": 240}  # name -> frames
KILL_STEP = "extract_frames"
PROJECT = "resumable-demo"
BUCKET = "resumable-demo"
LEASE_SECONDS = 3.0  # how soon a crashed instance's claim on a step lapses
RUN_DEADLINE_SECONDS = 120.0
POLL_SECONDS = 0.1


class DemoFailed(Exception):
    """A check the demo makes did not hold (the message says which)."""


@dataclass
class Observed:
    """What the demo saw while following the run."""

    killed_pid: int | None = None
    killed_attempt: int = 0
    resumed_from: int | None = None  # frames_next_index of the progress attempt 2 loads
    saves: dict[int, list[int]] = field(default_factory=dict)  # attempt -> frames saved
    restart_seen: bool = False
    progress_listed: bool = False  # every progress save of the kill step has been read
    owners: dict[int, str] = field(default_factory=dict)  # attempt -> lease owner


logger = logging.getLogger("resumable")


def format_size(size: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=144, help="frames in the test clip")
    parser.add_argument("--size", default="320x240", help="clip size, WIDTHxHEIGHT")
    parser.add_argument("--progress-every", type=int, default=8, help="frames per progress save")
    parser.add_argument(
        "--kill-after",
        type=int,
        default=None,
        help=f"kill {KILL_STEP} once it saved this many frames (default: a third of them)",
    )
    parser.add_argument("--plain", action="store_true", help="plain lines, no live table")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    began = time.monotonic()
    console = Console(highlight=False)
    live = console.is_terminal and not args.plain
    # Ctrl-C and SIGTERM unwind through ``finally``, which stops the stack (SIGINT too when
    # a parent shell started us with it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="resumable-serverless-demo-"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    stack = DevStack(
        [PIPELINE_REF, FOLDER_REF],
        home=workdir / "stack",
        project=PROJECT,
        bucket=BUCKET,
        prefix="resumable",
        lease_seconds=LEASE_SECONDS,
        watchdog_interval=5.0,
    )
    code = 0
    try:
        print("resumable serverless demo: an event-driven run survives a killed instance\n")
        _start_stack(stack)
        clip = _make_clip(workdir, args.frames, (width, height))
        run_id = f"demo-{uuid.uuid4().hex[:8]}"
        params = {
            "video_path": str(clip),
            "video_guid": f"clip-{run_id}",
            "output": f"gs://{BUCKET}/demo-out",
            "progress_every": args.progress_every,
        }
        engine = Engine.from_settings(Settings.from_env())
        _publish_start(stack, run_id, params)
        kill_after = args.kill_after or max(args.progress_every, args.frames // 3)
        follower = Follower(stack, engine, run_id, console, live=live, kill_after=kill_after)
        state = follower.run()
        _summary(state, follower.seen, follower.order, params)
        _compare(workdir, params)
        _folder_map(stack, engine, workdir)
    except DemoFailed as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the stack", file=sys.stderr)
        code = 130
    finally:
        _quietly(stack.down)
        shutil.rmtree(workdir, ignore_errors=True)
    if code == 0:
        print(f"\ndemo finished in {time.monotonic() - began:.1f}s (stack stopped)")
    return code


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception as exc:  # stopping must not hide the demo's outcome
        print(f"  (while stopping the stack: {exc})", file=sys.stderr)


def heading(text: str) -> None:
    print(f"\n── {text} " + "─" * max(0, 74 - len(text)))


# -- 1. the stack --------------------------------------------------------------------------


def _start_stack(stack: DevStack) -> None:
    heading("1. Start the local cloud and one function process per step")
    started = time.monotonic()
    info = stack.up()  # also applies the stack's client settings to os.environ
    steps = info["pipelines"][PIPELINE]
    print(
        f"  emulators   Pub/Sub {info['env'].get('PUBSUB_EMULATOR_HOST')}, "
        f"Firestore {info['env'].get('FIRESTORE_EMULATOR_HOST')}, "
        f"fake-gcs-server {info['env'].get('STORAGE_EMULATOR_HOST')}"
    )
    print(
        f"  functions   {len(info['functions'])} functions-framework processes "
        f"({len(steps)} steps + start, dead-letter, watchdog), pushed to by Pub/Sub"
    )
    print(f"  storage     {info['storage']}   run documents: Firestore")
    print(f"  ready in    {time.monotonic() - started:.1f}s")
    _route_stack_logs()


def _route_stack_logs() -> None:
    """The stack's own warnings (a function died and is restarted) as demo lines."""

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                _EVENTS.append(f"stack: {record.getMessage()}")

    logger.handlers.clear()
    logger.addHandler(Lines())
    logger.propagate = False


_EVENTS: list[str] = []  # lines produced on other threads, printed by the follow loop


# -- 2. clip and start ---------------------------------------------------------------------


def _make_clip(workdir: Path, frames: int, size: tuple[int, int]) -> Path:
    heading("2. Make a test clip")
    clip = make_test_clip(workdir / "clip.mp4", frames, size)
    print(f"  {clip}  {frames} frames {size[0]}x{size[1]}, {format_size(clip.stat().st_size)}")
    return clip


def _publish_start(stack: DevStack, run_id: str, params: dict[str, Any]) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

    heading("3. Start a run: publish to the start topic with the official client")
    body = {"pipeline": PIPELINE, "params": params, "run_id": run_id}
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(stack.project, f"{stack.prefix}-start")
    message_id = publisher.publish(topic, orjson.dumps(body)).result(timeout=30)
    print(f"  topic    {topic}")
    print(f"  message  {orjson.dumps(body).decode()}")
    print(f"  id       {message_id}   (same as: gcloud pubsub topics publish ... --message=...)")


# -- 4. follow, kill, resume -----------------------------------------------------------------


class Follower:
    """Polls the run document, prints what changed, and kills the step's instance."""

    def __init__(
        self, stack: DevStack, engine: Engine, run_id: str, console: Console, *, live: bool,
        kill_after: int,
    ) -> None:  # fmt: skip
        self.engine = engine
        self.doc_id = engine.doc_id("default", PIPELINE, run_id)
        self.order = engine.registry.get(PIPELINE).spec.order
        self.process = stack.step_process(PIPELINE, KILL_STEP)
        self.console = console
        self.live = live
        self.kill_after = kill_after
        self.seen = Observed()
        self.files: RunFiles | None = None
        self.last: dict[str, tuple[str, int]] = {}
        self.manifests: dict[str, tuple[int, int]] = {}  # progress manifest → (attempt, frames)
        self.started = time.monotonic()

    def say(self, line: str) -> None:
        stamp = f"{time.monotonic() - self.started:6.1f}s  "
        if self.live:
            self.console.print(stamp + line)
        else:
            print("  " + stamp + line, flush=True)

    def run(self) -> RunState:
        """Follow the run until it finishes; returns its final document."""
        heading(f"4. Follow the run; SIGKILL the {KILL_STEP} instance in the middle of it")
        deadline = self.started + RUN_DEADLINE_SECONDS
        display = Live(console=self.console, auto_refresh=False) if self.live else None
        if display is not None:
            display.start()
        try:
            while True:
                if time.monotonic() > deadline:
                    raise DemoFailed(f"the run did not finish in {RUN_DEADLINE_SECONDS:.0f}s")
                state = self.engine.runs.get(self.doc_id)
                while _EVENTS:
                    self.say(_EVENTS.pop(0))
                if state is not None:
                    self.files = self.files or self.engine.files(state)
                    self.track_progress(state)
                    self.report_changes(state)
                    if self.should_kill(state):
                        self.kill()
                    if display is not None:
                        display.update(self.table(state), refresh=True)
                    if state.finished:
                        break
                time.sleep(POLL_SECONDS)
        finally:
            if display is not None:
                display.stop()
        self.say(f"run {state.status} in {_run_seconds(state):.1f}s (first claim to last commit)")
        if self.seen.killed_pid is None:
            raise DemoFailed(f"the run finished before {KILL_STEP} was killed: use more --frames")
        self.seen.restart_seen = self.process.restarts >= 1
        return state

    def report_changes(self, state: RunState) -> None:
        for name in self.order:
            step = state.steps[name]
            now = (str(step.status), step.attempt)
            if self.last.get(name) == now:
                continue
            self.last[name] = now
            if step.status == "running":
                self.seen.owners.setdefault(step.attempt, step.lease_owner or "?")
                note = ""
                if name == KILL_STEP and step.attempt > 1:
                    self.note_resume_point(state)
                    note = (
                        f" — Pub/Sub redelivered its message; the new instance claimed it "
                        f"after attempt {step.attempt - 1}'s lease lapsed and continues from "
                        f"frame {self.seen.resumed_from}"
                    )
                self.say(f"{name} running (attempt {step.attempt}){note}")
            elif step.status == "completed":
                took = (step.finished_at or 0) - (step.started_at or 0)
                self.say(
                    f"{name} committed (attempt {step.attempt}, {took:.1f}s, "
                    f"{format_size(step.checkpoint_bytes or 0)} written)"
                )
            elif step.status in ("queued", "error", "cancelled"):
                self.say(f"{name} {step.status}" + (f": {step.error}" if step.error else ""))

    def track_progress(self, state: RunState) -> None:
        """Read the kill step's progress saves (mid-step checkpoints in Cloud Storage)."""
        if self.seen.progress_listed or self.files is None:
            return
        # Once the step has completed, one last listing catches saves made since the last poll.
        self.seen.progress_listed = state.steps[KILL_STEP].status == "completed"
        known = {(a, n) for a, ns in self.seen.saves.items() for n in ns}
        names = self.files.store.list(f"{self.files.prefix}steps/{KILL_STEP}/")
        for name in names:
            if "-progress-" in name and name not in self.manifests:
                self.manifests[name] = self.saved_frames(name)
        found = self.manifests.values()
        for attempt, frames in sorted(set(found) - known):
            self.seen.saves.setdefault(attempt, []).append(frames)
            self.seen.saves[attempt].sort()
            self.say(f"{KILL_STEP} saved progress mid-step: {frames} frames (attempt {attempt})")

    def saved_frames(self, manifest_name: str) -> tuple[int, int]:
        """(attempt, frames_next_index) of a progress manifest."""
        assert self.files is not None
        manifest = self.files.read_manifest(manifest_name)
        return manifest.attempt or 0, int(manifest.outputs["frames_next_index"]["v"])

    def should_kill(self, state: RunState) -> bool:
        """Once the step runs and has saved at least ``kill_after`` frames."""
        step = state.steps[KILL_STEP]
        return (
            self.seen.killed_pid is None
            and step.status == "running"
            and step.attempt == 1
            and step.progress_manifest is not None
            and max(self.seen.saves.get(1, [0])) >= self.kill_after
        )

    def kill(self) -> None:
        pid = self.process.pid
        if pid is None:
            raise DemoFailed(f"no function process serves {KILL_STEP}")
        os.killpg(pid, signal.SIGKILL)
        self.seen.killed_pid = pid
        self.seen.killed_attempt = 1
        self.say(f"✂ SIGKILL to the process group of {self.process.spec.name} (pid {pid})")
        time.sleep(0.3)  # let the dead instance's last request, if any, land
        state = self.engine.runs.get(self.doc_id)
        if state is not None:
            self.note_resume_point(state)
            self.say(
                f"{KILL_STEP} is still 'running' under the dead instance's lease; its saved "
                f"progress ({self.seen.resumed_from} frames) stays in the run document"
            )

    def note_resume_point(self, state: RunState) -> None:
        """The frame the next attempt starts from: the progress the run document names."""
        name = state.steps[KILL_STEP].progress_manifest
        if name and f"attempt-{self.seen.killed_attempt:04d}-" in name:
            self.seen.resumed_from = self.saved_frames(name)[1]

    def table(self, state: RunState) -> Table:
        table = Table(box=box.SIMPLE_HEAD, title=f"run {state.run_id}: {state.status}")
        for column in ("step", "status", "attempt", "time", "written", "notes"):
            table.add_column(column)
        now = time.time()
        for name in self.order:
            step = state.steps[name]
            took = ""
            if step.started_at:
                end = step.finished_at if step.status == "completed" else now
                took = f"{(end or now) - step.started_at:.1f}s"
            notes = ""
            if name == KILL_STEP and self.seen.saves:
                notes = f"{max(max(v) for v in self.seen.saves.values())} frames saved"
                if self.seen.killed_pid:
                    notes += ", 1 instance killed"
            table.add_row(
                name,
                str(step.status),
                str(step.attempt or ""),
                took,
                format_size(step.checkpoint_bytes) if step.checkpoint_bytes else "",
                notes,
            )
        return table


def _run_seconds(state: RunState) -> float:
    starts = [s.started_at for s in state.steps.values() if s.started_at]
    return (state.finished_at or time.time()) - min(starts, default=state.created_at)


# -- 5. summary and comparison ---------------------------------------------------------------


def _summary(state: RunState, seen: Observed, order: Sequence[str], params: dict[str, Any]) -> None:
    heading("5. Summary")
    problems = []
    if state.status != "completed":
        problems.append(f"the run ended {state.status!r}: {state.error}")
    print(f"  {'step':<18} {'status':<10} {'attempts':>8} {'commits':>8}")
    for name in order:
        step = state.steps[name]
        print(f"  {name:<18} {step.status!s:<10} {step.attempt:>8} {step.commits:>8}")
        if step.commits != 1:
            problems.append(f"step {name} was committed {step.commits} times, not once")
    killed = state.steps[KILL_STEP]
    resumed_from = seen.resumed_from
    next_saves = seen.saves.get(seen.killed_attempt + 1, [])
    print(
        f"\n  killed      pid {seen.killed_pid} in {KILL_STEP} attempt {seen.killed_attempt}, "
        f"after saving progress up to frame {resumed_from}"
    )
    print(f"  restarted   the stack started a new instance: {'yes' if seen.restart_seen else 'NO'}")
    owners = seen.owners
    print(
        f"  redelivered attempt {killed.attempt} ran on instance "
        f"{owners.get(killed.attempt, '?')} (attempt 1 on {owners.get(1, '?')})"
    )
    if next_saves:
        print(
            f"  resumed     attempt {seen.killed_attempt + 1} continued from frame "
            f"{resumed_from} (first progress save: {next_saves[0]} frames), not frame 0"
        )
    if not seen.restart_seen:
        problems.append("the killed function was not restarted")
    if killed.attempt != seen.killed_attempt + 1:
        problems.append(f"{KILL_STEP} took {killed.attempt} attempts, expected 2")
    if resumed_from is None:
        problems.append(f"no saved progress of {KILL_STEP} was found after the kill")
    elif next_saves and next_saves[0] <= resumed_from:
        problems.append(f"attempt 2 of {KILL_STEP} started over instead of resuming")
    guid = params["video_guid"]
    files = read_dataset(params["output"], guid)
    images = len(files) - (MANIFEST in files)
    print(f"  dataset     {params['output']}/datasets/{guid}/  ({images} images + {MANIFEST})")
    if MANIFEST not in files or images == 0:
        problems.append("the dataset is missing or empty")
    if problems:
        raise DemoFailed("; ".join(problems))


def _compare(workdir: Path, params: dict[str, Any]) -> None:
    heading("6. Compare with an in-process run of the same pipeline on the same clip")
    output = workdir / "in-process-out"
    started = time.monotonic()
    result = dataprep.build(str(workdir / "in-process-store")).run(
        {**params, "output": str(output)}
    )
    if result["status"] != "completed":
        raise DemoFailed(f"the in-process run ended {result['status']!r}: {result['errors']}")
    guid = params["video_guid"]
    served, expected = read_dataset(params["output"], guid), read_dataset(output, guid)
    differ = sorted(n for n in served.keys() | expected.keys() if served.get(n) != expected.get(n))
    print(f"  in-process run: {time.monotonic() - started:.1f}s, {len(expected)} files in {output}")
    print(
        f"  identical: {'yes' if not differ else 'NO'} ({len(served)} files compared byte for byte)"
    )
    if differ:
        raise DemoFailed(f"{len(differ)} file(s) differ, e.g. {differ[:3]}")


# -- 7. a map step, one item's instance killed -------------------------------------------------


def _folder_map(stack: DevStack, engine: Engine, workdir: Path) -> None:
    from examples.dataprep import folder
    from resumable.serverless._map_status import item_summaries
    from resumable.storage import open_store

    heading("7. A map over a folder of clips; the instance of one item killed")
    bucket = open_store(f"gs://{BUCKET}")
    for name, frames in FOLDER_CLIPS.items():
        clip = make_test_clip(workdir / f"{name}.mp4", frames, (320, 240), seed=len(name))
        bucket.write(f"demo-clips/{name}.mp4", clip.read_bytes())
    params = {"clips": f"gs://{BUCKET}/demo-clips/", "output": f"gs://{BUCKET}/demo-folder-out"}
    print(f"  {len(FOLDER_CLIPS)} clips in gs://{BUCKET}/demo-clips/ (clip-long: 240 frames)")
    run_id = f"folder-{uuid.uuid4().hex[:8]}"
    body = {"pipeline": folder.PIPELINE_NAME, "params": params, "run_id": run_id}
    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(stack.project, f"{stack.prefix}-start")
    publisher.publish(topic, orjson.dumps(body)).result(timeout=30)
    doc_id = engine.doc_id("default", folder.PIPELINE_NAME, run_id)
    deadline = time.monotonic() + RUN_DEADLINE_SECONDS
    killed = False
    last = ""
    state = None
    attempts: dict[int, int] = {}  # item -> claims, read while the run's documents exist
    while time.monotonic() < deadline:
        state = engine.runs.get(doc_id)
        if state is None:
            time.sleep(POLL_SECONDS)
            continue
        map_id = state.steps[MAP_STEP].map_id
        if map_id and not state.finished:
            seen = {i: item.attempt for i, item in engine.maps.items(doc_id, map_id)}
            attempts = seen if len(seen) >= len(attempts) else attempts
        items = item_summaries(engine, state).get(MAP_STEP)
        if items is not None:
            line = f"items: {items.completed}/{items.total} completed, {items.running} running"
            if line != last:
                print(f"  {line}")
                last = line
            if not killed and items.completed == len(FOLDER_CLIPS) - 1 and items.running == 1:
                pid = stack.step_process(folder.PIPELINE_NAME, MAP_STEP).pid
                assert pid is not None
                os.killpg(pid, signal.SIGKILL)
                killed = True
                print(f"  SIGKILL pid {pid}: the instance processing clip-long")
        if state.finished:
            break
        time.sleep(POLL_SECONDS)
    if state is None or not state.finished:
        raise DemoFailed(f"the folder run did not finish in {RUN_DEADLINE_SECONDS:.0f}s")
    if state.status != "completed":
        raise DemoFailed(f"the folder run ended {state.status!r}: {state.error}")
    if not killed:
        raise DemoFailed("the map finished before its last item could be killed")
    # The run's checkpoints and item documents are deleted once it completed (the folder
    # pipeline's cleanup_on_success): the claims were read while it ran, the datasets stay.
    print(f"  claims per item: {attempts}   (clip-long ran twice, the others once)")
    manifests = [n for n in bucket.list("demo-folder-out/datasets/") if n.endswith(MANIFEST)]
    print(f"  datasets: {len(manifests)} in {params['output']}/datasets/ (one per clip)")
    if len(manifests) != len(FOLDER_CLIPS):
        raise DemoFailed(f"expected {len(FOLDER_CLIPS)} datasets, found {len(manifests)}")
    if attempts != {0: 1, 1: 1, 2: 1, 3: 2}:
        raise DemoFailed(f"expected only clip-long to run again, got claims {attempts}")


if __name__ == "__main__":
    sys.exit(main())
