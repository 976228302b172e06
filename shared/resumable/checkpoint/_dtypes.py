"""numpy dtypes as checkpoints store them: described and read back exactly (numpy is
optional at runtime)."""

from __future__ import annotations

import functools
from typing import Any

import orjson

from resumable.errors import CorruptCheckpointError, EncodingError

# A structured dtype's description nests two levels per nested struct.
_MAX_DESCR_DEPTH = 32


_DESCR_CACHE: dict[Any, Any] = {}


def dtype_descr(dtype: Any, path: str) -> Any:
    cached = _DESCR_CACHE.get(dtype)
    if cached is not None:
        return cached
    np = numpy_or_none()
    assert np is not None
    what = f"numpy.ndarray[{dtype}]"
    try:
        descr = np.lib.format.dtype_to_descr(dtype)
    except ValueError as exc:  # overlapping or out-of-order fields
        raise EncodingError(path, what, f"dtype cannot be stored: {exc}") from None
    if descr_to_dtype(descr) != dtype:
        raise EncodingError(path, what, "dtype cannot be stored exactly")
    if _json_depth(descr) > _MAX_DESCR_DEPTH:
        raise EncodingError(path, what, "structured dtype nested too deeply")
    # Round-trip through JSON now, so that the cached value is what the manifest holds.
    descr = orjson.loads(orjson.dumps(descr))
    _DESCR_CACHE[dtype] = descr
    return descr


def _json_depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | tuple):
            deepest = max(deepest, depth)
            stack.extend((x, depth + 1) for x in item)
    return deepest


def _tuplify(descr: Any) -> Any:
    """A dtype description read from JSON, with the tuples numpy expects back: each
    field is ``(name, format[, shape])``, a name may be ``(title, name)``, a format may be
    a nested description."""
    if not isinstance(descr, list):
        return descr
    fields = []
    for name, fmt, *shape in descr:
        fields.append(
            (tuple(name) if isinstance(name, list) else name, _tuplify(fmt), *map(tuple, shape))
        )
    return fields


def descr_to_dtype(descr: Any) -> Any:
    """The numpy dtype a stored dtype description stands for."""
    if isinstance(descr, str):  # the common case, parsed once (a load meets it thousands of times)
        return _simple_dtype(descr)
    return _parse_dtype(descr)


@functools.lru_cache(maxsize=256)
def _simple_dtype(descr: str) -> Any:
    return _parse_dtype(descr)


def _parse_dtype(descr: Any) -> Any:
    np = numpy_or_none()
    if np is None:
        raise CorruptCheckpointError("the checkpoint holds numpy values: install numpy to load it")
    return np.lib.format.descr_to_dtype(_tuplify(descr))


def numpy_or_none() -> Any:
    try:
        import numpy
    except ImportError:  # numpy is optional at runtime
        return None
    return numpy
