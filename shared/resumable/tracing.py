"""OpenTelemetry traces of serverless runs: one trace per run, across all its functions.

Off unless ``RESUMABLE_TRACES`` is set (then the ``trace`` extra must be installed):

- ``gcp`` — to Cloud Trace (opentelemetry-exporter-gcp-trace), in batches flushed at the
  end of every delivery (an idle Cloud Run instance may get no CPU afterwards);
- ``console`` — one JSON object per span on stderr;
- ``file:DIR`` — one JSON object per line in ``DIR/spans-{pid}.jsonl``, one file per
  process (what the tests read back).

Off, every function here does nothing and costs a context-variable read.

**One trace per run.** A run's trace id is derived from its tenant, pipeline and run id
(:func:`run_trace_id`), so every span about a run lands in that run's trace — also the
spans of a delivery whose message carries no trace context (one published by a process
that does not trace, as ``resumable resume`` on a laptop), and the UI can link a run to
its trace without storing anything. Step messages carry the W3C ``traceparent`` of the
span that published them in their Pub/Sub attributes, so a step's spans are children of
the publishing step's (or the start's) spans.

**Spans.** ``start run`` in the start function; ``step {name}`` for each delivery of a
step message, with the claim, load, run, write, commit and publish stages as children
(:func:`stage`). Attributes: ``resumable.run_id``, ``.pipeline``, ``.tenant_id``,
``.step``, ``.attempt``, ``.generation``, ``.outcome``. Log lines written inside a span
carry its trace and span ids in the fields Cloud Logging links to Cloud Trace
(``logging.googleapis.com/trace``, ``spanId``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import logging
import os
import random
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from resumable._log import logger

ENV = "RESUMABLE_TRACES"
SAMPLE_ENV = "RESUMABLE_TRACE_SAMPLE"  # the fraction of runs traced (default 1)
TRACEPARENT = "traceparent"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

F = TypeVar("F", bound=Callable[..., Any])


class RunIds(Protocol):
    """What names a run: a message or a run document."""

    @property
    def tenant_id(self) -> str:
        """The run's tenant."""
        ...

    @property
    def pipeline(self) -> str:
        """The run's pipeline."""
        ...

    @property
    def run_id(self) -> str:
        """The run's id."""
        ...


@dataclass(frozen=True)
class RunRef:
    """A run named by its three ids (a :class:`RunIds`)."""

    tenant_id: str
    pipeline: str
    run_id: str


def started_run(message: Any, message_id: str | None) -> RunRef:
    """The run a start message starts, named as ``resumable.control.start_run`` names it
    (without a ``run_id``, after the Pub/Sub message id)."""
    run_id = message.run_id or (f"run-{message_id}" if message_id else "unnamed")
    return RunRef(message.tenant_id or "default", message.pipeline, run_id)


def run_trace_id(tenant_id: str, pipeline: str, run_id: str) -> int:
    """The 128-bit trace id of a run: the same in every process, never 0."""
    digest = hashlib.blake2b(f"{tenant_id}~{pipeline}~{run_id}".encode(), digest_size=16)
    return int.from_bytes(digest.digest(), "big") or 1


def trace_hex(tenant_id: str, pipeline: str, run_id: str) -> str:
    """:func:`run_trace_id` as Cloud Trace and the W3C headers write it."""
    return f"{run_trace_id(tenant_id, pipeline, run_id):032x}"


# -- configuration --------------------------------------------------------------------------

_tracer: Any = None  # the OpenTelemetry tracer, when configured
_provider: Any = None
_flush_each_delivery = False
_forced_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "resumable_trace_id", default=None
)


def enabled() -> bool:
    """Whether traces are written (``RESUMABLE_TRACES`` set and configured)."""
    return _tracer is not None


def configure(
    project: str | None = None,
    *,
    setting: str | None = None,
    exporter: Any = None,
    service: str | None = None,
) -> bool:
    """Set tracing up from ``RESUMABLE_TRACES`` (or ``setting``, or an ``exporter`` given
    directly, spans then exported synchronously); returns whether traces are on.
    Idempotent; an unusable setting is logged and leaves tracing off."""
    global _tracer, _provider, _flush_each_delivery
    setting = os.environ.get(ENV, "") if setting is None else setting
    if exporter is None and not setting.strip():
        return enabled()
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError:
        logger.warning(f"{ENV}={setting!r} needs the trace extra: pip install 'resumable[trace]'")
        return False
    if exporter is None:
        try:
            exporter, batched = _exporter(setting.strip(), project)
        except (ValueError, ImportError, OSError) as exc:
            logger.warning(f"{ENV}={setting!r} not usable, traces are off: {exc}")
            return False
    else:
        batched = False
    name = service or os.environ.get("K_SERVICE") or _default_service()
    provider = TracerProvider(
        resource=Resource.create({"service.name": name, "process.pid": os.getpid()}),
        sampler=ParentBased(TraceIdRatioBased(float(os.environ.get(SAMPLE_ENV) or 1.0))),
        id_generator=_run_trace_ids(),
    )
    processor = BatchSpanProcessor(exporter) if batched else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    if _provider is not None:
        _provider.shutdown()
    _provider, _flush_each_delivery = provider, batched
    _tracer = provider.get_tracer("resumable")
    if not any(isinstance(f, _TraceFields) for f in logger.filters):
        logger.addFilter(_TraceFields(project))
    return True


def shutdown() -> None:
    """Export what is pending and turn traces off (tests; a process exits anyway)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None
    for found in [f for f in logger.filters if isinstance(f, _TraceFields)]:
        logger.removeFilter(found)


def _default_service() -> str:
    step = os.environ.get("RESUMABLE_STEP")
    return f"resumable-{step}" if step else "resumable"


def _exporter(setting: str, project: str | None) -> tuple[Any, bool]:
    """The exporter a setting names, and whether it is exported in batches."""
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    if setting in ("gcp", "cloud-trace"):
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

        exporter = CloudTraceSpanExporter(project_id=project or None)  # type: ignore[no-untyped-call]
        return exporter, True
    if setting == "console":
        return ConsoleSpanExporter(out=sys.stderr, formatter=_one_line), False
    if setting.startswith("file:"):
        folder = setting.removeprefix("file:")
        os.makedirs(folder, exist_ok=True)
        stream = open(  # noqa: SIM115 - the exporter owns it for the process's life
            os.path.join(folder, f"spans-{os.getpid()}.jsonl"), "a", buffering=1
        )
        return ConsoleSpanExporter(out=stream, formatter=_one_line), False
    raise ValueError("use gcp, console or file:DIR")


def _one_line(span: Any) -> str:
    return str(span.to_json(indent=None)) + "\n"


def _run_trace_ids() -> Any:
    """Random ids, except the trace id of a span opened for a run without a parent."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class RunTraceIds(IdGenerator):
        def generate_span_id(self) -> int:
            return random.getrandbits(64) or 1

        def generate_trace_id(self) -> int:
            return _forced_trace_id.get() or random.getrandbits(128) or 1

    return RunTraceIds()


class _TraceFields(logging.Filter):
    """Give log records the current span's ids, as Cloud Logging wants them."""

    def __init__(self, project: str | None) -> None:
        super().__init__()
        self.project = project

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            trace_id = f"{context.trace_id:032x}"
            record.trace = (
                f"projects/{self.project}/traces/{trace_id}" if self.project else trace_id
            )
            record.span_id = f"{context.span_id:016x}"
            record.trace_sampled = context.trace_flags.sampled
        return True


# -- spans --------------------------------------------------------------------------------------


def _parent(ids: RunIds, attributes: Mapping[str, str]) -> Any:
    """The context a delivery's span starts from: the publisher's span when the message
    carries one of the run's trace, else none (the span then opens the run's trace)."""
    from opentelemetry import trace

    match = _TRACEPARENT.match(attributes.get(TRACEPARENT, ""))
    if not match or int(match.group(1), 16) != run_trace_id(
        ids.tenant_id, ids.pipeline, ids.run_id
    ):
        return None
    parent = trace.SpanContext(
        trace_id=int(match.group(1), 16),
        span_id=int(match.group(2), 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(match.group(3), 16)),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


class Delivery:
    """The span of one delivery (or a stand-in when traces are off)."""

    def __init__(self, span: Any = None) -> None:
        self.span = span

    def set(self, **values: Any) -> None:
        """Set ``resumable.KEY`` attributes on the span (``None`` values skipped)."""
        if self.span is not None:
            for key, value in values.items():
                if value is not None:
                    self.span.set_attribute(f"resumable.{key}", value)


@contextlib.contextmanager
def run_span(
    name: str, ids: RunIds, attributes: Mapping[str, str] | None = None, **values: Any
) -> Iterator[Delivery]:
    """A span about run ``ids``, in the run's trace: a child of the ``traceparent`` in
    ``attributes`` when it belongs to that trace. Flushed at the end when exported in
    batches."""
    if _tracer is None:
        yield Delivery()
        return
    forced = _forced_trace_id.set(run_trace_id(ids.tenant_id, ids.pipeline, ids.run_id))
    try:
        with _tracer.start_as_current_span(name, context=_parent(ids, attributes or {})) as span:
            delivery = Delivery(span)
            delivery.set(
                run_id=ids.run_id, pipeline=ids.pipeline, tenant_id=ids.tenant_id, **values
            )
            yield delivery
    finally:
        _forced_trace_id.reset(forced)
        if _flush_each_delivery and _provider is not None:
            _provider.force_flush(timeout_millis=5000)


def annotate(**values: Any) -> None:
    """Set attributes (``resumable.{name}``) on the current span, if any."""
    if _tracer is None:
        return
    from opentelemetry import trace

    Delivery(trace.get_current_span()).set(**values)


def stage(name: str) -> Callable[[F], F]:
    """Decorate a stage of the step protocol: a child span ``name`` while it runs."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def traced(*args: Any, **kwargs: Any) -> Any:
            if _tracer is None:
                return function(*args, **kwargs)
            with _tracer.start_as_current_span(name):
                return function(*args, **kwargs)

        return cast(F, traced)

    return decorate


def inject(ids: RunIds, attributes: dict[str, str]) -> dict[str, str]:
    """``attributes`` plus the current span's ``traceparent``, when it is a span of run
    ``ids``'s trace (a message published elsewhere carries none)."""
    if _tracer is None:
        return attributes
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid and context.trace_id == run_trace_id(
        ids.tenant_id, ids.pipeline, ids.run_id
    ):
        flags = int(context.trace_flags)
        attributes[TRACEPARENT] = f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
    return attributes
