"""The dataset on storage: image encoding, writing it idempotently, and reading it back.

Layout under ``{store}/datasets/{video_guid}/``::

    manifest.json                   files, shapes, labels, splits and parameters
    train/{track}/{frame}.png       a crop with its background removed
    train/{track}/{frame}_aug{k}.png  its augmented copies (training split only)
    val/{track}/{frame}.png

Images are PNG (written by a tiny zlib-based encoder) or ``.npy``. Encoding is
deterministic and the manifest has no timestamps or run ids, so the same input gives the
same objects byte for byte; writing again overwrites the same names.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from resumable.storage import ObjectStore, open_store

MANIFEST = "manifest.json"
FORMAT = "resumable-dataprep/1"
IMAGE_FORMATS = ("png", "npy")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG color type (gray, RGB, RGBA)
_CHANNELS = {v: k for k, v in _COLOR_TYPES.items()}


def dataset_prefix(video_guid: str) -> str:
    """The object-name prefix of a video's dataset inside a store."""
    return f"datasets/{video_guid}/"


# -- image encoding -----------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(image: NDArray[np.uint8], level: int = 6) -> bytes:
    """A PNG of an 8-bit gray (H x W), RGB or RGBA (H x W x C) image; no filtering."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"PNG needs uint8 pixels, got {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in _COLOR_TYPES:
        raise ValueError(f"PNG needs H x W or H x W x 1/3/4 pixels, got shape {array.shape}")
    height, width, channels = array.shape
    if not height or not width:
        raise ValueError(f"PNG cannot hold an empty image of shape {array.shape}")
    rows = np.zeros((height, width * channels + 1), dtype=np.uint8)  # filter byte 0 per row
    rows[:, 1:] = array.reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return b"".join(
        [
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)),
            _chunk(b"IEND", b""),
        ]
    )


def decode_png(data: bytes) -> NDArray[np.uint8]:
    """Decode a PNG written by :func:`encode_png` (8-bit, not interlaced, filter 0).

    Gray images come back as H x W, others as H x W x C.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    position = len(_PNG_SIGNATURE)
    header: tuple[int, ...] | None = None
    compressed: list[bytes] = []
    while position < len(data):
        (length,) = struct.unpack_from(">I", data, position)
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, color, _, _, interlace = header
    if depth != 8 or color not in _CHANNELS or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, color type {color}, interlace)")
    channels = _CHANNELS[color]
    raw = np.frombuffer(zlib.decompress(b"".join(compressed)), dtype=np.uint8)
    rows = raw.reshape(height, width * channels + 1)
    if rows[:, 0].any():
        raise ValueError("PNG uses row filters; only unfiltered PNGs are supported")
    image = rows[:, 1:].reshape(height, width, channels).copy()
    return image[..., 0] if channels == 1 else image


def encode_npy(image: NDArray[Any]) -> bytes:
    """The ``.npy`` bytes of ``image`` (numpy's own format writer)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(image), allow_pickle=False)
    return buffer.getvalue()


def decode_npy(data: bytes) -> NDArray[Any]:
    return np.asarray(np.lib.format.read_array(io.BytesIO(data), allow_pickle=False))


def encode_image(image: NDArray[np.uint8], image_format: str) -> bytes:
    if image_format == "png":
        return encode_png(image)
    if image_format == "npy":
        return encode_npy(image)
    raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")


def decode_image(name: str, data: bytes) -> NDArray[Any]:
    if name.endswith(".png"):
        return decode_png(data)
    if name.endswith(".npy"):
        return decode_npy(data)
    raise ValueError(f"{name!r} is not a .png or .npy file")


# -- writing and reading ------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetFile:
    """One image of the dataset and its manifest record."""

    name: str  # relative to the dataset folder, e.g. "train/track_000/00012.png"
    image: NDArray[np.uint8]
    record: Mapping[str, Any]


@dataclass(frozen=True)
class WrittenDataset:
    url: str
    manifest: str
    files: int
    removed: int


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, indented, trailing newline."""
    return orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def write_dataset(
    store: ObjectStore,
    video_guid: str,
    files: list[DatasetFile],
    manifest: Mapping[str, Any],
    image_format: str = "png",
    *,
    workers: int = 8,
) -> WrittenDataset:
    """Write every image, then the manifest (which lists them), then drop stale objects.

    Images are encoded and written by ``workers`` threads (object stores are I/O bound:
    one upload or fsync at a time would dominate the step). Idempotent: writing the same
    dataset again rewrites the same names with the same bytes; objects a previous,
    different write left under the prefix are deleted after the new manifest is in
    place, so the folder always matches its manifest.
    """
    prefix = dataset_prefix(video_guid)

    def put(item: DatasetFile) -> None:
        store.write(prefix + item.name, encode_image(item.image, image_format))

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="dataprep-write") as pool:
        for _ in pool.map(put, files):  # re-raises the first failure
            pass
    records = [
        {**item.record, "file": item.name, "shape": list(item.image.shape), "dtype": "uint8"}
        for item in files
    ]
    records.sort(key=lambda r: str(r["file"]))
    full = {**manifest, "format": FORMAT, "image_format": image_format, "files": records}
    store.write(prefix + MANIFEST, manifest_bytes(full))
    keep = {prefix + item.name for item in files} | {prefix + MANIFEST}
    stale = [name for name in store.list(prefix) if name not in keep]
    for name in stale:
        store.delete(name)
    return WrittenDataset(
        url=f"{store.url.rstrip('/')}/{prefix}",
        manifest=prefix + MANIFEST,
        files=len(files),
        removed=len(stale),
    )


def read_dataset(store_url: Any, video_guid: str, *, decode: bool = False) -> dict[str, Any]:
    """Every object of a video's dataset, by name relative to the dataset folder.

    ``store_url`` is anything :func:`resumable.storage.open_store` accepts (a folder, a
    ``file://`` or ``gs://`` URL, a store). Values are the raw bytes; with ``decode``,
    images are numpy arrays and ``manifest.json`` is the parsed manifest.
    """
    store = open_store(store_url)
    prefix = dataset_prefix(video_guid)
    out: dict[str, Any] = {}
    for name in store.list(prefix):
        relative = name[len(prefix) :]
        data = store.read(name)
        if not decode:
            out[relative] = data
        elif relative == MANIFEST:
            out[relative] = orjson.loads(data)
        else:
            out[relative] = decode_image(relative, data)
    return out
