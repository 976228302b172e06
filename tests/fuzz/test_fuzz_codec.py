"""Fuzz: every supported type round-trips bit for bit through a real checkpoint store —
NaN payloads and signs, -0.0, subnormals, DST folds, Decimal specials, big ints, numpy
dtypes (structured, datetime, every byte order and memory layout), deep nesting.

Invariant: the decoded context equals the original exactly (same types, same bits), or
encoding raised an EncodingError for a value the codec documents it cannot store.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from decimal import Decimal
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from resumable import EncodingError
from resumable.checkpoint._blobs import BlobStore
from resumable.checkpoint._codec import MAX_DEPTH
from resumable.checkpoint._segments import decode_context, encode_context
from resumable.storage import MemoryStore
from tests.fuzz.budget import bounded, fuzz_settings
from tests.support.exact import assert_exact


def roundtrip(context: dict[str, Any]) -> dict[str, Any]:
    """Through a store, read back by a second BlobStore (no cache shared with the writer)."""
    store = MemoryStore()
    entries = encode_context(context, BlobStore(store, "b/", compression_level=1))
    return decode_context(entries, BlobStore(store, "b/"))


floats = st.integers(0, 2**64 - 1).map(
    lambda bits: struct.unpack("<d", bits.to_bytes(8, "little"))[0]
)
ints = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2).flatmap(
        lambda n: st.sampled_from([n, -n])
    ),
    st.builds(
        lambda base, power, sign: sign * base**power,
        st.integers(2, 99),
        st.integers(64, 20_000),
        st.sampled_from([1, -1]),
    ),
)
decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from(["sNaN", "-sNaN123", "NaN456", "-0", "-0E+3", "1E+999999", "-Infinity"]).map(
        Decimal
    ),
)
fixed_zones = st.one_of(
    st.timedeltas(
        min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59)
    ).map(dt.timezone),
    st.builds(
        dt.timezone,
        st.timedeltas(min_value=dt.timedelta(hours=-12), max_value=dt.timedelta(hours=12)),
        st.text(min_size=1, max_size=5),
    ),
)
datetimes = st.datetimes(
    timezones=st.one_of(st.none(), st.timezones(), fixed_zones), allow_imaginary=True
).flatmap(lambda d: st.sampled_from([d, d.replace(fold=1)]))
times = st.times().flatmap(lambda t: st.sampled_from([t, t.replace(fold=1)]))
paths = st.builds(
    lambda cls, parts: cls(*parts),
    st.sampled_from([PurePosixPath, PureWindowsPath, Path]),
    st.lists(st.text(alphabet="ab/\\:. ", min_size=1, max_size=4), max_size=3),
)
binaries = st.one_of(
    st.binary(max_size=80),  # inline base64
    st.binary(min_size=65, max_size=300),  # a part of the segment
    st.integers(65_536, 70_000).map(bytes),  # a compressible blob of its own
    st.integers(0, 2**32).map(lambda seed: np.random.default_rng(seed).bytes(66_000)),  # raw
)

SCALAR_DTYPES = st.one_of(
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),
    hnp.complex_number_dtypes(endianness="?"),
    hnp.boolean_dtypes(),
    hnp.datetime64_dtypes(endianness="?"),
    hnp.timedelta64_dtypes(endianness="?"),
    hnp.byte_string_dtypes(max_len=6),
    hnp.unicode_string_dtypes(max_len=6, endianness="?"),
)
DTYPES = st.one_of(
    SCALAR_DTYPES,
    hnp.array_dtypes(SCALAR_DTYPES, max_size=3),
    hnp.nested_dtypes(SCALAR_DTYPES, max_leaves=4),
)
arrays = DTYPES.flatmap(
    lambda d: hnp.arrays(d, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
)
layouts = st.builds(
    lambda array, layout: {
        "C": array,
        "F": np.asfortranarray(array),
        "strided": array[::-1, ...] if array.ndim else array,
    }[layout],
    arrays,
    st.sampled_from(["C", "F", "strided"]),
)
numpy_scalars = arrays.filter(lambda a: a.size > 0).map(lambda a: a.reshape(-1)[0])

leaves = st.one_of(
    st.none(), st.booleans(), ints, floats, st.text(max_size=10), binaries,
    st.binary(max_size=40).map(bytearray), st.builds(complex, floats, floats),
    datetimes, st.dates(), times, st.timedeltas(), st.uuids(), decimals, paths,
    layouts, numpy_scalars,
)  # fmt: skip
hashables = st.one_of(
    st.integers(), st.text(max_size=5), st.booleans(), st.uuids(), st.dates(),
    st.tuples(st.integers(), st.text(max_size=3)), st.frozensets(st.integers(), max_size=3),
)  # fmt: skip
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=6), children, max_size=3),
        st.dictionaries(hashables, children, max_size=3),
        st.dictionaries(st.just("$r"), children, min_size=1),  # looks like a tag, is not
        st.sets(hashables, max_size=3),
        st.frozensets(hashables, max_size=3),
    ),
    max_leaves=8,
)
contexts = st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=5)


def storable_exactly(dtype: np.dtype[Any]) -> bool:
    try:
        descr = np.lib.format.dtype_to_descr(dtype)
    except ValueError:
        return False
    return bool(np.lib.format.descr_to_dtype(descr) == dtype) and not dtype.hasobject


@fuzz_settings(ci_examples=200)
@given(contexts)
def test_every_supported_type_roundtrips_bit_exactly(context: dict[str, Any]) -> None:
    with bounded():
        try:
            back = roundtrip(context)
        except EncodingError as exc:  # only for what the codec documents it refuses
            event(f"refused: {exc.type_name}")
            if "path" in exc.type_name.lower():
                assert "parses to another path" in str(exc), exc
                return
            assert "dtype cannot be stored" in str(exc), exc
            dtype = np.dtype(exc.type_name.removeprefix("numpy.ndarray[").removesuffix("]"))
            assert not storable_exactly(dtype), exc
            return
    assert_exact(context, back)
    event(f"{len(context)} keys")


def nest(kind: str, value: Any) -> tuple[Any, int]:
    """``value`` inside one container of ``kind``, and the JSON levels that container costs."""
    if kind == "tuple":
        return (value,), 2
    if kind == "frozenset":
        try:
            return frozenset({value}), 2
        except TypeError:  # an unhashable value goes in a list instead
            return [value], 1
    if kind == "dict-with-int-keys":
        return {1: value}, 3
    return ([value], 1) if kind == "list" else ({"k": value}, 1)


@fuzz_settings(ci_examples=100)
@given(
    st.integers(0, 260).flatmap(  # lengths spread evenly, around the limit too
        lambda n: st.lists(
            st.sampled_from(["list", "dict", "tuple", "frozenset", "dict-with-int-keys"]),
            min_size=n,
            max_size=n,
        )
    ),
    leaves,
)
def test_nesting_roundtrips_up_to_the_limit_and_is_an_encoding_error_past_it(
    kinds: list[str], leaf: Any
) -> None:
    value, levels = leaf, 0
    for kind in kinds:
        value, cost = nest(kind, value)
        levels += cost
    with bounded():
        try:
            back = roundtrip({"v": value})
        except EncodingError as exc:
            assert levels > MAX_DEPTH and "nested more than" in str(exc), (levels, exc)
            assert exc.key_path.startswith("context['v']")
            event("refused: nested too deeply")
            return
    assert levels <= MAX_DEPTH, levels
    assert_exact({"v": value}, back)
    event("round trip")


@fuzz_settings(ci_examples=40)
@given(st.uuids(), st.integers(0, 2**64 - 1))
def test_equal_values_encode_to_equal_entries(identifier: uuid.UUID, bits: int) -> None:
    """What lets an unchanged value cost no upload: its encoding is deterministic."""
    value = {
        "id": identifier,
        "f": struct.unpack("<d", bits.to_bytes(8, "little"))[0],
        "s": {3, 1, 2},
    }
    store = MemoryStore()
    assert encode_context(value, BlobStore(store, "b/")) == encode_context(
        dict(value), BlobStore(store, "b/")
    )
