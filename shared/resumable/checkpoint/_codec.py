"""The context codec: exact, pickle-free encoding of context values.

A value becomes a JSON *node* plus binary buffers. JSON-native values stay as they are;
every other supported type becomes a tagged node ``{"$r": tag, ...}``. Binary data (numpy
arrays, bytes) is never turned into lists or text: small buffers travel as *parts* of the
value's segment, large ones as separate content-addressed blobs (see ``checkpoint``), so
an unchanged large array is never written twice.

Guarantees:

- ``decode(encode(v)) == v`` with the same types, for JSON values, ``bytes``,
  ``bytearray``, ``tuple``, ``set``, ``frozenset``, ``complex``, ``datetime`` / ``date`` /
  ``time`` / ``timedelta`` (fixed offsets and IANA zones), ``UUID``, ``Decimal``,
  ``PurePath``, dicts with non-string keys, non-finite floats and arbitrarily large ints.
- numpy arrays of any non-object dtype (structured, datetime, string dtypes included)
  come back bit-exact: same dtype, shape, memory order and bytes; numpy scalars too.
- Further types through :func:`register_codec`.
- Floats keep their exact bits: ``-0.0``, subnormals, and NaN payloads and signs.
- A value that cannot be encoded raises :class:`EncodingError` naming its key path and
  type; so does one nested more than :data:`MAX_DEPTH` levels deep. Nothing is ever
  encoded with ``str()`` or replaced by a placeholder.

Decoding (``resumable.checkpoint._decoder``) never executes code and accepts only what this encoder
writes: anything else is a :class:`CorruptCheckpointError`.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any

import orjson

from resumable.checkpoint._dtypes import dtype_descr, numpy_or_none
from resumable.checkpoint._registry import TAG, TypeCodec, registered_codec_for
from resumable.errors import EncodingError

# Binary leaves up to this size are base64 inside the node itself: not worth a part.
TINY_BINARY = 64
# Binary leaves from this size on become their own content-addressed blob, so that a
# large value unchanged since the last checkpoint costs no upload at all.
LARGE_BINARY = 64 * 1024

# How deeply containers may nest in a value's stored form: a list or a dict with string
# keys is one level, a tuple or set two, a dict with other keys three. With the few
# levels a leaf and the manifest add, the JSON stays under orjson's limit (254 levels).
MAX_DEPTH = 200

JSON = Any
BlobSink = Callable[[memoryview], str]

_DOUBLE = struct.Struct("<d")
_UINT64 = struct.Struct("<Q")


def float_bits(value: float) -> int:
    """The IEEE 754 bits of a float (a NaN's payload and sign included)."""
    bits: int = _UINT64.unpack(_DOUBLE.pack(value))[0]
    return bits


def float_from_bits(bits: int) -> float:
    value: float = _DOUBLE.unpack(_UINT64.pack(bits))[0]
    return value


CANONICAL_NAN_BITS = float_bits(math.nan)


def _has_plain_bits(value: float) -> bool:
    """Whether ``repr`` keeps the float exactly: anything but a NaN with a payload or sign."""
    return value == value or float_bits(value) == CANONICAL_NAN_BITS


@dataclass
class EncodedValue:
    """One context value, encoded: its JSON node and the binary parts the node refers to."""

    node: JSON
    parts: list[memoryview] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)


def _path_key(path: str, key: object) -> str:
    return f"{path}[{key!r}]"


class Encoder:
    """Encodes one value; ``sink`` stores a large buffer and returns its blob address."""

    def __init__(self, sink: BlobSink, *, large_binary: int = LARGE_BINARY) -> None:
        self._sink = sink
        self.large_binary = large_binary
        self._np = numpy_or_none()
        self._depth = 0  # containers around the node being built
        handlers: dict[type, Callable[[Any, str, EncodedValue], Any]] = {
            int: self._int,
            float: self._float,
            list: self._list,
            dict: self._dict,
            tuple: self._tuple,
            set: self._set,
            frozenset: self._set,
            bytes: self._bytes,
            bytearray: self._bytes,
            complex: self._complex,
            dt.datetime: self._datetime,
            dt.date: self._date,
            dt.time: self._time,
            dt.timedelta: self._timedelta,
            uuid.UUID: self._uuid,
            Decimal: self._decimal,
        }
        for path_cls in PATH_CLASSES:
            handlers[path_cls] = self._path
        if self._np is not None:
            handlers[self._np.ndarray] = self._ndarray
        self._handlers = handlers

    def encode(self, value: Any, path: str) -> EncodedValue:
        out = EncodedValue(node=None)
        self._depth = 0
        try:
            out.node = self._node(value, path, out)
        except RecursionError:  # a registered codec's own recursion, or a very deep caller
            raise EncodingError(path, _type_name(value), "nested too deeply") from None
        return out

    def _enter(self, levels: int, value: Any, path: str) -> None:
        """Open a container whose children sit ``levels`` JSON levels deeper; the caller
        closes it with ``self._depth -= levels``. (Explicit loops below, not
        comprehensions: each frame counts against Python's recursion limit.)"""
        if self._depth + levels > MAX_DEPTH:
            raise EncodingError(
                path,
                _type_name(value),
                f"nested more than {MAX_DEPTH} levels deep (a list or dict counts one level, "
                "a tuple or set two, a dict with non-string keys three)",
            )
        self._depth += levels

    def _binary(self, tag: str, data: memoryview, out: EncodedValue, extra: dict[str, Any]) -> Any:
        node: dict[str, Any] = {TAG: tag, **extra}
        if data.nbytes <= TINY_BINARY:
            node["b64"] = base64.b64encode(data).decode("ascii")
        elif data.nbytes >= self.large_binary:
            address = self._sink(data)
            node["blob"] = address
            node["n"] = data.nbytes  # so that the reader bounds what it decompresses
            out.blobs.append(address)
        else:
            node["part"] = len(out.parts)
            out.parts.append(data)
        return node

    def _node(self, value: Any, path: str, out: EncodedValue) -> Any:
        cls = type(value)
        if cls is str or cls is bool or value is None:
            return value
        handler = self._handlers.get(cls)
        if handler is not None:
            return handler(value, path, out)
        np = self._np
        if np is not None and isinstance(value, np.generic):
            return self._npscalar(value, path)
        codec = registered_codec_for(cls)
        if codec is not None:
            return self._registered(codec, value, path, out)
        raise EncodingError(path, _type_name(value))

    def _registered(self, codec: TypeCodec, value: Any, path: str, out: EncodedValue) -> Any:
        try:
            inner = codec.encode(value)
        except EncodingError:
            raise
        except Exception as exc:
            raise EncodingError(
                path, _type_name(value), f"codec {codec.name!r} failed: {exc}"
            ) from exc
        self._enter(1, value, path)
        try:
            node = self._node(inner, f"{path}<{codec.name}>", out)
        finally:
            self._depth -= 1
        return {TAG: "ext", "name": codec.name, "v": node}

    def _int(self, value: int, path: str, out: EncodedValue) -> Any:
        if -(2**63) <= value < 2**63:
            return value
        # Hexadecimal: linear time, and free of Python's 4,300-digit limit on decimal text.
        return {TAG: "int", "x": format(value, "x")}

    def _float(self, value: float, path: str, out: EncodedValue) -> Any:
        if math.isfinite(value):
            return value
        if _has_plain_bits(value):
            return {TAG: "float", "v": repr(value)}
        return {TAG: "float", "bits": f"{float_bits(value):016x}"}

    def _list(self, value: list[Any], path: str, out: EncodedValue) -> Any:
        self._enter(1, value, path)
        try:
            return self._items(value, path, out)
        finally:
            self._depth -= 1

    def _items(self, value: list[Any] | tuple[Any, ...], path: str, out: EncodedValue) -> Any:
        nodes = []
        for i, item in enumerate(value):
            nodes.append(self._node(item, f"{path}[{i}]", out))
        return nodes

    def _dict(self, value: dict[Any, Any], path: str, out: EncodedValue) -> Any:
        plain = all(type(k) is str for k in value) and TAG not in value
        self._enter(1 if plain else 3, value, path)
        try:
            if plain:
                node = {}
                for k, v in value.items():
                    node[k] = self._node(v, _path_key(path, k), out)
                return node
            items = []
            for k, v in value.items():
                key_node = self._node(k, f"{path}<key {k!r}>", out)
                items.append([key_node, self._node(v, _path_key(path, k), out)])
            return {TAG: "dict", "items": items}
        finally:
            self._depth -= 1 if plain else 3

    def _tuple(self, value: tuple[Any, ...], path: str, out: EncodedValue) -> Any:
        self._enter(2, value, path)
        try:
            return {TAG: "tuple", "v": self._items(value, path, out)}
        finally:
            self._depth -= 2

    def _set(self, value: set[Any] | frozenset[Any], path: str, out: EncodedValue) -> Any:
        self._enter(2, value, path)
        try:
            items = []
            for x in value:
                items.append(self._node(x, f"{path}<item>", out))
        finally:
            self._depth -= 2
        # Sorted so that equal sets encode to equal bytes: unchanged sets dedupe.
        items.sort(key=orjson.dumps)
        return {TAG: type(value).__name__, "v": items}

    def _bytes(self, value: bytes | bytearray, path: str, out: EncodedValue) -> Any:
        return self._binary(type(value).__name__, memoryview(value), out, {})

    def _complex(self, value: complex, path: str, out: EncodedValue) -> Any:
        if _has_plain_bits(value.real) and _has_plain_bits(value.imag):
            return {TAG: "complex", "v": [repr(value.real), repr(value.imag)]}
        return {TAG: "complex", "bits": [f"{float_bits(x):016x}" for x in (value.real, value.imag)]}

    def _datetime(self, value: dt.datetime, path: str, out: EncodedValue) -> Any:
        return {TAG: "datetime", **_encode_datetime(value, path)}

    def _date(self, value: dt.date, path: str, out: EncodedValue) -> Any:
        return {TAG: "date", "v": value.isoformat()}

    def _time(self, value: dt.time, path: str, out: EncodedValue) -> Any:
        if value.tzinfo is not None:
            raise EncodingError(path, "datetime.time", "times with a tzinfo are not supported")
        return {TAG: "time", "v": value.isoformat(), "fold": value.fold}

    def _timedelta(self, value: dt.timedelta, path: str, out: EncodedValue) -> Any:
        return {TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}

    def _uuid(self, value: uuid.UUID, path: str, out: EncodedValue) -> Any:
        return {TAG: "uuid", "v": str(value)}

    def _decimal(self, value: Decimal, path: str, out: EncodedValue) -> Any:
        return {TAG: "decimal", "v": str(value)}

    def _path(self, value: PurePath, path: str, out: EncodedValue) -> Any:
        text = str(value)
        if str(type(value)(text)) != text:  # some odd UNC paths print as another path
            raise EncodingError(path, _type_name(value), "its text parses to another path")
        return {TAG: "path", "class": type(value).__name__, "v": text}

    def _ndarray(self, array: Any, path: str, out: EncodedValue) -> Any:
        np = self._np
        assert np is not None
        dtype = array.dtype
        if dtype.hasobject:
            raise EncodingError(path, f"numpy.ndarray[{dtype}]", "object arrays are not supported")
        descr = dtype_descr(dtype, path)  # cached: the same dtype costs a lookup
        order = "C"
        flags = array.flags
        if flags.c_contiguous:
            data = array
        elif flags.f_contiguous:
            order, data = "F", array.T
        else:
            data = np.ascontiguousarray(array)
        if not data.size:
            raw = memoryview(b"")
        else:
            try:  # the cheap path: the array's own buffer, as bytes
                raw = memoryview(data).cast("B")
            except (TypeError, ValueError):  # dtypes without a buffer format (datetime64...)
                raw = memoryview(data.reshape(-1).view(np.uint8))
        return self._binary(
            "ndarray", raw, out, {"dtype": descr, "shape": list(array.shape), "order": order}
        )

    def _npscalar(self, value: Any, path: str) -> Any:
        if value.dtype.hasobject:
            raise EncodingError(path, _type_name(value), "object scalars are not supported")
        descr = dtype_descr(value.dtype, path)
        # An empty string scalar's tobytes() is one NUL byte though its dtype has none.
        data = value.tobytes() if value.dtype.itemsize else b""
        return {TAG: "npscalar", "dtype": descr, "b64": base64.b64encode(data).decode()}


def _type_name(value: object) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


PATH_CLASSES: dict[type[PurePath], str] = {
    cls: cls.__name__ for cls in (PurePosixPath, PureWindowsPath, type(Path()))
}


def _encode_datetime(value: dt.datetime, path: str) -> dict[str, Any]:
    tz = value.tzinfo
    node: dict[str, Any] = {"v": value.replace(tzinfo=None).isoformat(), "fold": value.fold}
    if tz is None:
        return node
    key = getattr(tz, "key", None)
    if isinstance(key, str):  # zoneinfo.ZoneInfo: keep the zone, not just today's offset
        node["zone"] = key
        return node
    if isinstance(tz, dt.timezone):
        offset = tz.utcoffset(None)
        node["offset"] = [offset.days, offset.seconds, offset.microseconds]
        if tz is not dt.UTC:
            name = tz.tzname(None)
            if name != dt.timezone(offset).tzname(None):
                node["tzname"] = name
        return node
    raise EncodingError(path, "datetime.datetime", f"unsupported tzinfo {type(tz).__name__}")
