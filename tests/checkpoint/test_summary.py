"""The lossy value summaries of the CLI's and the UI's checkpoint views
(resumable.checkpoint._summary): every type JSON has no word for gets a readable stand-in,
and the result is always JSON."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import PurePosixPath

from resumable.checkpoint._summary import summarize


def test_json_values_are_themselves() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": -3}}
    assert summarize(value) == value


def test_mixed_sets_that_cannot_be_sorted_keep_their_items() -> None:
    out = summarize({1, "a"})
    assert sorted(map(str, out)) == ["1", "a"]
    assert summarize(frozenset({3, 1, 2})) == [1, 2, 3]


def test_keys_become_strings() -> None:
    assert summarize({1: "a", (2, 3): "b"}) == {"1": "a", "(2, 3)": "b"}


def test_infinities_are_named() -> None:
    assert summarize(float("-inf")) == {"type": "float", "value": "-inf"}


def test_times_durations_ids_decimals_paths_and_complex_numbers() -> None:
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    ident = uuid.UUID(int=7)
    assert summarize(when) == "2024-05-01T12:30:00+00:00"
    assert summarize(dt.time(8, 15)) == "08:15:00"
    assert summarize(dt.timedelta(minutes=2, seconds=3)) == {
        "type": "timedelta",
        "seconds": 123.0,
    }
    assert summarize(ident) == str(ident)
    assert summarize(Decimal("1.10")) == "1.10"
    assert summarize(PurePosixPath("/data/x.mp4")) == "/data/x.mp4"
    assert summarize(2 - 1.5j) == {"type": "complex", "real": 2.0, "imag": -1.5}
    assert summarize(bytearray(b"abcd")) == {"type": "bytearray", "size": 4}
    assert summarize(memoryview(b"ab")) == {"type": "memoryview", "size": 2}


class Opaque:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Opaque({self.text})"


def test_other_objects_show_their_type_and_a_bounded_repr() -> None:
    short = summarize(Opaque("x"))
    assert short == {"type": f"{__name__}.Opaque", "repr": "Opaque(x)"}
    long = summarize(Opaque("y" * 500))
    assert len(long["repr"]) == 200 and long["repr"].endswith("...")
    assert long["repr"].startswith("Opaque(yyy")
    json.dumps([short, long])  # always JSON
