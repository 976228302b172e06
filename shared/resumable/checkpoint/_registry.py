"""Codecs users register for further types (resumable.register_codec)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TypeCodec:
    """How to encode one registered type: to and from a value the codec already supports."""

    name: str
    type: type
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


TAG = "$r"  # marks a stored node as a tagged value, not a plain dict; no codec name holds it

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
    if not isinstance(name, str) or not name or TAG in name:
        raise ValueError(f"invalid codec name {name!r}: a non-empty string without {TAG!r}")
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


def registered_codec_named(name: str) -> TypeCodec | None:
    return _REGISTRY_BY_NAME.get(name)


def registered_codec_for(cls: type) -> TypeCodec | None:
    for base in cls.__mro__:
        codec = _REGISTRY_BY_TYPE.get(base)
        if codec is not None:
            return codec
    return None
