"""Exact comparison of contexts: same types, same values, floats and arrays bit-exact."""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal
from typing import Any

import numpy as np


def memory_order(array: np.ndarray) -> str:
    """``"F"`` for a Fortran-ordered array, else ``"C"`` (what the codec stores)."""
    return "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"


def float_bits(value: float) -> bytes:
    return struct.pack("<d", value)


def assert_exact(a: Any, b: Any, path: str = "ctx") -> None:
    """Equal values of identical types; arrays with the same dtype, shape, memory order and
    bytes; floats with the same bits (sign of zero, NaN payload and sign)."""
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert memory_order(a) == memory_order(b), f"{path}: memory order"
        assert a.tobytes() == b.tobytes(), path
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_exact(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_exact(x, y, f"{path}[{i}]")
    elif isinstance(a, set | frozenset):  # element by element: NaN and NaT equal nothing
        assert len(a) == len(b), path
        unmatched = list(b)
        for x in a:
            match = next((i for i, y in enumerate(unmatched) if _exact(x, y)), None)
            assert match is not None, f"{path}: {x!r} has no exact match in {b!r}"
            unmatched.pop(match)
    elif isinstance(a, float):
        assert float_bits(a) == float_bits(b), f"{path}: {a!r} != {b!r} (bits)"
    elif isinstance(a, complex):
        assert float_bits(a.real) == float_bits(b.real), f"{path}: real part (bits)"
        assert float_bits(a.imag) == float_bits(b.imag), f"{path}: imaginary part (bits)"
    elif isinstance(a, Decimal):
        assert str(a) == str(b), path
    elif isinstance(a, dt.datetime | dt.time):
        assert a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset(), path
        assert a.fold == b.fold, f"{path}: fold"
    else:
        assert a == b, path


def _exact(a: Any, b: Any) -> bool:
    try:
        assert_exact(a, b)
    except AssertionError:
        return False
    return True
