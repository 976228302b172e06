"""Decoding the context codec's nodes back into values (see ``resumable.checkpoint._codec``).

Strict: a tagged node is accepted only in the form the encoder writes it (field types,
canonical text, buffer sizes), so a damaged or forged checkpoint is a
:class:`CorruptCheckpointError`, never a value that merely looks plausible (``b""`` from
bad base64, a tuple of characters, ``int("1_000")``). Decoding never executes code: no
pickle, no object arrays, and a registered type only through its own ``decode``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any, TypeVar

from resumable.checkpoint._codec import PATH_CLASSES, float_from_bits
from resumable.checkpoint._dtypes import descr_to_dtype, numpy_or_none
from resumable.checkpoint._registry import TAG, registered_codec_named
from resumable.errors import CorruptCheckpointError

# No JSON deeper than this was ever written (orjson refuses to), so a deeper node is not
# ours; the bound also keeps the recursion below Python's limit.
MAX_NODE_DEPTH = 254

# ``source(address, size)`` reads a blob; ``size`` is its length when the node implies it.
BlobSource = Callable[[str, int | None], memoryview]

_DECIMAL_INT = re.compile(r"-?[0-9]+")
_HEX_INT = re.compile(r"-?[0-9a-f]+")
_BITS = re.compile(r"[0-9a-f]{16}")
# What ``repr`` of a float looks like.
_FLOAT_REPR = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?(?:e[-+][0-9]+)?|inf|nan)")
_NON_FINITE = ("inf", "-inf", "nan")
_CONCRETE_PATHS = {"PosixPath": PurePosixPath, "WindowsPath": PureWindowsPath}


T = TypeVar("T")
D = TypeVar("D", dt.datetime, dt.time)


class _Malformed(Exception):
    """A field of a tagged node that the encoder would not have written."""


def _field(node: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in node:
        raise _Malformed(f"it has no {name!r} field")
    value = node[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _Malformed(f"its {name!r} field is a {type(value).__name__}")
    return value


def _ints(node: dict[str, Any], name: str, count: int | None = None) -> list[int]:
    values: list[Any] = _field(node, name, list)
    if count is not None and len(values) != count:
        raise _Malformed(f"its {name!r} field has {len(values)} items, not {count}")
    if not all(type(v) is int for v in values):
        raise _Malformed(f"its {name!r} field holds something other than integers")
    return values


def _text(node: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value: str = _field(node, name, str)
    if not pattern.fullmatch(value):
        raise _Malformed(f"its {name!r} field {value[:40]!r} is not in the stored form")
    return value


def _canonical(value: T, text: str, written: str) -> T:
    """``value`` parsed from ``text``, if the encoder would have written it as ``text``."""
    if written != text:
        raise _Malformed(f"{text[:40]!r} is not the stored form of {type(value).__name__}")
    return value


def _fold(node: dict[str, Any]) -> int:
    fold = node.get("fold", 0)
    if fold not in (0, 1) or type(fold) is not int:
        raise _Malformed(f"fold {fold!r} is not 0 or 1")
    return int(fold)


def _float_text(text: Any) -> float:
    if not isinstance(text, str) or not _FLOAT_REPR.fullmatch(text):
        raise _Malformed(f"{text!r} is not a stored float")
    return float(text)


def _float_bits(text: Any) -> float:
    if not isinstance(text, str) or not _BITS.fullmatch(text):
        raise _Malformed(f"{text!r} is not 16 hexadecimal digits")
    return float_from_bits(int(text, 16))


class _SourceFailure(Exception):
    """Carries an error of the blob source through the decoder's own error handling."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Decoder:
    """Decodes one node; ``parts`` are the value's inline buffers, ``source`` fetches blobs."""

    def __init__(self, parts: list[memoryview], source: BlobSource) -> None:
        self._parts = parts
        self._source = source

    def decode(self, node: Any) -> Any:
        try:
            return self._node(node, 1)
        except RecursionError:  # called from deep in the stack already
            raise CorruptCheckpointError("a stored value is nested too deeply") from None

    def _node(self, node: Any, depth: int) -> Any:
        if depth > MAX_NODE_DEPTH:
            raise CorruptCheckpointError(
                f"a stored value is nested more than {MAX_NODE_DEPTH} levels deep: "
                "resumable never writes that"
            )
        # Loops, not comprehensions: each frame counts against Python's recursion limit.
        if isinstance(node, list):
            items = []
            for x in node:
                items.append(self._node(x, depth + 1))
            return items
        if not isinstance(node, dict):
            return node
        if TAG not in node:
            plain = {}
            for k, v in node.items():
                plain[k] = self._node(v, depth + 1)
            return plain
        tag = node[TAG]
        reader = _READERS.get(tag) if isinstance(tag, str) else None
        if reader is None:
            raise CorruptCheckpointError(f"unknown value tag {tag!r}")
        try:
            return reader(self, node, depth)
        except CorruptCheckpointError:
            raise
        except _SourceFailure as failure:
            # Storage failed while fetching a blob: not damage, so not a checkpoint error
            # (a retry may well succeed); raised as it came.
            raise failure.error from None
        except _Malformed as exc:
            raise CorruptCheckpointError(f"malformed {tag!r} value: {exc}") from None
        except Exception as exc:
            raise CorruptCheckpointError(f"cannot decode a {tag!r} value: {exc}") from exc

    def _children(self, node: dict[str, Any], depth: int) -> list[Any]:
        items = []
        for x in _field(node, "v", list):
            items.append(self._node(x, depth + 2))
        return items

    def _buffer(self, node: dict[str, Any], size: int | None = None) -> memoryview:
        sources = [k for k in ("b64", "part", "blob") if k in node]
        if len(sources) != 1:
            raise _Malformed(f"it names {len(sources)} data sources, not one")
        if sources[0] == "b64":
            return memoryview(bytearray(_base64(node)))
        if sources[0] == "part":
            index: int = _field(node, "part", int)
            if not 0 <= index < len(self._parts):
                raise _Malformed(f"it names part {index} of {len(self._parts)}")
            return self._parts[index]
        if "n" in node:  # the blob's stated size (release 0.1.0 did not state it)
            stated = _field(node, "n", int)
            if size is not None and stated != size:
                raise _Malformed(f"its blob is said to hold {stated} bytes, not {size}")
            size = stated
        address = _field(node, "blob", str)
        try:
            return self._source(address, size)
        except CorruptCheckpointError:
            raise
        except Exception as exc:
            raise _SourceFailure(exc) from exc

    def _ext(self, node: dict[str, Any], depth: int) -> Any:
        name = _field(node, "name", str)
        codec = registered_codec_named(name)
        if codec is None:
            raise CorruptCheckpointError(
                f"the checkpoint holds a value of registered type {name!r}, but no codec of "
                "that name is registered in this process: call resumable.register_codec "
                "before loading"
            )
        if "v" not in node:
            raise _Malformed("it has no 'v' field")
        return codec.decode(self._node(node["v"], depth + 1))

    def _dict(self, node: dict[str, Any], depth: int) -> dict[Any, Any]:
        out = {}
        for pair in _field(node, "items", list):
            if not isinstance(pair, list) or len(pair) != 2:
                raise _Malformed("an item is not a [key, value] pair")
            out[self._node(pair[0], depth + 3)] = self._node(pair[1], depth + 3)
        return out

    def _ndarray(self, node: dict[str, Any], depth: int) -> Any:
        dtype = _dtype(node)
        shape = tuple(_ints(node, "shape"))
        if any(n < 0 for n in shape):
            raise _Malformed(f"shape {shape} has a negative dimension")
        order = node.get("order", "C")
        if order not in ("C", "F"):
            raise _Malformed(f"order {order!r} is not 'C' or 'F'")
        count = math.prod(shape)
        expected = count * dtype.itemsize
        buffer = self._buffer(node, expected)
        if buffer.nbytes != expected:
            raise CorruptCheckpointError(
                f"array data is {buffer.nbytes} bytes, expected {expected} for "
                f"shape {shape} and dtype {dtype}"
            )
        np = numpy_or_none()
        if not expected:  # no elements, or elements of no bytes (void)
            return np.zeros(shape, dtype=dtype, order=order)
        if buffer.readonly:
            buffer = memoryview(bytearray(buffer))
        flat = np.frombuffer(buffer, dtype=dtype, count=count)
        if order == "F":
            return flat.reshape(shape[::-1]).T
        return flat.reshape(shape)

    def _npscalar(self, node: dict[str, Any], depth: int) -> Any:
        dtype = _dtype(node)
        data = _base64(node)
        if len(data) != dtype.itemsize:
            raise _Malformed(f"{len(data)} bytes for a {dtype} scalar of {dtype.itemsize}")
        np = numpy_or_none()
        if dtype.itemsize:
            return np.frombuffer(data, dtype=dtype)[0]
        # Empty scalars: numpy makes no buffer of itemsize 0, nor an array of b"" or "".
        return _EMPTY_SCALARS.get(dtype.kind, lambda: np.zeros((), dtype=dtype)[()])()


_EMPTY_SCALARS: dict[str, Callable[[], Any]] = {
    "S": lambda: numpy_or_none().bytes_(b""),
    "U": lambda: numpy_or_none().str_(""),
}


def _base64(node: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(_field(node, "b64", str), validate=True)
    except binascii.Error as exc:
        raise _Malformed(f"its data is not base64: {exc}") from None


def _dtype(node: dict[str, Any]) -> Any:
    descr = _field(node, "dtype", (str, list))
    dtype = descr_to_dtype(descr)
    if dtype.hasobject:
        raise _Malformed("object dtypes are never decoded")
    return dtype


def _int(node: dict[str, Any]) -> int:
    if "x" in node:
        return int(_text(node, "x", _HEX_INT), 16)
    return int(_text(node, "v", _DECIMAL_INT))  # as release 0.1.0 wrote them


def _float(node: dict[str, Any]) -> float:
    if "bits" in node:
        return _float_bits(node["bits"])
    text = _field(node, "v", str)
    if text not in _NON_FINITE:
        raise _Malformed(f"{text[:40]!r} is not a stored non-finite float")
    return float(text)


def _complex(node: dict[str, Any]) -> complex:
    if "bits" in node:
        parts, parse = _field(node, "bits", list), _float_bits
    else:
        parts, parse = _field(node, "v", list), _float_text
    if len(parts) != 2:
        raise _Malformed("it does not hold two parts")
    return complex(parse(parts[0]), parse(parts[1]))


def _naive(parsed: D, what: str) -> D:
    if parsed.tzinfo is not None:
        raise _Malformed(f"its {what} text carries an offset")
    return parsed


def _datetime(node: dict[str, Any]) -> dt.datetime:
    text = _field(node, "v", str)
    naive = _naive(dt.datetime.fromisoformat(text), "datetime")
    naive = _canonical(naive, text, naive.isoformat()).replace(fold=_fold(node))
    if "zone" in node and "offset" in node:
        raise _Malformed("it has both a zone and an offset")
    if "zone" in node:
        from zoneinfo import ZoneInfo

        return naive.replace(tzinfo=ZoneInfo(_field(node, "zone", str)))
    if "offset" in node:
        days, seconds, micros = _ints(node, "offset", 3)
        offset = dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if "tzname" in node:
            return naive.replace(tzinfo=dt.timezone(offset, _field(node, "tzname", str)))
        return naive.replace(tzinfo=dt.UTC if not offset else dt.timezone(offset))
    return naive


def _date(node: dict[str, Any]) -> dt.date:
    text = _field(node, "v", str)
    value = dt.date.fromisoformat(text)
    return _canonical(value, text, value.isoformat())


def _time(node: dict[str, Any]) -> dt.time:
    text = _field(node, "v", str)
    value = _naive(dt.time.fromisoformat(text), "time")
    return _canonical(value, text, value.isoformat()).replace(fold=_fold(node))


def _timedelta(node: dict[str, Any]) -> dt.timedelta:
    days, seconds, micros = _ints(node, "v", 3)
    return dt.timedelta(days=days, seconds=seconds, microseconds=micros)


def _uuid(node: dict[str, Any]) -> uuid.UUID:
    text = _field(node, "v", str)
    value = uuid.UUID(text)
    return _canonical(value, text, str(value))


def _decimal(node: dict[str, Any]) -> Decimal:
    text = _field(node, "v", str)
    value = Decimal(text)
    return _canonical(value, text, str(value))


def _path(node: dict[str, Any]) -> PurePath:
    class_name = _field(node, "class", str)
    text = _field(node, "v", str)
    cls: type[PurePath] | None = next((c for c in PATH_CLASSES if c.__name__ == class_name), None)
    # A concrete path written on another OS: keep its flavour, without touching the disk.
    cls = cls or _CONCRETE_PATHS.get(class_name)
    if cls is None:
        raise _Malformed(f"{class_name!r} is not a path class")
    value = cls(text)
    return _canonical(value, text, str(value))


def _leaf(read: Callable[[dict[str, Any]], Any]) -> Callable[[Decoder, dict[str, Any], int], Any]:
    return lambda decoder, node, depth: read(node)


_READERS: dict[str, Callable[[Decoder, dict[str, Any], int], Any]] = {
    "int": _leaf(_int),
    "float": _leaf(_float),
    "complex": _leaf(_complex),
    "datetime": _leaf(_datetime),
    "date": _leaf(_date),
    "time": _leaf(_time),
    "timedelta": _leaf(_timedelta),
    "uuid": _leaf(_uuid),
    "decimal": _leaf(_decimal),
    "path": _leaf(_path),
    "dict": Decoder._dict,
    "tuple": lambda d, node, depth: tuple(d._children(node, depth)),
    "set": lambda d, node, depth: set(d._children(node, depth)),
    "frozenset": lambda d, node, depth: frozenset(d._children(node, depth)),
    "bytes": lambda d, node, depth: bytes(d._buffer(node)),
    "bytearray": lambda d, node, depth: bytearray(d._buffer(node)),
    "ndarray": Decoder._ndarray,
    "npscalar": Decoder._npscalar,
    "ext": Decoder._ext,
}
