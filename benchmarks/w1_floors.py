"""The floors W1 is compared with: B (naive full JSON) and C (raw incremental writes).

Each floor is a checkpointer called after every step with the full context and the keys
the step returned, plus a loader that reads its checkpoint back.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

C_DURABILITY = "write + fsync per file (no temp file, no rename, no directory fsync)"
B_DURABILITY = "plain overwrite, no fsync (what a straightforward implementation does)"

_HEADER_LENGTH = struct.Struct("<Q")


class RawIncrementalCheckpointer:
    """Floor C: after a step, write only the values it changed, one file per top-level key.

    A file is an 8-byte header length, a UTF-8 JSON header (the value's structure, every
    array replaced by ``{"$a": index, "dtype": ..., "shape": ...}``), then the arrays' raw
    bytes, exactly ``ndarray.tobytes()``, written from the arrays' own buffers. Every file
    is fsynced: a checkpoint must be durable.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.bytes_written = 0
        self.files_written = 0

    def after_step(self, context: Mapping[str, Any], updates: Mapping[str, Any]) -> None:
        """Checkpoint after a step: only ``updates`` (what the step returned) is written."""
        for key, value in updates.items():
            self._write(key, value)

    def _write(self, key: str, value: Any) -> None:
        buffers: list[memoryview] = []
        header = json.dumps(_skeleton(value, buffers)).encode()
        fd = os.open(self.folder / f"{key}.raw", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for chunk in (memoryview(_HEADER_LENGTH.pack(len(header))), memoryview(header)):
                self.bytes_written += _write_all(fd, chunk)
            for buffer in buffers:
                self.bytes_written += _write_all(fd, buffer)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.files_written += 1


def _write_all(fd: int, view: memoryview) -> int:
    total = view.nbytes
    while view.nbytes:
        view = view[os.write(fd, view) :]
    return total


def _skeleton(value: Any, buffers: list[memoryview]) -> Any:
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        buffers.append(array.reshape(-1).view(np.uint8).data)
        return {"$a": len(buffers) - 1, "dtype": array.dtype.str, "shape": list(array.shape)}
    if isinstance(value, Mapping):
        return {k: _skeleton(v, buffers) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_skeleton(v, buffers) for v in value]
    return value


def load_raw_incremental(folder: Path) -> dict[str, Any]:
    """Read every key file of floor C back (arrays are views into the read buffers)."""
    context: dict[str, Any] = {}
    for path in sorted(folder.glob("*.raw")):
        data = _read_writable(path)
        view = data.data
        (length,) = _HEADER_LENGTH.unpack_from(view)
        skeleton = json.loads(bytes(view[_HEADER_LENGTH.size : _HEADER_LENGTH.size + length]))
        context[path.stem] = _rebuild(skeleton, view, _HEADER_LENGTH.size + length, [0])
    return context


def _read_writable(path: Path) -> np.ndarray:
    """The file's bytes in a writable, uninitialised buffer (no zero-fill, no extra copy)."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        data = np.empty(size, dtype=np.uint8)
        view = data.data
        got = 0
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                raise OSError(f"{path} shrank while reading")
            got += n
    return data


def _rebuild(node: Any, data: memoryview, base: int, offset: list[int]) -> Any:
    if isinstance(node, dict) and "$a" in node:
        dtype = np.dtype(node["dtype"])
        shape = tuple(node["shape"])
        size = int(np.prod(shape)) * dtype.itemsize
        start = base + offset[0]
        offset[0] += size
        return np.frombuffer(data[start : start + size], dtype=dtype).reshape(shape)
    if isinstance(node, dict):
        return {k: _rebuild(v, data, base, offset) for k, v in node.items()}
    if isinstance(node, list):
        return [_rebuild(v, data, base, offset) for v in node]
    return node


class NaiveJsonCheckpointer:
    """Floor B: ``json.dumps(context, indent=2)`` with arrays via ``.tolist()``, one file
    overwritten after every step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.bytes_written = 0

    def after_step(self, context: Mapping[str, Any], updates: Mapping[str, Any]) -> None:
        """Checkpoint after a step: the whole ``context``, every time."""
        text = json.dumps(_jsonable(context), indent=2)
        data = text.encode()
        with open(self.path, "wb") as f:
            f.write(data)
        self.bytes_written += len(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def load_naive_json(path: Path) -> dict[str, Any]:
    """Floor B's load: ``json.loads`` of the file (arrays stay lists, as B stored them)."""
    loaded: dict[str, Any] = json.loads(path.read_bytes())
    return loaded
