"""Logs are structured JSON lines that Cloud Logging parses: severity, message, run id,
step and attempt as fields and labels."""

from __future__ import annotations

import io
import json
import logging
import sys
from types import SimpleNamespace

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


@pytest.fixture
def restore_logger() -> object:
    """Leave the ``resumable`` logger as the test found it."""
    handlers, filters = list(log.logger.handlers), list(log.logger.filters)
    level, propagate = log.logger.level, log.logger.propagate
    yield log.logger
    log.logger.handlers[:] = handlers
    log.logger.filters[:] = filters
    log.logger.setLevel(level)
    log.logger.propagate = propagate


def _streams(monkeypatch: pytest.MonkeyPatch, **streams: io.StringIO) -> None:
    """The logging module's stdout and stderr, not the process's (other threads')."""
    monkeypatch.setattr(
        log, "sys", SimpleNamespace(**{"stdout": sys.stdout, "stderr": sys.stderr, **streams})
    )


def _ours() -> list[logging.Handler]:
    return [h for h in log.logger.handlers if getattr(h, "_resumable", False)]


def test_verbose_readable_lines_name_run_step_attempt_and_keep_the_traceback(
    restore_logger: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    _streams(monkeypatch, stderr=stream)
    log.configure_logging(verbose=True)
    log.logger.debug("loading", extra=log.fields(run_id="r-4", step="b", attempt=1))
    log.logger.info("no fields")
    try:
        raise KeyError("missing")
    except KeyError:
        log.logger.exception("step failed", extra=log.fields(run_id="r-4", step=None))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "DEBUG   loading  [run_id=r-4 step=b attempt=1]"
    assert lines[1] == "INFO    no fields"
    assert lines[2] == "ERROR   step failed  [run_id=r-4]"
    assert lines[3] == "Traceback (most recent call last):"
    assert lines[-1] == "KeyError: 'missing'"
    assert log.logger.propagate is False


def test_configuring_again_replaces_our_handler_and_keeps_others(
    restore_logger: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    _streams(monkeypatch, stderr=stream)
    foreign = logging.NullHandler()
    log.logger.addHandler(foreign)
    log.configure_logging()
    log.configure_logging(json=True)
    assert len(_ours()) == 1 and foreign in log.logger.handlers
    assert log.logger.level == logging.INFO
    log.logger.debug("hidden: not verbose")
    try:
        raise ValueError("bad input")
    except ValueError:
        log.logger.error("failed", exc_info=True, extra=log.fields(step="s"))
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["severity"] == "ERROR" and entry["step"] == "s"
    assert entry["logging.googleapis.com/labels"] == {"step": "s"}
    assert "ValueError: bad input" in entry["exception"]


def test_cloud_logging_replaces_the_stderr_handler_and_adds_its_filter_once(
    restore_logger: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    _streams(monkeypatch, stdout=stdout, stderr=stderr)
    log.configure_logging()
    log.configure_cloud_logging(verbose=True)
    log.configure_cloud_logging(verbose=True)
    assert len(_ours()) == 1
    assert sum(isinstance(f, log._CloudFields) for f in log.logger.filters) == 1
    assert log.logger.level == logging.DEBUG
    log.logger.debug("plain, no fields")
    entries = _entries(stdout)
    assert entries[-1]["message"] == "plain, no fields"
    assert "run_id" not in entries[-1]
    assert stderr.getvalue() == ""


def test_without_google_cloud_logging_the_json_formatter_goes_to_stderr(
    restore_logger: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    _streams(monkeypatch, stderr=stream)
    monkeypatch.setitem(sys.modules, "google.cloud.logging_v2.handlers", None)
    log.configure_cloud_logging()
    log.logger.info("started", extra=log.fields(run_id="r-5", attempt=3))
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert (entry["severity"], entry["run_id"], entry["attempt"]) == ("INFO", "r-5", 3)
    assert len(_ours()) == 1
