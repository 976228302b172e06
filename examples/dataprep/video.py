"""Video input with PyAV: decode frames to numpy, fetch ``gs://`` videos, make test clips.

Decoding is sequential and deterministic: the same file always yields the same frames,
bit for bit, which is what lets an interrupted ``extract_frames`` resume by frame index.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

# Encoders tried in order by make_test_clip: both ship in the PyAV wheels and need no network.
PREFERRED_CODECS = ("libx264", "mpeg4")


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame: its index in the stream, timestamps and RGB pixels."""

    index: int
    pts: int | None
    time: float | None
    image: NDArray[np.uint8]  # H x W x 3, RGB


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the first video stream."""

    width: int
    height: int
    fps: float | None
    codec: str
    frames: int | None  # as declared by the container; may be missing or approximate

    def as_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "codec": self.codec,
            "frames": self.frames,
        }


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Read the first video stream's size, rate and codec without decoding it."""
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate
        return VideoInfo(
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            fps=float(rate) if rate else None,
            codec=str(stream.codec_context.name),
            frames=int(stream.frames) or None,
        )


def iter_frames(
    path: str | os.PathLike[str],
    *,
    start: int = 0,
    stride: int = 1,
    stop: int | None = None,
) -> Iterator[DecodedFrame]:
    """Decode the first video stream, yielding every ``stride``-th frame as RGB uint8.

    Frames are numbered from 0 in decode order. Frames before ``start`` are decoded (a
    stream can only be decoded in order) but not converted, so skipping is cheap;
    decoding ends before frame ``stop``.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if stop is not None and index >= stop:
                break
            if index < start or index % stride:
                continue
            image = frame.to_ndarray(format="rgb24")
            seconds = float(frame.time) if frame.time is not None else None
            yield DecodedFrame(index, frame.pts, seconds, np.ascontiguousarray(image))


def local_video(video_path: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A local path for ``video_path``: the path itself, or a download of a ``gs://`` URL.

    Downloads go to ``cache_dir`` (default: the system temp folder) under a name derived
    from the URL and the object's generation, are written atomically, and are reused while
    the object is unchanged. A missing file or object raises ``FileNotFoundError``.
    """
    if not video_path.startswith("gs://"):
        path = Path(video_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"video {video_path!r} does not exist")
        return path
    bucket_name, _, blob_name = video_path[len("gs://") :].partition("/")
    if not bucket_name or not blob_name:
        raise ValueError(f"{video_path!r} is not a gs://BUCKET/OBJECT URL")
    from resumable.storage.gcs import make_storage_client  # google-cloud-storage

    blob = make_storage_client().bucket(bucket_name).get_blob(blob_name)
    if blob is None:
        raise FileNotFoundError(f"video {video_path!r} does not exist")
    folder = Path(cache_dir or tempfile.gettempdir()) / "dataprep-videos"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(f"{video_path}#{blob.generation}".encode()).hexdigest()[:16]
    target = folder / f"{digest}{Path(blob_name).suffix}"
    if target.is_file():
        return target
    partial = folder / f".{target.name}.{os.getpid()}.part"
    try:
        blob.download_to_filename(str(partial))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def encoder_available(codec: str) -> bool:
    """Whether the installed PyAV (its bundled FFmpeg) can encode with ``codec``."""
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        return False
    return True


def pick_codec(preferred: Sequence[str] = PREFERRED_CODECS) -> str:
    """The first of ``preferred`` this PyAV build can encode with."""
    for codec in preferred:
        if encoder_available(codec):
            return codec
    raise RuntimeError(f"none of the video encoders {list(preferred)} is available in PyAV")


# The test clip's colored rectangles, in fractions of the frame so that the clip is the
# same scene at every size: (RGB color, width, height, start x, start y, speed x, speed y),
# widths and x in fractions of the frame's width, heights and y of its height, speeds per
# frame. Each moves about a seventh of its own width per frame, so its boxes overlap from
# frame to frame (IoU about 0.75; about 0.4 at frame_stride=3) and, in clips of 16 frames
# or more, or 8 frames taken every 3rd, no pixel is covered in half of the frames (so the
# median frame is the background). None bounces off an edge in the first 24 frames.
SPRITES: tuple[tuple[tuple[int, int, int], float, float, float, float, float, float], ...] = (
    ((230, 40, 40), 0.10, 0.12, 0.05, 0.10, 0.015, 0.0),
    ((40, 200, 60), 0.08, 0.16, 0.80, 0.42, -0.0115, 0.0),
    ((50, 80, 235), 0.12, 0.10, 0.25, 0.76, 0.017, 0.0),
)


def sprite_boxes(
    t: int, size: tuple[int, int], objects: int = len(SPRITES)
) -> list[tuple[tuple[int, int, int], tuple[int, int, int, int]]]:
    """The first ``objects`` rectangles of frame ``t``: (color, box ``x0 y0 x1 y1``) each.

    This is the ground truth of :func:`synth_frames`: the rectangles move in separate
    horizontal lanes, never overlap, and bounce off the frame's edges, so they are always
    entirely visible. ``size`` is (width, height).
    """
    width, height = size
    out = []
    for color, fw, fh, x0, y0, vx, vy in SPRITES[:objects]:
        w, h = max(1, round(fw * width)), max(1, round(fh * height))
        left = round(_bounce(x0 + vx * t, 1.0 - w / width) * width)
        top = round(_bounce(y0 + vy * t, 1.0 - h / height) * height)
        out.append((color, (left, top, left + w, top + h)))
    return out


def synth_frames(
    frames: int, size: tuple[int, int], seed: int = 0, objects: int = len(SPRITES)
) -> Iterator[NDArray[np.uint8]]:
    """A deterministic clip: colored rectangles moving over a static textured background.

    ``objects`` (0 to 3) rectangles, placed by :func:`sprite_boxes`; with 0 the clip is
    the background alone. ``size`` is (width, height).
    """
    width, height = size
    if not 0 <= objects <= len(SPRITES):
        raise ValueError(f"objects must be in [0, {len(SPRITES)}], got {objects}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # Smooth gradients plus a mild fixed grain: textured but easy to model by a median.
    base = np.stack(
        [
            110 + 30 * np.sin(xx / 9.0) + 10 * np.cos(yy / 7.0),
            120 + 25 * np.cos((xx + yy) / 13.0),
            100 + 20 * np.sin(yy / 5.0),
        ],
        axis=-1,
    )
    base += rng.normal(0.0, 4.0, size=base.shape).astype(np.float32)
    background = np.clip(base, 0, 255).astype(np.uint8)
    for t in range(frames):
        image = background.copy()
        for color, (x0, y0, x1, y1) in sprite_boxes(t, size, objects):
            image[y0:y1, x0:x1] = color
        yield image


def _bounce(position: float, limit: float) -> float:
    """Fold ``position`` into [0, limit] like a ball bouncing between two walls."""
    period = 2 * limit
    p = position % period
    return p if p <= limit else period - p


def make_test_clip(
    path: str | os.PathLike[str],
    frames: int = 36,
    size: tuple[int, int] = (160, 120),
    *,
    fps: int = 12,
    seed: int = 0,
    objects: int = len(SPRITES),
    codec: str | None = None,
) -> Path:
    """Encode the deterministic synthetic clip (see :func:`synth_frames`) to ``path``.

    ``objects`` is how many of the three rectangles it shows (0: the background alone).

    The codec defaults to the first of ``libx264`` / ``mpeg4`` this PyAV build offers,
    at high quality so that detection sees clean edges. Encoding is single-threaded, so
    the same arguments give the same file.
    """
    codec = codec or pick_codec()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"size must be even for yuv420p, got {size}")
    with av.open(str(target), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        if codec in ("libx264", "h264"):
            stream.options = {"crf": "12", "preset": "ultrafast", "tune": "zerolatency"}
        else:
            stream.bit_rate = 4_000_000
            stream.options = {"qscale": "2"}
        for image in synth_frames(frames, size, seed, objects):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return target
