"""The context codec round-trips every supported type exactly and names what it cannot."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from fractions import Fraction
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from resumable import EncodingError, register_codec, unregister_codec
from resumable.blobs import BlobStore
from resumable.segments import decode_context, encode_context
from resumable.storage import MemoryStore
from tests.support.exact import assert_exact


def roundtrip(context: dict[str, Any]) -> dict[str, Any]:
    """Encode into a fresh store, then decode with a second BlobStore (no shared caches)."""
    store = MemoryStore()
    entries = encode_context(context, BlobStore(store, "blobs/"))
    return decode_context(entries, BlobStore(store, "blobs/"))


# -- strategies ---------------------------------------------------------------------------

DTYPES = st.one_of(
    hnp.integer_dtypes(endianness="="),
    hnp.unsigned_integer_dtypes(endianness="<"),
    hnp.floating_dtypes(endianness="?"),
    hnp.complex_number_dtypes(),
    hnp.boolean_dtypes(),
    hnp.datetime64_dtypes(),
    hnp.timedelta64_dtypes(),
    hnp.byte_string_dtypes(max_len=8),
    hnp.unicode_string_dtypes(max_len=8),
)

arrays = DTYPES.flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, max_side=6))
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=200),
    st.binary(min_size=70_000, max_size=70_001),
    st.binary(max_size=50).map(bytearray),
    st.complex_numbers(allow_nan=False),
    st.datetimes(timezones=st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=-5))])),
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.uuids(),
    st.decimals(allow_nan=False),
    arrays,
)

hashable = st.one_of(st.integers(), st.text(max_size=10), st.booleans(), st.uuids())

values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
        st.dictionaries(hashable, children, max_size=3),
        st.frozensets(hashable, max_size=4),
        st.sets(hashable, max_size=4),
    ),
    max_leaves=12,
)

contexts = st.dictionaries(st.text(min_size=1, max_size=10), values, max_size=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contexts)
def test_nested_contexts_of_every_supported_type_roundtrip_exactly(context: dict[str, Any]) -> None:
    assert_exact(context, roundtrip(context))


@settings(max_examples=50, deadline=None)
@given(arrays)
def test_numpy_arrays_roundtrip_bit_exact(array: np.ndarray) -> None:
    for layout in (array, np.asfortranarray(array), array[..., ::2] if array.ndim else array):
        back = roundtrip({"a": layout})["a"]
        assert back.dtype == layout.dtype and back.shape == layout.shape
        assert back.tobytes() == layout.tobytes()


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
    from resumable import CorruptCheckpointError

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
