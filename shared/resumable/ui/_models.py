"""What the pages show, independent of where a run lives.

A run source (serverless run documents, or in-process checkpoints in a storage folder)
turns what it stores into these plain records; the views render only these. Times are
epoch seconds, sizes bytes; status words are the library's (``resumable.status``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

RUN_STATUSES = ("running", "completed", "error", "cancelled")
FINISHED = frozenset({"completed", "error", "cancelled"})

Side = Literal["input", "output"]


@dataclass(frozen=True)
class RunKey:
    """Where a run is: its tenant, pipeline and id (the path of its pages)."""

    tenant: str
    pipeline: str
    run_id: str

    @property
    def path(self) -> str:
        return f"/runs/{self.tenant}/{self.pipeline}/{self.run_id}"


@dataclass(frozen=True)
class RunRow:
    """One line of the runs page."""

    key: RunKey
    status: str
    created_at: float | None
    finished_at: float | None
    steps_completed: int
    steps_total: int
    error: str | None = None
    cancel_requested: bool = False


@dataclass(frozen=True)
class RunFilter:
    """The runs page's filters; ``search`` is a run id or the start of one."""

    pipeline: str | None = None
    status: str | None = None
    search: str | None = None


@dataclass(frozen=True)
class RunList:
    """One page of runs, newest first, and what paging on needs."""

    rows: list[RunRow]
    counts: dict[str, int]  # per status word, under the filter's pipeline
    pipelines: list[str]  # for the pipeline filter
    next_cursor: str | None = None  # where the next page starts; None: last page


@dataclass(frozen=True)
class ItemCounts:
    """The items of a map step (shown once map steps exist)."""

    total: int
    completed: int
    failed: int
    running: int = 0
    failed_items: list[str] = field(default_factory=list)


@dataclass
class StepView:
    """One step of a run: its place in the graph and what its attempts did."""

    name: str
    status: str
    dependencies: list[str]
    description: str = ""
    attempt: int = 0  # attempts so far (serverless: the fencing token)
    failures: int = 0  # attempts that raised
    queued_at: float | None = None
    started_at: float | None = None  # of the latest attempt
    finished_at: float | None = None
    checkpoint_bytes: int | None = None
    progress_saves: int | None = None  # None: not known for this kind of run
    last_progress_at: float | None = None
    output_keys: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    has_output: bool = False  # its output checkpoint can be browsed
    items: ItemCounts | None = None  # map steps only
    # Every attempt's span (start, end or None while it runs, how it ended), oldest first,
    # where the run keeps them (serverless); else the latest attempt is drawn.
    spans: list[tuple[float, float | None, str]] = field(default_factory=list)

    def duration(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.status != "running" else now
        return None if end is None else max(end - self.started_at, 0.0)


@dataclass
class RunView:
    """Everything the run page shows."""

    key: RunKey
    kind: Literal["serverless", "in-process"]
    status: str
    steps: list[StepView]  # in graph order
    created_at: float | None = None
    updated_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    cancel_requested: bool = False
    generation: int = 0
    revision: str = ""  # changes whenever anything shown changes
    graph_known: bool = True  # the pipeline's code was loadable: edges are real
    run_folder: str = ""
    trace_id: str | None = None  # the run's OpenTelemetry trace (serverless runs)
    trace_url: str | None = None
    log_filter: str | None = None
    notes: list[str] = field(default_factory=list)
    # What the page may offer; a source that cannot steer its runs offers nothing.
    can_cancel: bool = False
    can_resume: bool = False
    can_resume_from: bool = False

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def step(self, name: str) -> StepView | None:
        return next((s for s in self.steps if s.name == name), None)


@dataclass(frozen=True)
class ValueView:
    """One key of a checkpointed context."""

    key: str
    type: str
    stored_bytes: int | None = None  # as stored (compressed, shared blobs counted once)
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    nbytes: int | None = None  # in memory
    length: int | None = None
    preview: str | None = None  # small values, as JSON (cut)
    image: bool = False  # a uint8 H×W or H×W×3 array: a thumbnail is served
    deleted: bool = False  # the step removed the key


@dataclass(frozen=True)
class CheckpointView:
    """A step's input or output context."""

    key: RunKey
    step: str
    side: Side
    values: list[ValueView]
    built_from: list[str] = field(default_factory=list)  # input: the steps it composes
    manifest: str | None = None  # output: the manifest object read
    note: str | None = None


class RunSource(Protocol):
    """Where the pages get runs from: a serverless deployment or a checkpoint folder.

    Reads raise the library's errors (``ResumableError``) for what a user can act on;
    actions return a sentence saying what was done.
    """

    kind: str
    can_start: bool
    description: str

    def pipelines(self) -> list[str]: ...

    def list_runs(self, wanted: RunFilter, *, cursor: str | None, limit: int) -> RunList: ...

    def run(self, key: RunKey) -> RunView | None: ...

    def traceback(self, key: RunKey, step: str) -> str | None: ...

    def checkpoint(self, key: RunKey, step: str, side: Side) -> CheckpointView: ...

    def value(self, key: RunKey, step: str, side: Side, name: str) -> Any: ...

    def cancel(self, key: RunKey) -> str: ...

    def resume(self, key: RunKey, from_step: str | None) -> str: ...

    def start(self, pipeline: str, params: dict[str, Any], run_id: str | None) -> RunKey: ...
