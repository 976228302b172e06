"""Logging: one ``resumable`` logger whose records carry run id, step and attempt.

Records are plain ``logging`` records with extra fields (``run_id``, ``step``,
``attempt``, ``pipeline``). :class:`JsonFormatter` writes them as one JSON object per line
with a ``severity`` field, the structured form Cloud Logging parses from a container's
standard output; verbose mode, as in the original, prints readable lines at DEBUG level.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

logger = logging.getLogger("resumable")

_FIELDS = ("pipeline", "run_id", "step", "attempt", "tenant_id", "sequence")


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call, dropping unset fields."""
    return {k: v for k, v in values.items() if v is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, in the shape Cloud Logging's agent parses."""

    converter = staticmethod(time.gmtime)  # the "Z" of the time stamps means UTC: make it true

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
        }
        labels = {}
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
                labels[name] = str(value)
        if labels:
            entry["logging.googleapis.com/labels"] = labels
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class _ReadableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        where = " ".join(
            f"{name}={getattr(record, name)}"
            for name in ("run_id", "step", "attempt")
            if getattr(record, name, None) is not None
        )
        line = f"{record.levelname:<7} {record.getMessage()}"
        if where:
            line += f"  [{where}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(*, verbose: bool = False, json: bool = False) -> None:
    """Send the ``resumable`` logger to stderr (idempotent). ``verbose`` shows DEBUG."""
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(logger.handlers):
        if getattr(handler, "_resumable", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else _ReadableFormatter())
    handler._resumable = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False


class _CloudFields(logging.Filter):
    """Copy our fields into the ``json_fields`` and ``labels`` Cloud Logging reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        values = {n: getattr(record, n) for n in _FIELDS if getattr(record, n, None) is not None}
        if values:
            record.json_fields = {**getattr(record, "json_fields", {}), **values}
            record.labels = {
                **getattr(record, "labels", {}),
                **{k: str(v) for k, v in values.items()},
            }
        return True


def configure_cloud_logging(*, verbose: bool = False) -> None:
    """Structured JSON lines on stdout through google-cloud-logging's
    ``StructuredLogHandler`` (the form Cloud Run forwards to Cloud Logging), with
    ``run_id``, ``step`` and ``attempt`` as fields and labels. Falls back to
    :class:`JsonFormatter` when google-cloud-logging is not installed."""
    try:
        from google.cloud.logging_v2.handlers import StructuredLogHandler
    except ImportError:
        configure_logging(verbose=verbose, json=True)
        return
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(logger.handlers):
        if getattr(handler, "_resumable", False):
            logger.removeHandler(handler)
    cloud = StructuredLogHandler(stream=sys.stdout)  # type: ignore[no-untyped-call]
    # On the logger, not the handler: it must run before the handler's own filter reads
    # the record's labels.
    if not any(isinstance(f, _CloudFields) for f in logger.filters):
        logger.addFilter(_CloudFields())
    cloud._resumable = True  # type: ignore[attr-defined]
    logger.addHandler(cloud)
    logger.propagate = False
