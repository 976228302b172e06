"""What a serverless step sends to storage: only what it changed.

A step's input (the params and its ancestors' outputs) is already stored as
content-addressed blobs; writing the step's output, or saving its progress mid-step,
must not upload those blobs again. Each upload of a blob that exists costs its whole
body on the wire before the create-only precondition refuses it — for the data-prep
pipeline, tens of MB per step and per progress save.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from resumable import Pipeline
from resumable.storage import MemoryStore
from resumable.storage.base import Buffer
from tests.serverless_fakes import drain, make_engine, start, state_of

FRAME = (64, 64, 3)  # 12 KB: with the codec's large-binary threshold, one blob per 6 frames
BIG = (256, 256, 3)  # 192 KB: a blob of its own


class CountingStore(MemoryStore):
    """A memory store that records every attempted blob write, refused ones included."""

    def __init__(self) -> None:
        super().__init__()
        self.blob_writes: list[str] = []

    def write(
        self, name: str, data: Buffer | Sequence[Buffer], *, if_generation_match: int | None = None
    ) -> int:
        if "/blobs/" in name:
            self.blob_writes.append(name)
        return super().write(name, data, if_generation_match=if_generation_match)


def _frame(i: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return np.random.default_rng(i).integers(0, 255, BIG, dtype=np.uint8)


def _pipeline(extract: Callable[..., dict[str, Any]]) -> Pipeline:
    def detect(context: dict[str, Any]) -> dict[str, Any]:
        return {"count": len(context["frames"])}

    return Pipeline(
        "uploads",
        {"extract": {"function": extract}, "detect": {"function": detect}},
        storage="memory://unused",
        cleanup_on_success=False,
    )


def _engine(pipeline: Pipeline) -> tuple[Any, CountingStore]:
    engine = make_engine(pipeline)
    store = CountingStore()
    engine.store = store
    return engine, store


def test_a_step_does_not_upload_its_unchanged_input_again() -> None:
    def extract(context: dict[str, Any]) -> dict[str, Any]:
        return {"frames": [_frame(i) for i in range(4)]}

    engine, store = _engine(_pipeline(extract))
    start(engine, "uploads", {"video": "clip.mp4"})
    drain(engine, limit=1)  # extract only
    after_extract = len(store.blob_writes)
    assert after_extract == 4

    drain(engine)
    state = state_of(engine, "uploads")
    assert state.status == "completed"
    # detect read four frames and wrote a count: no blob upload at all
    assert store.blob_writes[after_extract:] == []


def test_progress_saves_upload_only_the_frames_added_since_the_last_save() -> None:
    def extract(context: dict[str, Any], save_progress: Callable[..., bool]) -> dict[str, Any]:
        frames = list(context.get("frames") or [])
        for i in range(len(frames), 6):
            frames.append(_frame(i))
            if len(frames) % 2 == 0:
                context["frames"] = list(frames)
                save_progress(context)
        return {"frames": frames}

    engine, store = _engine(_pipeline(extract))
    start(engine, "uploads", {"video": "clip.mp4"})
    drain(engine)
    assert state_of(engine, "uploads").status == "completed"
    # three saves of 2, 4 and 6 frames, then the output of 6: each frame uploaded once
    assert len(store.blob_writes) == 6, store.blob_writes
    assert len(set(store.blob_writes)) == 6
