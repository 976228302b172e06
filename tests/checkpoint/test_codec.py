"""The context codec round-trips every supported type exactly and names what it cannot."""

from __future__ import annotations

import datetime as dt
import math
import struct
import uuid
from decimal import Decimal
from fractions import Fraction
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resumable import CorruptCheckpointError, EncodingError, register_codec, unregister_codec
from resumable.checkpoint._blobs import BlobStore
from resumable.checkpoint._codec import MAX_DEPTH
from resumable.checkpoint._segments import decode_context, encode_context
from resumable.storage import MemoryStore
from tests.support.exact import assert_exact


def roundtrip(context: dict[str, Any]) -> dict[str, Any]:
    """Encode into a fresh store, then decode with a second BlobStore (no shared caches)."""
    store = MemoryStore()
    entries = encode_context(context, BlobStore(store, "blobs/"))
    return decode_context(entries, BlobStore(store, "blobs/"))


def decode_node(node: Any) -> Any:
    """Decode one stored node, as a manifest's inline entry."""
    return decode_context({"k": {"v": node}}, BlobStore(MemoryStore(), "blobs/"))["k"]


# Round trips of random values of every supported type: tests/fuzz/test_fuzz_codec.py.


def test_the_exactness_check_tells_memory_orders_apart() -> None:
    """So that the round trips prove the memory order, not only the bytes."""
    grid = np.arange(6, dtype=np.int16).reshape(2, 3)
    assert_exact(np.asfortranarray(grid), roundtrip({"a": np.asfortranarray(grid)})["a"])
    assert_exact(grid[:, ::2], roundtrip({"a": grid[:, ::2]})["a"])  # strided: stored as C
    with pytest.raises(AssertionError, match="memory order"):
        assert_exact(np.asfortranarray(grid), np.ascontiguousarray(grid))


class Opaque:
    pass


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=4, unique=True))
def test_an_unsupported_object_fails_naming_its_key_path(keys: list[str]) -> None:
    nested: Any = Opaque()
    for key in reversed(keys[1:]):
        nested = {key: [nested]}
    with pytest.raises(EncodingError) as caught:
        roundtrip({keys[0]: nested})
    expected = f"context[{keys[0]!r}]" + "".join(f"[{k!r}][0]" for k in keys[1:])
    assert caught.value.key_path == expected
    assert caught.value.type_name.endswith("Opaque")
    assert expected in str(caught.value)


def test_object_arrays_are_refused_not_stringified() -> None:
    with pytest.raises(EncodingError, match=r"context\['x'\]\[1\].*object arrays"):
        roundtrip({"x": [1, np.array([Opaque()], dtype=object)]})


def test_structured_and_unaligned_dtypes_roundtrip() -> None:
    rec = np.zeros(5, dtype=[("id", "<u4"), ("box", ">f8", (4,)), ("name", "S6")])
    rec["id"] = np.arange(5)
    rec["box"] = np.linspace(0, 1, 20).reshape(5, 4)
    rec["name"] = b"abc"
    big = np.arange(50_000, dtype=">i8").reshape(100, 500)[:, ::3]  # non-contiguous, big-endian
    back = roundtrip({"rec": rec, "big": big})
    assert_exact(rec, back["rec"])
    assert_exact(big, back["big"])
    assert back["big"].flags.writeable and back["big"].flags.aligned


def test_structured_dtypes_with_titles_nesting_and_subarrays_roundtrip() -> None:
    """Found by the fuzzer: titled fields were written, then could not be read back."""
    titled = np.zeros(3, dtype=[(("Width in px", "w"), "<u2"), (("t", "h"), ">u2")])
    nested = np.zeros(2, dtype=[("a", "<i4", (2, 3)), ("b", [("c", ">f8", (2,)), ("d", "S2")])])
    context = {"titled": titled, "nested": nested, "scalar": titled[1], "void": nested[0]}
    assert_exact(context, roundtrip(context))


def test_numpy_scalars_keep_their_dtype() -> None:
    context = {"f": np.float32(1.5), "i": np.int16(-3), "b": np.bool_(True), "d": np.float64(2.0)}
    assert_exact(context, roundtrip(context))


def test_special_values_keep_their_types() -> None:
    context = {
        "big_int": 2**100,
        "neg_zero": -0.0,
        "nan": math.nan,
        "tagged_lookalike": {"$r": "bytes", "b64": "AA=="},
        "zone": dt.datetime(2026, 3, 29, 2, 30, tzinfo=ZoneInfo("Europe/Paris")),
        "fold": dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris")),
        "named_tz": dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2), "CEST")),
        "paths": [Path("/tmp/x"), PurePosixPath("a/b"), PureWindowsPath(r"C:\data")],
        "decimal": Decimal("-0.000100"),
        "nested_keys": {(1, 2): {frozenset({1}): b"x"}},
    }
    assert_exact(context, roundtrip(context))


def test_registered_codec_roundtrips_and_can_hold_arrays() -> None:
    register_codec(
        Fraction,
        name="fraction",
        encode=lambda f: (f.numerator, f.denominator, np.arange(3)),
        decode=lambda t: Fraction(t[0], t[1]),
    )
    try:
        assert roundtrip({"f": [Fraction(1, 3)]}) == {"f": [Fraction(1, 3)]}
    finally:
        unregister_codec("fraction")
    with pytest.raises(EncodingError, match="Fraction"):
        roundtrip({"f": Fraction(1, 3)})


def test_a_codec_missing_at_load_time_is_a_clear_error() -> None:
    register_codec(Fraction, name="fraction", encode=lambda f: str(f), decode=Fraction)
    store = MemoryStore()
    try:
        entries = encode_context({"f": Fraction(2, 3)}, BlobStore(store, "b/"))
    finally:
        unregister_codec("fraction")
    with pytest.raises(CorruptCheckpointError, match="register_codec"):
        decode_context(entries, BlobStore(store, "b/"))


def test_uuid_and_set_encode_deterministically() -> None:
    """Equal values give equal bytes, which is what lets unchanged values dedupe."""
    store = MemoryStore()
    blobs = BlobStore(store, "b/")
    first = encode_context({"s": set(range(100)), "u": uuid.UUID(int=7)}, blobs)
    second = encode_context({"s": set(reversed(range(100))), "u": uuid.UUID(int=7)}, blobs)
    assert first == second


# -- exactness at the edges ---------------------------------------------------------------


def test_ints_beyond_pythons_4300_digit_limit_roundtrip() -> None:
    huge = 7**20_000  # ~17,000 decimal digits
    context = {"huge": huge, "negative": -huge, "in_a_list": [huge + 1]}
    assert_exact(context, roundtrip(context))


def test_a_large_binary_names_its_blob_and_states_its_size() -> None:
    """The stated size bounds what the reader decompresses before it checks the hash."""
    store = MemoryStore()
    entries = encode_context({"b": bytes(70_000)}, BlobStore(store, "blobs/"))
    assert entries["b"]["v"] == {"$r": "bytes", "blob": entries["b"]["blobs"][0], "n": 70_000}
    assert decode_context(entries, BlobStore(store, "blobs/")) == {"b": bytes(70_000)}


def test_big_ints_written_in_decimal_by_release_0_1_0_still_decode() -> None:
    assert decode_node({"$r": "int", "v": "-18446744073709551617"}) == -(2**64) - 1


def float_of(bits: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", bits))[0])


def bits_of(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


NAN_BITS = [
    0x7FF8000000000123,  # a quiet NaN with a payload
    0xFFF8000000000000,  # -NaN
    0x7FF0000000000001,  # a signalling NaN
    0x7FF8000000000000,  # the NaN float("nan") gives
]


@pytest.mark.parametrize("bits", NAN_BITS, ids=hex)
def test_nan_payloads_and_signs_roundtrip_bit_exactly(bits: int) -> None:
    nan = float_of(bits)
    back = roundtrip({"f": nan, "c": complex(nan, -nan), "c2": complex(1.5, nan)})
    assert bits_of(back["f"]) == bits
    assert (bits_of(back["c"].real), bits_of(back["c"].imag)) == (bits, bits_of(-nan))
    assert bits_of(back["c2"].imag) == bits and back["c2"].real == 1.5


def test_zero_signs_subnormals_and_infinities_keep_their_bits() -> None:
    values = [-0.0, 5e-324, -5e-324, 2.2250738585072014e-308, math.inf, -math.inf]
    back = roundtrip({"f": values, "c": [complex(x, -x) for x in values]})
    assert [bits_of(x) for x in back["f"]] == [bits_of(x) for x in values]
    assert [bits_of(c.imag) for c in back["c"]] == [bits_of(-x) for x in values]


def nested(levels: int, wrap: Any) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = wrap(value)
    return value


@pytest.mark.parametrize(
    ("wrap", "levels"),
    [
        (lambda x: [x], 1),
        (lambda x: {"k": x}, 1),
        (lambda x: (x,), 2),
        (lambda x: frozenset({x}), 2),
        (lambda x: {1: x}, 3),
    ],
    ids=["list", "dict", "tuple", "frozenset", "dict-with-int-keys"],
)
def test_values_nested_to_the_depth_limit_roundtrip_and_deeper_ones_name_their_path(
    wrap: Any, levels: int
) -> None:
    deepest = MAX_DEPTH // levels
    value = nested(deepest, wrap)
    assert_exact({"v": value}, roundtrip({"v": value}))
    with pytest.raises(EncodingError, match="nested more than 200 levels") as caught:
        roundtrip({"v": nested(deepest + 1, wrap)})
    assert caught.value.key_path.startswith("context['v']")


def test_a_value_nested_far_beyond_the_limit_is_an_encoding_error_not_a_recursion_error() -> None:
    with pytest.raises(EncodingError, match="nested"):
        roundtrip({"v": nested(5_000, lambda x: [x])})


def test_empty_numpy_scalars_and_arrays_of_empty_elements_roundtrip() -> None:
    context = {
        "bytes": np.bytes_(b""),
        "str": np.str_(""),
        "void": np.void(b""),
        "no_fields": np.zeros((), dtype=np.dtype([]))[()],
        "void_array": np.zeros((3, 2), dtype="V0"),
    }
    assert_exact(context, roundtrip(context))


# -- what cannot be encoded, and why ------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a$rb", 5, None])
def test_an_invalid_codec_name_is_refused(name: Any) -> None:
    with pytest.raises(ValueError, match="invalid codec name"):
        register_codec(Fraction, name=name, encode=str, decode=Fraction)


def test_a_codec_name_taken_by_another_type_is_refused() -> None:
    register_codec(Fraction, name="fraction", encode=str, decode=Fraction)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_codec(Decimal, name="fraction", encode=str, decode=Decimal)
    finally:
        unregister_codec("fraction")


def test_a_codec_whose_encoder_raises_is_an_encoding_error_naming_codec_and_path() -> None:
    def broken(value: Fraction) -> Any:
        raise RuntimeError("no can do")

    register_codec(Fraction, name="fraction", encode=broken, decode=Fraction)
    try:
        with pytest.raises(EncodingError, match="codec 'fraction' failed: no can do") as caught:
            roundtrip({"f": [Fraction(1, 3)]})
    finally:
        unregister_codec("fraction")
    assert caught.value.key_path == "context['f'][0]"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (dt.time(12, tzinfo=dt.UTC), "times with a tzinfo"),
        (np.zeros((), dtype=[("o", "O")])[()], "object scalars"),  # a void with an object field
        (dt.datetime(2026, 1, 1, tzinfo=type("Tz", (dt.tzinfo,), {})()), "unsupported tzinfo"),
        (np.zeros(2, dtype=(np.int32, [("lo", "<i2"), ("hi", "<i2")])), "cannot be stored exactly"),
        (
            np.zeros(2, dtype={"names": ["a", "b"], "formats": ["<i4", "<i2"], "offsets": [0, 0]}),
            "overlapping",
        ),
        (PureWindowsPath("\\\\:\\"), "its text parses to another path"),
    ],
    ids=[
        "time-with-tzinfo",
        "object-scalar",
        "unknown-tzinfo",
        "inexact-dtype",
        "overlapping",
        "path-not-its-text",
    ],
)
def test_values_that_cannot_be_stored_exactly_are_encoding_errors(value: Any, reason: str) -> None:
    with pytest.raises(EncodingError, match=reason) as caught:
        roundtrip({"x": {"y": value}})
    assert caught.value.key_path == "context['x']['y']"


# -- what the decoder refuses -------------------------------------------------------------

ARRAY = {"$r": "ndarray", "dtype": "<i4", "shape": [2], "order": "C", "b64": "AQAAAAIAAAA="}
ADDRESS = "b3-" + "0" * 64

MALFORMED = {
    "unknown tag": ({"$r": "pickle", "v": "x"}, "unknown value tag"),
    "tag not a string": ({"$r": None}, "unknown value tag"),
    "int from a float": ({"$r": "int", "v": 5.5}, "'v' field is a float"),
    "int with underscores": ({"$r": "int", "v": "1_000"}, "not in the stored form"),
    "int with spaces": ({"$r": "int", "x": " ff"}, "not in the stored form"),
    "int without digits": ({"$r": "int"}, "no 'v' field"),
    "finite float tagged": ({"$r": "float", "v": "1.5"}, "not a stored non-finite float"),
    "float bits too short": ({"$r": "float", "bits": "7ff8"}, "16 hexadecimal digits"),
    "complex of one part": ({"$r": "complex", "v": ["1.0"]}, "two parts"),
    "complex of words": ({"$r": "complex", "v": ["one", "0.0"]}, "not a stored float"),
    "tuple from a string": ({"$r": "tuple", "v": "abc"}, "'v' field is a str"),
    "set from a dict": ({"$r": "set", "v": {"a": 1}}, "'v' field is a dict"),
    "set of lists": ({"$r": "set", "v": [[1]]}, "unhashable"),
    "dict items not pairs": ({"$r": "dict", "items": [[1, 2, 3]]}, "not a \\[key, value\\] pair"),
    "dict items not a list": ({"$r": "dict", "items": {"a": 1}}, "'items' field is a dict"),
    "bytes from bad base64": ({"$r": "bytes", "b64": "!!!"}, "not base64"),
    "bytes from two sources": ({"$r": "bytes", "b64": "", "part": 0}, "2 data sources"),
    "bytes from no source": ({"$r": "bytearray"}, "0 data sources"),
    "bytes from a missing part": ({"$r": "bytes", "part": 3}, "part 3 of 0"),
    "bytes from a bool part": ({"$r": "bytes", "part": True}, "'part' field is a bool"),
    "bytes from a bad address": ({"$r": "bytes", "blob": "../x"}, "invalid blob address"),
    "bytes of a size as text": ({"$r": "bytes", "blob": ADDRESS, "n": "5"}, "'n' field is a str"),
    "array whose blob states another size": (
        {**{k: v for k, v in ARRAY.items() if k != "b64"}, "blob": ADDRESS, "n": 5},
        "said to hold 5 bytes, not 8",
    ),
    "datetime with an offset in its text": (
        {"$r": "datetime", "v": "2020-01-01T00:00:00+05:00"},
        "carries an offset",
    ),
    "datetime not canonical": ({"$r": "datetime", "v": "2020-01-01 00:00"}, "stored form"),
    "datetime with fold 2": ({"$r": "datetime", "v": "2020-01-01T00:00:00", "fold": 2}, "fold"),
    "datetime with zone and offset": (
        {"$r": "datetime", "v": "2020-01-01T00:00:00", "zone": "UTC", "offset": [0, 0, 0]},
        "both a zone and an offset",
    ),
    "datetime in an unknown zone": (
        {"$r": "datetime", "v": "2020-01-01T00:00:00", "zone": "Mars/Olympus"},
        "Mars/Olympus",
    ),
    "datetime offset of a day": (
        {"$r": "datetime", "v": "2020-01-01T00:00:00", "offset": [1, 0, 0]},
        "timedelta",
    ),
    "date not canonical": ({"$r": "date", "v": "20200101"}, "stored form"),
    "time with an offset": ({"$r": "time", "v": "12:00:00+01:00"}, "carries an offset"),
    "timedelta of floats": ({"$r": "timedelta", "v": [1.5, 0, 0]}, "other than integers"),
    "timedelta of two": ({"$r": "timedelta", "v": [1, 0]}, "2 items, not 3"),
    "timedelta overflowing": ({"$r": "timedelta", "v": [10**10, 0, 0]}, "timedelta"),
    "uuid not canonical": ({"$r": "uuid", "v": "{12345678123456781234567812345678}"}, "stored"),
    "uuid not a uuid": ({"$r": "uuid", "v": "nope"}, "hexadecimal UUID"),
    "decimal not canonical": ({"$r": "decimal", "v": " 1_0 "}, "stored form"),
    "decimal not a number": ({"$r": "decimal", "v": "ten"}, "decimal"),
    "path of an unknown class": ({"$r": "path", "class": "URL", "v": "x"}, "not a path class"),
    "path not canonical": ({"$r": "path", "class": "PurePosixPath", "v": "a//b"}, "stored form"),
    "array of objects": ({**ARRAY, "dtype": "|O"}, "object dtypes are never decoded"),
    "array of an unknown dtype": ({**ARRAY, "dtype": "<q9"}, "ndarray"),
    "array of a negative shape": ({**ARRAY, "shape": [-2]}, "negative dimension"),
    "array of a float shape": ({**ARRAY, "shape": [2.0]}, "other than integers"),
    "array of a bad order": ({**ARRAY, "order": "K"}, "order 'K'"),
    "array of too few bytes": ({**ARRAY, "shape": [3]}, "8 bytes, expected 12"),
    "array of an absurd shape": ({**ARRAY, "shape": [2**40, 2**40]}, "8 bytes, expected"),
    "numpy scalar of the wrong size": (
        {"$r": "npscalar", "dtype": "<i4", "b64": "AAAAAAAAAAA="},
        "8 bytes for a int32 scalar of 4",
    ),
    "extension without a value": ({"$r": "ext", "name": "fraction"}, "no 'v' field"),
    "extension not registered": ({"$r": "ext", "name": "nobody", "v": 1}, "register_codec"),
}


@pytest.mark.parametrize(("node", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_stored_values_are_corrupt_checkpoints_not_plausible_values(
    node: Any, reason: str
) -> None:
    register_codec(Fraction, name="fraction", encode=str, decode=Fraction)
    try:
        with pytest.raises(CorruptCheckpointError, match=reason):
            decode_node({"outer": [node]})
    finally:
        unregister_codec("fraction")


def test_a_registered_decoder_that_raises_is_a_corrupt_checkpoint() -> None:
    register_codec(Fraction, name="fraction", encode=str, decode=Fraction)
    try:
        with pytest.raises(CorruptCheckpointError, match="cannot decode a 'ext' value"):
            decode_node({"$r": "ext", "name": "fraction", "v": "one third"})
    finally:
        unregister_codec("fraction")


def test_a_stored_value_nested_deeper_than_any_writer_can_is_a_corrupt_checkpoint() -> None:
    with pytest.raises(CorruptCheckpointError, match="nested more than 254 levels"):
        decode_node(nested(1_000, lambda x: [x]))
