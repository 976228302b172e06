"""The UI's small helpers: how times, sizes and durations read (ui._formatting), and
where a failed step's traceback is found in the local stack's function logs (ui._logs)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from resumable.ui import _formatting as fmt
from resumable.ui import _logs


def test_clock_shows_the_date_only_when_it_is_not_today() -> None:
    assert fmt.clock(None) == ""
    now = time.time()
    assert fmt.clock(now) == time.strftime("%H:%M:%S", time.localtime(now))
    long_ago = 86400 * 365.0  # 1971
    assert fmt.clock(long_ago) == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(long_ago))


def test_iso_is_utc() -> None:
    assert fmt.iso(None) == ""
    assert fmt.iso(1_800_000_000) == "2027-01-15T08:00:00Z"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (0.4213, "0.42s"),
        (12.34, "12.3s"),
        (245, "4m05s"),
        (7380, "2h03m"),
    ],
)
def test_seconds(value: float | None, text: str) -> None:
    assert fmt.seconds(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (512, "512 B"),
        (1536, "1.5 KiB"),
        (int(3.2 * 1024**2), "3.2 MiB"),
        (5 * 1024**3, "5.0 GiB"),
        (3 * 1024**4, "3072.0 GiB"),
    ],
)
def test_size(value: int | None, text: str) -> None:
    assert fmt.size(value) == text


def test_the_logs_explorer_filter_of_a_run_and_of_one_step() -> None:
    assert _logs.cloud_logging_filter("r-1") == 'labels.run_id="r-1"'
    assert _logs.cloud_logging_filter("r-1", "b") == 'labels.run_id="r-1" AND labels.step="b"'


def _line(run_id: str, step: str, message: str) -> str:
    return json.dumps({"severity": "ERROR", "run_id": run_id, "step": step, "message": message})


def _touch(path: Path, mtime: float) -> None:
    os.utime(path, (mtime, mtime))


def test_no_logs_folder_no_traceback(tmp_path: Path) -> None:
    assert _logs.find_traceback("r", "a", logs_dir=None) is None
    assert _logs.find_traceback("r", "a", logs_dir=tmp_path / "absent") is None
    assert _logs.find_traceback("r", "a", logs_dir=tmp_path) is None


def test_the_latest_traceback_of_the_step_is_found(tmp_path: Path) -> None:
    older = tmp_path / "run_step-1.log"
    older.write_text(
        "\n".join(
            [
                _line("r-1", "b", "Traceback (most recent call last):\nOldError: first"),
                'not json, but mentions "r-1" and Traceback',
                _line("r-1", "c", "Traceback (most recent call last):\nOtherStep: no"),
                _line("r-2", "b", "Traceback (most recent call last):\nOtherRun: no"),
                _line("r-1", "b", "step b started"),
            ]
        )
        + "\n"
    )
    newer = tmp_path / "run_step-2.log"
    newer.write_text(
        _line("r-1", "b", "Traceback (most recent call last):\nValueError: second") + "\n"
    )
    (tmp_path / "notes.txt").write_text(_line("r-1", "b", "Traceback: not a .log file"))
    _touch(older, 1_000)
    _touch(newer, 2_000)
    assert _logs.find_traceback("r-1", "b", logs_dir=tmp_path) == (
        "Traceback (most recent call last):\nValueError: second"
    )
    _touch(older, 3_000)
    assert _logs.find_traceback("r-1", "b", logs_dir=tmp_path) == (
        "Traceback (most recent call last):\nOldError: first"
    )
    assert _logs.find_traceback("r-1", "d", logs_dir=tmp_path) is None


def test_a_traceback_outside_the_message_is_not_one(tmp_path: Path) -> None:
    entry = {"run_id": "r-1", "step": "b", "message": "failed", "extra": "Traceback"}
    (tmp_path / "f.log").write_text(json.dumps(entry) + "\n")
    assert _logs.find_traceback("r-1", "b", logs_dir=tmp_path) is None


def test_unreadable_log_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "a-folder.log").mkdir()
    (tmp_path / "ok.log").write_text(_line("r-1", "b", "Traceback (most recent call last):\nE"))
    assert _logs.find_traceback("r-1", "b", logs_dir=tmp_path) == (
        "Traceback (most recent call last):\nE"
    )


def test_only_the_tail_of_a_big_log_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    early = _line("r-1", "b", "Traceback (most recent call last):\nEarly: cut off")
    late = _line("r-1", "c", "Traceback (most recent call last):\nLate: kept")
    (tmp_path / "f.log").write_text(early + "\n" + "x" * 100 + "\n" + late + "\n")
    monkeypatch.setattr(_logs, "TAIL_BYTES", len(late) + 50)
    assert _logs.find_traceback("r-1", "b", logs_dir=tmp_path) is None
    assert _logs.find_traceback("r-1", "c", logs_dir=tmp_path) == (
        "Traceback (most recent call last):\nLate: kept"
    )


# -- value views (ui._values) -------------------------------------------------------------------


def test_stored_sizes_of_each_kind_of_entry() -> None:
    from resumable.ui._values import stored_bytes

    assert stored_bytes(None) is None
    assert stored_bytes({"segment": "b3-x", "bytes": 99}) == 99
    assert stored_bytes({"blobs": ["b3-y"], "v": {}}) is None  # sizes not in the entry
    assert stored_bytes({"v": {"a": [1, 2]}}) == len('{"a":[1,2]}')


def test_value_views_of_sets_bytes_and_arrays_without_a_numeric_preview() -> None:
    import numpy as np

    from resumable.ui._values import value_view

    assert value_view("s", {"b", "a"}).length == 2
    raw = value_view("b", b"abc")
    assert (raw.type, raw.length) == ("bytes", 3)
    empty = value_view("e", np.zeros((0, 3), np.float32))
    assert empty.preview is None and empty.shape == (0, 3) and not empty.image
    words = value_view("w", np.array(["a", "b"]))
    assert words.preview is None
    long = value_view("n", np.arange(20, dtype=np.int32))
    assert long.preview == "[0, 1, 2, 3, 4, 5, 6, 7, …]"


def test_thumbnails_are_pngs_of_images_only() -> None:
    import zlib

    import numpy as np

    from resumable.ui._values import thumbnail_png

    with pytest.raises(ValueError, match="not a uint8"):
        thumbnail_png(np.zeros((4, 4), np.float32))
    for shape, color in [((320, 200), 0), ((320, 200, 3), 2), ((8, 6, 4), 6)]:
        png = thumbnail_png(np.full(shape, 7, np.uint8))
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert max(width, height) <= 160 and png[25] == color
        length = int.from_bytes(png[33:37], "big")
        raw = zlib.decompress(png[41 : 41 + length])
        channels = {0: 1, 2: 3, 6: 4}[color]
        assert len(raw) == height * (1 + width * channels)


# -- the timeline's axis (ui._timeline) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "first_ticks"),
    [
        (0.05, [0.0, 0.01, 0.02]),
        (40, [0, 5, 10]),
        (86400 * 3, [0.0, 32400.0, 64800.0]),  # beyond two hours a tick: an eighth of it
    ],
)
def test_axis_ticks_are_round_and_at_most_nine(span: float, first_ticks: list[float]) -> None:
    from resumable.ui._timeline import _ticks

    ticks = _ticks(span)
    assert ticks[: len(first_ticks)] == pytest.approx(first_ticks)
    assert 2 <= len(ticks) <= 9 and ticks[-1] <= span + 1e-9


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "0.25s"), (2.5, "2.5s"), (0, "0s"), (45, "45s"), (600, "10m"), (10800, "3.0h")],
)
def test_axis_labels(seconds: float, text: str) -> None:
    from resumable.ui._timeline import _format

    assert _format(seconds) == text
