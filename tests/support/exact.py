"""Exact comparison of contexts: same types, same values, arrays bit-exact."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import numpy as np


def assert_exact(a: Any, b: Any, path: str = "ctx") -> None:
    """Equal values of identical types, arrays bit-exact (dtype, shape, bytes)."""
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
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
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    elif isinstance(a, float):
        assert a == b and math.copysign(1, a) == math.copysign(1, b), path
    elif isinstance(a, Decimal):
        assert str(a) == str(b), path
    elif isinstance(a, dt.datetime):
        assert a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset(), path
        assert a.fold == b.fold, path
    else:
        assert a == b, path
