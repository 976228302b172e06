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
- A value that cannot be encoded raises :class:`EncodingError` naming its key path and
  type. Nothing is ever encoded with ``str()`` or replaced by a placeholder, and decoding
  never executes code.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any

import orjson

from .errors import CorruptCheckpointError, EncodingError

TAG = "$r"

# Binary leaves up to this size are base64 inside the node itself: not worth a part.
TINY_BINARY = 64
# Binary leaves from this size on become their own content-addressed blob, so that a
# large value unchanged since the last checkpoint costs no upload at all.
LARGE_BINARY = 64 * 1024

JSON = Any
BlobSink = Callable[[memoryview], str]
BlobSource = Callable[[str], memoryview]


@dataclass(frozen=True)
class TypeCodec:
    """How to encode one registered type: to and from a value the codec already supports."""

    name: str
    type: type
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


_REGISTRY_BY_NAME: dict[str, TypeCodec] = {}
_REGISTRY_BY_TYPE: dict[type, TypeCodec] = {}


def register_codec(
    cls: type,
    *,
    name: str,
    encode: Callable[[Any], Any],
    decode: Callable[[Any], Any],
) -> None:
    """Teach the codec a further type.

    ``encode(obj)`` must return a value the codec supports (it may contain arrays or
    other registered types); ``decode(value)`` must rebuild an equal object from it. The
    ``name`` is stored in checkpoints, so keep it stable across releases of your code.
    Subclasses of ``cls`` are encoded with the same codec unless registered themselves.
    """
    if not name or TAG in name:
        raise ValueError(f"invalid codec name {name!r}")
    existing = _REGISTRY_BY_NAME.get(name)
    if existing is not None and existing.type is not cls:
        raise ValueError(f"codec name {name!r} is already registered for {existing.type!r}")
    codec = TypeCodec(name=name, type=cls, encode=encode, decode=decode)
    _REGISTRY_BY_NAME[name] = codec
    _REGISTRY_BY_TYPE[cls] = codec


def unregister_codec(name: str) -> None:
    """Forget a registered codec (mainly for tests)."""
    codec = _REGISTRY_BY_NAME.pop(name, None)
    if codec is not None:
        _REGISTRY_BY_TYPE.pop(codec.type, None)


def _registered_codec_for(cls: type) -> TypeCodec | None:
    for base in cls.__mro__:
        codec = _REGISTRY_BY_TYPE.get(base)
        if codec is not None:
            return codec
    return None


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
        self._large = large_binary
        self._np = _numpy_or_none()
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
        for path_cls in _PATH_CLASSES:
            handlers[path_cls] = self._path
        if self._np is not None:
            handlers[self._np.ndarray] = self._ndarray
        self._handlers = handlers

    def encode(self, value: Any, path: str) -> EncodedValue:
        out = EncodedValue(node=None)
        out.node = self._node(value, path, out)
        return out

    def _binary(self, tag: str, data: memoryview, out: EncodedValue, extra: dict[str, Any]) -> Any:
        node: dict[str, Any] = {TAG: tag, **extra}
        if data.nbytes <= TINY_BINARY:
            node["b64"] = base64.b64encode(data).decode("ascii")
        elif data.nbytes >= self._large:
            address = self._sink(data)
            node["blob"] = address
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
        codec = _registered_codec_for(cls)
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
        return {
            TAG: "ext",
            "name": codec.name,
            "v": self._node(inner, f"{path}<{codec.name}>", out),
        }

    def _int(self, value: int, path: str, out: EncodedValue) -> Any:
        if -(2**63) <= value < 2**63:
            return value
        return {TAG: "int", "v": str(value)}

    def _float(self, value: float, path: str, out: EncodedValue) -> Any:
        if math.isfinite(value):
            return value
        return {TAG: "float", "v": repr(value)}

    def _list(self, value: list[Any], path: str, out: EncodedValue) -> Any:
        return [self._node(item, f"{path}[{i}]", out) for i, item in enumerate(value)]

    def _dict(self, value: dict[Any, Any], path: str, out: EncodedValue) -> Any:
        if all(type(k) is str for k in value) and TAG not in value:
            return {k: self._node(v, _path_key(path, k), out) for k, v in value.items()}
        return {
            TAG: "dict",
            "items": [
                [self._node(k, f"{path}<key {k!r}>", out), self._node(v, _path_key(path, k), out)]
                for k, v in value.items()
            ],
        }

    def _tuple(self, value: tuple[Any, ...], path: str, out: EncodedValue) -> Any:
        return {
            TAG: "tuple",
            "v": [self._node(x, f"{path}[{i}]", out) for i, x in enumerate(value)],
        }

    def _set(self, value: set[Any] | frozenset[Any], path: str, out: EncodedValue) -> Any:
        items = [self._node(x, f"{path}<item>", out) for x in value]
        # Sorted so that equal sets encode to equal bytes: unchanged sets dedupe.
        items.sort(key=orjson.dumps)
        return {TAG: type(value).__name__, "v": items}

    def _bytes(self, value: bytes | bytearray, path: str, out: EncodedValue) -> Any:
        return self._binary(type(value).__name__, memoryview(value), out, {})

    def _complex(self, value: complex, path: str, out: EncodedValue) -> Any:
        return {TAG: "complex", "v": [repr(value.real), repr(value.imag)]}

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
        return {TAG: "path", "class": type(value).__name__, "v": str(value)}

    def _ndarray(self, array: Any, path: str, out: EncodedValue) -> Any:
        np = self._np
        assert np is not None
        dtype = array.dtype
        descr = _DESCR_CACHE.get(dtype)
        if descr is None:
            if dtype.hasobject:
                raise EncodingError(
                    path, f"numpy.ndarray[{dtype}]", "object arrays are not supported"
                )
            descr = _dtype_descr(dtype, path)
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
        descr = _dtype_descr(value.dtype, path)
        return {TAG: "npscalar", "dtype": descr, "b64": base64.b64encode(value.tobytes()).decode()}


def _type_name(value: object) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


_PATH_CLASSES: dict[type[PurePath], str] = {
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


_DESCR_CACHE: dict[Any, Any] = {}


def _dtype_descr(dtype: Any, path: str) -> Any:
    cached = _DESCR_CACHE.get(dtype)
    if cached is not None:
        return cached
    np = _numpy_or_none()
    assert np is not None
    descr = np.lib.format.dtype_to_descr(dtype)
    if _descr_to_dtype(descr) != dtype:
        raise EncodingError(path, f"numpy.ndarray[{dtype}]", "dtype cannot be stored exactly")
    # Round-trip through JSON now, so that the cached value is what the manifest holds.
    descr = orjson.loads(orjson.dumps(descr))
    _DESCR_CACHE[dtype] = descr
    return descr


def _tuplify(descr: Any) -> Any:
    if isinstance(descr, list):
        return [
            tuple(_tuplify(x) for x in field_) if isinstance(field_, list) else field_
            for field_ in descr
        ]
    return descr


def _descr_to_dtype(descr: Any) -> Any:
    np = _numpy_or_none()
    if np is None:
        raise CorruptCheckpointError("the checkpoint holds numpy values: install numpy to load it")
    return np.lib.format.descr_to_dtype(_tuplify(descr))


def _numpy_or_none() -> Any:
    try:
        import numpy
    except ImportError:  # numpy is optional at runtime
        return None
    return numpy


class Decoder:
    """Decodes one node; ``parts`` are the value's inline buffers, ``source`` fetches blobs."""

    def __init__(self, parts: list[memoryview], source: BlobSource) -> None:
        self._parts = parts
        self._source = source

    def decode(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.decode(x) for x in node]
        if not isinstance(node, dict):
            return node
        tag = node.get(TAG)
        if tag is None:
            return {k: self.decode(v) for k, v in node.items()}
        try:
            return self._tagged(tag, node)
        except CorruptCheckpointError:
            raise
        except _SourceFailure as failure:
            # Storage failed while fetching a blob: not damage, so not a checkpoint error
            # (a retry may well succeed); raised as it came.
            raise failure.error from None
        except Exception as exc:
            raise CorruptCheckpointError(f"cannot decode a {tag!r} value: {exc}") from exc

    def _tagged(self, tag: str, node: dict[str, Any]) -> Any:
        if tag == "int":
            return int(node["v"])
        if tag == "float":
            return float(node["v"])
        if tag == "dict":
            return {self.decode(k): self.decode(v) for k, v in node["items"]}
        if tag == "tuple":
            return tuple(self.decode(x) for x in node["v"])
        if tag == "set":
            return {self.decode(x) for x in node["v"]}
        if tag == "frozenset":
            return frozenset(self.decode(x) for x in node["v"])
        if tag == "bytes":
            return bytes(self._buffer(node))
        if tag == "bytearray":
            return bytearray(self._buffer(node))
        if tag == "complex":
            return complex(float(node["v"][0]), float(node["v"][1]))
        if tag == "datetime":
            return _decode_datetime(node)
        if tag == "date":
            return dt.date.fromisoformat(node["v"])
        if tag == "time":
            return dt.time.fromisoformat(node["v"]).replace(fold=node.get("fold", 0))
        if tag == "timedelta":
            days, seconds, micros = node["v"]
            return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if tag == "uuid":
            return uuid.UUID(node["v"])
        if tag == "decimal":
            return Decimal(node["v"])
        if tag == "path":
            return _decode_path(node["class"], node["v"])
        if tag == "ndarray":
            return self._ndarray(node)
        if tag == "npscalar":
            dtype = _descr_to_dtype(node["dtype"])
            np = _numpy_or_none()
            assert np is not None
            return np.frombuffer(base64.b64decode(node["b64"]), dtype=dtype)[0]
        if tag == "ext":
            codec = _REGISTRY_BY_NAME.get(node["name"])
            if codec is None:
                raise CorruptCheckpointError(
                    f"the checkpoint holds a value of registered type {node['name']!r}, but no "
                    "codec of that name is registered in this process: call "
                    "resumable.register_codec before loading"
                )
            return codec.decode(self.decode(node["v"]))
        raise CorruptCheckpointError(f"unknown value tag {tag!r}")

    def _buffer(self, node: dict[str, Any]) -> memoryview:
        if "b64" in node:
            return memoryview(bytearray(base64.b64decode(node["b64"])))
        if "part" in node:
            part: memoryview = self._parts[int(node["part"])]
            return part
        address = str(node["blob"])
        try:
            return self._source(address)
        except CorruptCheckpointError:
            raise
        except Exception as exc:
            raise _SourceFailure(exc) from exc

    def _ndarray(self, node: dict[str, Any]) -> Any:
        np = _numpy_or_none()
        dtype = _descr_to_dtype(node["dtype"])
        assert np is not None
        shape = tuple(node["shape"])
        buffer = self._buffer(node)
        count = math.prod(shape)
        if buffer.nbytes != count * dtype.itemsize:
            raise CorruptCheckpointError(
                f"array data is {buffer.nbytes} bytes, expected {count * dtype.itemsize} for "
                f"shape {shape} and dtype {dtype}"
            )
        if count == 0:
            return np.empty(shape, dtype=dtype, order=node.get("order", "C"))
        if buffer.readonly:
            buffer = memoryview(bytearray(buffer))
        flat = np.frombuffer(buffer, dtype=dtype, count=count)
        if node.get("order") == "F":
            return flat.reshape(shape[::-1]).T
        return flat.reshape(shape)


class _SourceFailure(Exception):
    """Carries an error of the blob source through the decoder's own error handling."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _decode_path(class_name: str, text: str) -> PurePath:
    for cls in _PATH_CLASSES:
        if cls.__name__ == class_name:
            path: PurePath = cls(text)
            return path
    # A concrete path written on another OS: keep its flavour, without touching the disk.
    return PureWindowsPath(text) if class_name == "WindowsPath" else PurePosixPath(text)


def _decode_datetime(node: dict[str, Any]) -> dt.datetime:
    naive = dt.datetime.fromisoformat(node["v"]).replace(fold=node.get("fold", 0))
    if "zone" in node:
        from zoneinfo import ZoneInfo

        return naive.replace(tzinfo=ZoneInfo(node["zone"]))
    if "offset" in node:
        days, seconds, micros = node["offset"]
        offset = dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if "tzname" in node:
            return naive.replace(tzinfo=dt.timezone(offset, node["tzname"]))
        return naive.replace(tzinfo=dt.UTC if not offset else dt.timezone(offset))
    return naive


def encode_tree_json(node: Any) -> bytes:
    """Serialise a node tree. Non-string dict keys never occur: the encoder tags them."""
    return orjson.dumps(node)


def iter_blob_addresses(node: Any) -> Iterable[str]:
    """Every blob address a node tree refers to (for validation and garbage collection)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if TAG in item and "blob" in item:
                yield item["blob"]
            stack.extend(item.values())
