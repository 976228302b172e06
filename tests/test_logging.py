"""Logs are structured JSON lines that Cloud Logging parses: severity, message, run id,
step and attempt as fields and labels."""

from __future__ import annotations

import io
import json
import logging

import pytest

from resumable import _log as log


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    stream = io.StringIO()
    monkeypatch.setattr(log.sys, "stdout", stream)
    log.configure_cloud_logging()
    yield stream
    for handler in list(log.logger.handlers):
        log.logger.removeHandler(handler)
    log.logger.propagate = True


def _entries(stream: io.StringIO) -> list[dict[str, object]]:
    """Our lines (the handler also writes one line about itself first)."""
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [e for e in lines if "message" in e]


def test_cloud_log_lines_carry_severity_run_step_and_attempt(captured: io.StringIO) -> None:
    log.logger.warning(
        "step b raised", extra=log.fields(run_id="r-1", step="b", attempt=2, pipeline="p")
    )
    entry = _entries(captured)[-1]
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "step b raised"
    assert (entry["run_id"], entry["step"], entry["attempt"]) == ("r-1", "b", 2)
    assert entry["logging.googleapis.com/labels"]["run_id"] == "r-1"


def test_errors_keep_their_traceback(captured: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        log.logger.exception("failed", extra=log.fields(run_id="r-2"))
    entry = _entries(captured)[-1]
    assert entry["severity"] == "ERROR" and "ValueError: boom" in entry["message"]


def test_the_fallback_formatter_writes_the_same_fields() -> None:
    record = logging.LogRecord("resumable", logging.INFO, __file__, 1, "hello", None, None)
    record.run_id, record.step = "r-3", "a"
    entry = json.loads(log.JsonFormatter().format(record))
    assert entry["severity"] == "INFO" and entry["run_id"] == "r-3" and entry["step"] == "a"


def test_the_fallback_formatters_time_is_utc_as_its_z_says() -> None:
    import datetime as dt

    record = logging.LogRecord("resumable", logging.INFO, __file__, 1, "hello", None, None)
    record.created = 1_800_000_000.5  # 2027-01-15T08:00:00.500Z
    record.msecs = 500
    entry = json.loads(log.JsonFormatter().format(record))
    assert entry["time"] == "2027-01-15T08:00:00.500Z"
    parsed = dt.datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    assert parsed.timestamp() == record.created
