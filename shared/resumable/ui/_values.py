"""What the checkpoint browser says about a context value, and image thumbnails.

A value is described by its type, its stored size (from its checkpoint entry), an
array's dtype, shape and size in memory, and a short JSON preview of small values. A
``uint8`` array shaped H×W or H×W×3 (or ×4) is an image: :func:`thumbnail_png` encodes a
downscaled copy as PNG with the standard library alone (no imaging dependency).
"""

from __future__ import annotations

import json
import math
import struct
import sys
import zlib
from typing import Any

from resumable.ui._data import summarize
from resumable.ui._models import ValueView

PREVIEW_CHARS = 240
THUMBNAIL_SIDE = 160


def stored_bytes(entry: Any) -> int | None:
    """The size of a checkpoint entry as stored: its segment's bytes, or its inline JSON.
    ``None`` when the value has large blobs of its own (their sizes are not in the entry)."""
    if not isinstance(entry, dict):
        return None
    if entry.get("blobs"):
        return None
    if "segment" in entry:
        return int(entry.get("bytes") or 0)
    return len(json.dumps(entry.get("v"), separators=(",", ":"), default=str))


def _is_array(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def is_image(value: Any) -> bool:
    """A ``uint8`` array of shape H×W, H×W×3 or H×W×4 with both sides at least 2."""
    if not _is_array(value) or value.dtype.name != "uint8":
        return False
    shape = tuple(int(n) for n in value.shape)
    if len(shape) == 2:
        return shape[0] >= 2 and shape[1] >= 2
    return len(shape) == 3 and shape[2] in (3, 4) and shape[0] >= 2 and shape[1] >= 2


def value_view(key: str, value: Any, entry: Any = None) -> ValueView:
    """Describe one context value for the checkpoint browser."""
    size = stored_bytes(entry)
    if _is_array(value):
        return ValueView(
            key=key,
            type="ndarray",
            stored_bytes=size,
            dtype=str(value.dtype),
            shape=tuple(int(n) for n in value.shape),
            nbytes=int(value.nbytes),
            preview=_array_preview(value),
            image=is_image(value),
        )
    length = (
        len(value) if isinstance(value, str | bytes | bytearray | list | tuple | dict) else None
    )
    if isinstance(value, set | frozenset):
        length = len(value)
    text = json.dumps(value if isinstance(value, str) else summarize(value), ensure_ascii=False)
    return ValueView(
        key=key,
        type=type(value).__name__,
        stored_bytes=size,
        length=length,
        preview=text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…",
    )


def _array_preview(value: Any) -> str | None:
    """The first few elements of a small numeric array, else ``None``."""
    if value.size == 0 or value.dtype.kind not in "biuf":
        return None
    flat = value.reshape(-1)[:8].tolist()
    more = ", …" if value.size > 8 else ""
    return "[" + ", ".join(str(v) for v in flat) + more + "]"


def thumbnail_png(image: Any, *, side: int = THUMBNAIL_SIDE) -> bytes:
    """A PNG of ``image`` (see :func:`is_image`), downscaled by striding to at most
    ``side`` pixels on its longer side."""
    if not is_image(image):
        raise ValueError("not a uint8 H×W, H×W×3 or H×W×4 array")
    stride = max(1, math.ceil(max(image.shape[0], image.shape[1]) / side))
    small = image[::stride, ::stride]
    import numpy

    small = numpy.ascontiguousarray(small)
    height, width = small.shape[:2]
    color = 0 if small.ndim == 2 else (2 if small.shape[2] == 3 else 6)  # gray, RGB, RGBA
    rows = small.reshape(height, -1)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(height))
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)),
            _chunk(b"IDAT", zlib.compress(raw, 6)),
            _chunk(b"IEND", b""),
        ]
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )
