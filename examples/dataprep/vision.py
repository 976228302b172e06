"""Image operations of the data-prep pipeline, in plain numpy (no SciPy, no OpenCV).

- background model: the per-pixel median of the frames;
- detection: pixels far from the background, cleaned by a 3x3 opening, grouped into
  8-connected components (run-length labelling), one box per component;
- tracking: greedy IoU matching of boxes between consecutive frames;
- background removal: zero the pixels of a crop that match the background;
- augmentation: horizontal flips and brightness changes drawn from a seeded RNG.

Every function is deterministic: the same inputs give the same bytes.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.uint8]
Mask = NDArray[np.bool_]
Boxes = NDArray[np.float32]  # N x 4: x0, y0, x1, y1 (pixels, end exclusive)

# Named colors for a crop's coarse label (the dominant color of its foreground).
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "white": (235, 235, 235),
    "gray": (128, 128, 128),
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 235),
    "yellow": (230, 220, 40),
    "cyan": (40, 210, 220),
    "magenta": (210, 50, 210),
}


# -- background and foreground ------------------------------------------------------------


def median_background(frames: Sequence[Image], max_samples: int = 64) -> Image:
    """The per-pixel median of up to ``max_samples`` evenly spaced frames."""
    if not frames:
        raise ValueError("cannot model a background from zero frames")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), max_samples)).round())
    stack = np.stack([frames[int(i)] for i in picks])
    median: Image = np.median(stack, axis=0).round().astype(np.uint8)
    return median


def difference(image: Image, background: Image) -> NDArray[np.int16]:
    """Per pixel, the largest absolute channel difference to the background (0..255)."""
    # max - min is |a - b| without leaving uint8; the channel maximum is taken channel by
    # channel, which is many times faster than a reduction over the short last axis.
    delta = np.maximum(image, background) - np.minimum(image, background)
    if delta.ndim == 3:
        delta = functools.reduce(np.maximum, [delta[..., c] for c in range(delta.shape[-1])])
    return delta.astype(np.int16)


def _shifted_views(mask: Mask) -> list[Mask]:
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    h, w = mask.shape
    return [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]


def erode(mask: Mask) -> Mask:
    """3x3 binary erosion (outside the image counts as background)."""
    out = np.ones_like(mask)
    for view in _shifted_views(mask):
        out &= view
    return out


def dilate(mask: Mask) -> Mask:
    """3x3 binary dilation."""
    out = np.zeros_like(mask)
    for view in _shifted_views(mask):
        out |= view
    return out


def foreground_mask(image: Image, background: Image, threshold: int) -> Mask:
    """Pixels differing from the background by more than ``threshold``, denoised.

    An opening (erode, dilate) drops isolated pixels such as compression noise; a
    closing (dilate, erode) then fills pinholes inside objects.
    """
    mask = difference(image, background) > threshold
    mask = dilate(erode(mask))
    return erode(dilate(mask))


# -- connected components -----------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """An 8-connected group of foreground pixels."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1, end exclusive
    area: int
    strength: float  # mean difference to the background over the component's pixels


def connected_components(mask: Mask, weights: NDArray[Any] | None = None) -> list[Component]:
    """The 8-connected components of ``mask``, in raster order of their first pixel.

    Works on horizontal runs: runs on neighbouring rows that touch (diagonals included)
    are merged with a union-find, so the Python loop is over runs, not pixels.
    ``weights`` (same shape as ``mask``) gives each component's mean ``strength``.
    """
    height = mask.shape[0]
    edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # row-major order: pairs up with the starts
    count = len(rows)
    if count == 0:
        return []
    parent = list(range(count))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_begin = np.searchsorted(rows, np.arange(height + 1))
    for row in range(1, height):
        above = range(row_begin[row - 1], row_begin[row])
        here = range(row_begin[row], row_begin[row + 1])
        if not above or not here:
            continue
        j = above.start
        for i in here:
            # Skip runs above that end before this one can touch them diagonally.
            while j < above.stop and ends[j] < starts[i]:
                j += 1
            k = j
            while k < above.stop and starts[k] <= ends[i]:
                a, b = find(i), find(k)
                if a != b:
                    parent[max(a, b)] = min(a, b)
                k += 1
    labels = np.array([find(i) for i in range(count)])
    lengths = ends - starts
    if weights is None:
        sums = lengths.astype(np.float64)
    else:
        cumulative = np.pad(np.cumsum(weights, axis=1, dtype=np.float64), ((0, 0), (1, 0)))
        sums = cumulative[rows, ends] - cumulative[rows, starts]
    components = []
    for root in np.unique(labels):  # roots are each component's first run: raster order
        member = labels == root
        area = int(lengths[member].sum())
        box = (
            int(starts[member].min()),
            int(rows[member].min()),
            int(ends[member].max()),
            int(rows[member].max()) + 1,
        )
        components.append(Component(box, area, float(sums[member].sum()) / area))
    return components


# -- detection ----------------------------------------------------------------------------


def detect_objects(
    image: Image, background: Image, *, threshold: int = 30, min_area: int = 40
) -> tuple[Boxes, NDArray[np.float32]]:
    """Boxes (N x 4 float32, x0 y0 x1 y1) and confidences (N float32) of moving objects.

    A component's confidence is how well it fills its box times how strongly it differs
    from the background (saturating at a difference of 128): solid objects score near 1,
    ragged noise near 0.
    """
    diff = difference(image, background)
    mask = foreground_mask(image, background, threshold)
    found = [c for c in connected_components(mask, diff) if c.area >= min_area]
    boxes = np.array([c.box for c in found], dtype=np.float32).reshape(-1, 4)
    scores = np.array(
        [
            (c.area / ((c.box[2] - c.box[0]) * (c.box[3] - c.box[1])))
            * min(1.0, c.strength / 128.0)
            for c in found
        ],
        dtype=np.float32,
    )
    return boxes, scores


# -- tracking -----------------------------------------------------------------------------


def iou_matrix(a: NDArray[Any], b: NDArray[Any]) -> NDArray[np.float64]:
    """Intersection over union of every box in ``a`` (M x 4) with every box in ``b``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    iou: NDArray[np.float64] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


def track_ids(
    boxes_per_frame: Sequence[NDArray[Any]], *, iou_threshold: float = 0.3, max_gap: int = 2
) -> list[list[int]]:
    """A track number for every box of every frame (greedy IoU matching).

    Each frame's boxes are matched to the tracks seen in the last ``max_gap`` frames,
    best overlap first (ties broken by track, then box order); a box overlapping no
    track by ``iou_threshold`` starts a new track. Tracks are numbered from 0 in order
    of appearance.
    """
    last_box: list[NDArray[Any]] = []
    last_seen: list[int] = []
    assignments: list[list[int]] = []
    for position, boxes in enumerate(boxes_per_frame):
        boxes = np.asarray(boxes).reshape(-1, 4)
        ids = [-1] * len(boxes)
        active = [t for t in range(len(last_box)) if position - last_seen[t] <= max_gap]
        if active and len(boxes):
            overlap = iou_matrix(np.stack([last_box[t] for t in active]), boxes)
            pairs = sorted(
                ((-overlap[i, j], i, j) for i in range(len(active)) for j in range(len(boxes))),
            )
            used_tracks: set[int] = set()
            for negative, i, j in pairs:
                if -negative < iou_threshold:
                    break
                if i in used_tracks or ids[j] != -1:
                    continue
                used_tracks.add(i)
                ids[j] = active[i]
        for j, box in enumerate(boxes):
            if ids[j] == -1:
                ids[j] = len(last_box)
                last_box.append(box)
                last_seen.append(position)
            else:
                last_box[ids[j]] = box
                last_seen[ids[j]] = position
        assignments.append(ids)
    return assignments


def crop_box(
    box: NDArray[Any] | Sequence[float], shape: tuple[int, ...], pad: int = 0
) -> tuple[int, int, int, int]:
    """``box`` grown by ``pad`` pixels on each side and clipped to an image of ``shape``."""
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    height, width = shape[:2]
    return max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad), min(height, y1 + pad)


def crop(image: Image, box: tuple[int, int, int, int]) -> Image:
    """A contiguous copy of ``image`` inside ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(image[y0:y1, x0:x1])


# -- background removal and labels --------------------------------------------------------


def remove_background(image: Image, background: Image, threshold: int = 30) -> Image:
    """``image`` with every pixel that matches ``background`` (same size) set to zero."""
    keep = foreground_mask(image, background, threshold)
    return np.where(keep[..., None], image, np.uint8(0)).astype(np.uint8)


def color_label(image: Image) -> str:
    """The palette color nearest to the median of the non-zero (foreground) pixels."""
    pixels = image.reshape(-1, image.shape[-1])
    pixels = pixels[pixels.any(axis=1)]
    if not len(pixels):
        return "none"
    median = np.median(pixels, axis=0)
    names = list(PALETTE)
    distances = [float(np.sum((median - np.array(PALETTE[n])) ** 2)) for n in names]
    return names[int(np.argmin(distances))]


def majority(labels: Sequence[str]) -> str:
    """The most common label; ties go to the alphabetically first."""
    if not labels:
        return "none"
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return min(counts, key=lambda name: (-counts[name], name))


# -- augmentation -------------------------------------------------------------------------


def track_rng(seed: int, track: str) -> np.random.Generator:
    """An RNG for one track: independent of the order tracks are processed in."""
    return np.random.default_rng([seed, zlib.crc32(track.encode())])


def augment(
    image: Image, rng: np.random.Generator, *, brightness: tuple[float, float] = (0.7, 1.3)
) -> tuple[Image, dict[str, Any]]:
    """A randomly flipped and brightened copy of ``image``, and what was done to it.

    Zeroed (background) pixels stay zero, since brightness is a multiplication.
    """
    flip = bool(rng.random() < 0.5)
    factor = round(float(rng.uniform(*brightness)), 4)
    out = image[:, ::-1] if flip else image
    out = np.clip(np.rint(out.astype(np.float32) * np.float32(factor)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out), {"flip": flip, "brightness": factor}
