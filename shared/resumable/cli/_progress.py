"""How a run shows its progress: a live table on a terminal, one line per event elsewhere.

Both displays consume :class:`~resumable.RunEvent` objects (``Pipeline.run(on_event=...)``)
and may be fed from step worker threads. A display never influences the run: the runner
ignores errors raised by event handlers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TextIO

from rich import box
from rich.console import Console, RenderableType
from rich.live import Live
from rich.logging import RichHandler
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from resumable._log import logger
from resumable.definition._spec import PipelineSpec
from resumable.local._events import RunEvent
from resumable.status import StepStatus


@dataclass
class StepRow:
    """What the events said so far about one step."""

    description: str
    status: str = StepStatus.NOT_STARTED.value
    attempts: int = 0
    started: float | None = None
    duration: float | None = None
    checkpoint_bytes: int = 0
    progress_saves: int = 0

    def elapsed(self, now: float) -> float | None:
        if self.duration is not None:
            return self.duration
        return now - self.started if self.started is not None else None


class RunBoard:
    """The state of one run as its events describe it; thread-safe."""

    def __init__(
        self, spec: PipelineSpec, *, run_id: str, run_folder: str, resume_requested: bool
    ) -> None:
        self.pipeline = spec.name
        self.run_id = run_id
        self.run_folder = run_folder
        self.resume_requested = resume_requested
        self.steps = {name: StepRow(spec.steps[name].description) for name in spec.order}
        self.status = "starting"
        self.started = time.monotonic()
        self.finished: float | None = None
        self.checkpoint_bytes = 0
        self.lock = threading.Lock()

    def record(self, event: RunEvent) -> str:
        """Apply ``event`` and describe it in one line."""
        with self.lock:
            return self._record(event)

    def _record(self, event: RunEvent) -> str:
        now = time.monotonic()
        if event.kind == "run_started":
            return self._run_started(event, now)
        if event.kind == "run_finished":
            return self._run_finished(event, now)
        if event.kind.startswith("checkpoint"):
            return self._checkpoint(event)
        row = self.steps.get(event.step or "")
        if row is None:
            return f"{event.kind} {event.detail}".strip()
        return self._step_event(event, row, now)

    def _run_started(self, event: RunEvent, now: float) -> str:
        self.status = "running"
        self.started = now
        if event.detail == "resumed":
            how = "resumed from its checkpoint"
        elif self.resume_requested:
            how = "started from the beginning (no checkpoint to resume)"
        else:
            how = "started"
        return f"run {self.run_id} of {self.pipeline} {how}; checkpoints in {self.run_folder}"

    def _run_finished(self, event: RunEvent, now: float) -> str:
        self.status = event.detail
        self.finished = now
        if event.detail == "cancelled":  # as the run's result records them
            for waiting in self.steps.values():
                if waiting.status == StepStatus.NOT_STARTED.value:
                    waiting.status = StepStatus.CANCELLED.value
        return f"run {self.run_id} {event.detail} after {now - self.started:.2f}s"

    def _step_event(self, event: RunEvent, row: StepRow, now: float) -> str:
        attempt = f"attempt {event.attempt}"
        row.attempts = max(row.attempts, event.attempt or 0)
        if event.kind == "step_started":
            row.status, row.started, row.duration = StepStatus.RUNNING.value, now, None
            return f"step {event.step} started ({attempt})"
        if event.kind == "step_skipped":
            row.status = StepStatus.SKIPPED.value
            return f"step {event.step} skipped: completed before, not run again"
        if event.kind == "step_retrying":
            return f"step {event.step} failed ({attempt}), retrying: {event.detail}"
        row.duration = row.elapsed(now)
        took = f"{row.duration:.2f}s" if row.duration is not None else "?"
        if event.kind == "step_completed":
            row.status = StepStatus.COMPLETED.value
            return f"step {event.step} completed in {took} ({attempt})"
        if event.kind == "step_failed":
            row.status = StepStatus.ERROR.value
            return f"step {event.step} failed after {took} ({attempt}): {event.detail}"
        return f"step {event.step}: {event.kind} {event.detail}".strip()

    def _checkpoint(self, event: RunEvent) -> str:
        if event.kind == "checkpoint_failed":
            return f"checkpoint failed: {event.detail}"
        written = event.bytes_written or 0
        self.checkpoint_bytes += written
        row = self.steps.get(event.step or "")
        progress = event.checkpoint == "progress" and row is not None
        if row is not None:
            row.checkpoint_bytes += written
            row.progress_saves += progress
        owner = event.step
        new = f"+{format_size(written)} in new blobs" if written else "no new blobs"
        what = f"checkpoint {event.detail} saved ({new})"
        return f"step {owner}: progress {what}" if progress else what

    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started


class Progress(Protocol):
    """A display for one run; use as a context manager around ``Pipeline.run``."""

    def __enter__(self) -> Progress: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def handle(self, event: RunEvent) -> None:
        """The ``on_event`` handler to give ``Pipeline.run``."""

    def note(self, message: str) -> None:
        """Show a message from the caller (e.g. "stop requested")."""

    def finish(self, lines: list[str]) -> None:
        """Show the closing summary, after the context has exited."""


class PlainProgress:
    """One line per event on ``stream`` (flushed at once, so pipes see it live)."""

    def __init__(self, board: RunBoard, stream: TextIO) -> None:
        self.board = board
        self.stream = stream
        self._early: list[str] = []

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def handle(self, event: RunEvent) -> None:
        line = self.board.record(event)
        # A resumed run reports its skipped steps before it reports that it started.
        if event.kind == "step_skipped" and self.board.status == "starting":
            self._early.append(line)
            return
        self.note(line)
        if event.kind == "run_started":
            for early in self._early:
                self.note(early)
            self._early.clear()

    def note(self, message: str) -> None:
        self.stream.write(message + "\n")
        self.stream.flush()

    def finish(self, lines: list[str]) -> None:
        for line in lines:
            self.note(line)


class LiveProgress:
    """A table of the run's steps, redrawn in place on a terminal.

    While it is shown, records of the ``resumable`` logger print above the table instead
    of through their usual handlers, so that they do not tear it.
    """

    def __init__(self, board: RunBoard, console: Console) -> None:
        self.board = board
        self.console = console
        self._spinners: dict[str, Spinner] = {}
        self._live = Live(
            console=console, get_renderable=self.render, refresh_per_second=8, transient=False
        )
        self._stack = ExitStack()

    def __enter__(self) -> LiveProgress:
        self._stack.enter_context(_logs_through(self.console))
        self._stack.enter_context(self._live)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.__exit__(kind, exc, tb)

    def handle(self, event: RunEvent) -> None:
        self.board.record(event)
        self._live.refresh()

    def note(self, message: str) -> None:
        self.console.print(message, style="bold yellow")

    def finish(self, lines: list[str]) -> None:
        for line in lines:
            self.console.print(line, highlight=False, soft_wrap=True)

    def render(self) -> RenderableType:
        board = self.board
        with board.lock:
            now = time.monotonic()
            table = Table(
                title=f"[bold]{board.pipeline}[/] · run {board.run_id}",
                caption=(
                    f"{board.status} · {board.elapsed():.1f}s · "
                    f"{format_size(board.checkpoint_bytes)} checkpointed · {board.run_folder}"
                ),
                box=box.SIMPLE_HEAD,
                title_justify="left",
                caption_justify="left",
            )
            # Fixed minimum widths: only the description gives way on a narrow terminal.
            longest = max(len(name) for name in board.steps)
            table.add_column("step", style="bold", no_wrap=True, min_width=longest)
            table.add_column("status", no_wrap=True, min_width=11)
            table.add_column("attempts", justify="right", no_wrap=True, min_width=8)
            table.add_column("duration", justify="right", no_wrap=True, min_width=8)
            table.add_column("checkpoint", justify="right", no_wrap=True, min_width=17)
            table.add_column("", style="dim", overflow="ellipsis", no_wrap=True)
            for name, row in board.steps.items():
                took = row.elapsed(now)
                saved = format_size(row.checkpoint_bytes) if row.checkpoint_bytes else ""
                if row.progress_saves:
                    saved = f"{row.progress_saves} saves, {format_size(row.checkpoint_bytes)}"
                table.add_row(
                    name,
                    self._status_cell(name, row.status),
                    str(row.attempts) if row.attempts else "",
                    f"{took:.1f}s" if took is not None else "",
                    saved,
                    row.description,
                )
            return table

    def _status_cell(self, step: str, status: str) -> RenderableType:
        if status == StepStatus.RUNNING.value:
            spinner = self._spinners.setdefault(
                step, Spinner("dots", text=Text("running", style="yellow"), style="yellow")
            )
            return spinner
        self._spinners.pop(step, None)
        return Text(*_STATUS_LOOK.get(status, (status, "")))


_STATUS_LOOK: Mapping[str, tuple[str, str]] = {
    "not_started": ("· waiting", "dim"),
    "completed": ("✓ completed", "green"),
    "skipped": ("↷ skipped", "cyan"),
    "error": ("✗ error", "bold red"),
    "cancelled": ("⊘ cancelled", "magenta"),
}


@contextmanager
def _logs_through(console: Console) -> Iterator[None]:
    handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
    saved = list(logger.handlers)
    logger.handlers = [handler]
    try:
        yield
    finally:
        logger.handlers = saved


def open_progress(
    spec: PipelineSpec,
    *,
    run_id: str,
    run_folder: str,
    resume_requested: bool,
    live: bool,
    stream: TextIO,
) -> Progress:
    """A live table on ``stream`` if ``live`` (a terminal), else plain lines."""
    board = RunBoard(spec, run_id=run_id, run_folder=run_folder, resume_requested=resume_requested)
    if live:
        return LiveProgress(board, Console(file=stream))
    return PlainProgress(board, stream)


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """What a run (``Pipeline.run``'s result) did, in a few lines."""
    lines = []
    if result.get("steps_completed"):
        lines.append("ran: " + ", ".join(result["steps_completed"]))
    if result.get("steps_skipped"):
        lines.append("skipped (completed before): " + ", ".join(result["steps_skipped"]))
    lines += [f"error: {message}" for message in result.get("errors", [])]
    lines += [f"warning: {message}" for message in result.get("warnings", [])]
    return lines


def format_size(size: int) -> str:
    """``1536`` → ``"1.5 KB"`` (powers of 1024)."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
