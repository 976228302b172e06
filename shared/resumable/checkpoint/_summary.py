"""Readable JSON summaries of context values, for ``--json`` output and displays.

This is a *view*, lossy by design: a numpy array becomes
``{"type": "ndarray", "dtype": "uint8", "shape": [24, 64, 64]}``, bytes become their size,
tuples and sets become lists. Checkpoints never use it: they store every value exactly
(see ``codec``).
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any

JSONValue = Any


def summarize(value: Any) -> JSONValue:
    """A JSON-serialisable stand-in for ``value``: itself when it is JSON already."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"type": "float", "value": repr(value)}
    if isinstance(value, Mapping):
        return {str(k): summarize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [summarize(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [summarize(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    return _scalar(value)


def _scalar(value: Any) -> JSONValue:
    """A stand-in for a value JSON has no type for."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"type": type(value).__name__, "size": len(value)}
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return {"type": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, uuid.UUID | Decimal | PurePath):
        return str(value)
    if isinstance(value, complex):
        return {"type": "complex", "real": value.real, "imag": value.imag}
    return _numpy(value)


def _numpy(value: Any) -> JSONValue:
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        return {"type": "ndarray", "dtype": str(value.dtype), "shape": list(value.shape)}
    if numpy is not None and isinstance(value, numpy.generic):
        return summarize(value.item())
    text = repr(value)
    if len(text) > 200:
        text = text[:197] + "..."
    return {"type": f"{type(value).__module__}.{type(value).__qualname__}", "repr": text}
