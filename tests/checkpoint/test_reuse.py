"""Reused entries: a value keeps its entry only while it provably holds what it held when
encoded. Every way of changing a value without rebinding its key — in place through a
view, ``np.copyto``, a writeable flag flipped back, a container grown or a leaf rebound —
gets the value encoded again, so a checkpoint stays exact."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from resumable import Pipeline
from resumable.checkpoint._blobs import BlobStore
from resumable.checkpoint._codec import float_from_bits
from resumable.checkpoint._reuse import EntryCache
from resumable.checkpoint._segments import Entry, decode_context, encode_context
from resumable.errors import StorageError
from resumable.storage import MemoryStore


class Checkpoints:
    """encode_context with one cache, as a run's checkpoints use it."""

    def __init__(self) -> None:
        self.blobs = BlobStore(MemoryStore(), "b/")
        self.cache = EntryCache()

    def encode(self, context: dict[str, Any]) -> dict[str, Entry]:
        return encode_context(context, self.blobs, cache=self.cache)

    def decode(self, entries: dict[str, Entry]) -> dict[str, Any]:
        return decode_context(entries, BlobStore(self.blobs.store, "b/"))


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, size=(40, 60, 3), dtype=np.uint8) for _ in range(4)]


def test_an_unchanged_value_keeps_its_entry_without_being_encoded_again() -> None:
    checkpoints = Checkpoints()
    context = {"frames": _frames(), "meta": {"fps": 25.0, "name": "clip"}, "n": 3}
    first = checkpoints.encode(context)
    second = checkpoints.encode(context)
    assert second == first
    assert checkpoints.cache.reused == 3


def _in_place(change: Callable[[dict[str, Any]], None]) -> None:
    checkpoints = Checkpoints()
    context = {"frames": _frames(), "big": np.arange(50_000, dtype=np.int64)}
    checkpoints.encode(context)
    change(context)
    expected = {k: (v.copy() if isinstance(v, np.ndarray) else list(v)) for k, v in context.items()}
    entries = checkpoints.encode(context)
    decoded = checkpoints.decode(entries)
    np.testing.assert_array_equal(decoded["big"], expected["big"])
    for got, want in zip(decoded["frames"], expected["frames"], strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_change_in_place_through_a_view_is_encoded() -> None:
    def change(context: dict[str, Any]) -> None:
        view = context["frames"][2][10:20, ::2]
        view[...] = 0
        context["big"].reshape(100, 500)[:, 7] = -1

    _in_place(change)


def test_np_copyto_is_encoded() -> None:
    def change(context: dict[str, Any]) -> None:
        np.copyto(context["frames"][0], 9)
        np.copyto(context["big"], np.zeros_like(context["big"]), where=context["big"] % 3 == 0)

    _in_place(change)


def test_a_writeable_flag_flipped_back_and_a_change_are_encoded() -> None:
    checkpoints = Checkpoints()
    array = np.arange(1000, dtype=np.float32)
    array.flags.writeable = False
    context = {"a": array}
    checkpoints.encode(context)
    array.flags.writeable = True
    array[5] = 42
    decoded = checkpoints.decode(checkpoints.encode(context))
    assert decoded["a"][5] == 42


def test_a_flipped_view_follows_a_change_of_the_array_it_views() -> None:
    checkpoints = Checkpoints()
    base = np.arange(6000, dtype=np.uint8).reshape(20, 100, 3)
    context = {"flipped": [base[:, ::-1]]}
    checkpoints.encode(context)
    base[0, 99, 0] = 250  # the view's [0, 0, 0]
    decoded = checkpoints.decode(checkpoints.encode(context))
    assert decoded["flipped"][0][0, 0, 0] == 250
    np.testing.assert_array_equal(decoded["flipped"][0], base[:, ::-1])


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["v"]["items"].append(4),
        lambda c: c["v"]["items"].__setitem__(0, 1.0),  # an equal value, another type
        lambda c: c["v"].__setitem__("zero", -0.0),  # equal, other bits
        lambda c: c["v"].__setitem__("nan", float_from_bits(0x7FF8000000000001)),  # a payload
        lambda c: c["v"]["tags"].add("x"),
        lambda c: c["v"]["raw"].extend(b"!"),
        lambda c: c["v"]["pair"][1].append("z"),
        lambda c: c["v"].__setitem__("extra", None),
    ],
)
def test_a_changed_container_or_leaf_is_encoded(change: Callable[[dict[str, Any]], None]) -> None:
    checkpoints = Checkpoints()
    value = {
        "items": [1, 2, 3],
        "zero": 0.0,
        "nan": float("nan"),
        "tags": {"a"},
        "raw": bytearray(b"abc"),
        "pair": ("k", ["y"]),
    }
    context = {"v": value}
    first = checkpoints.encode(context)
    change(context)
    second = checkpoints.encode(context)
    fresh = encode_context(context, BlobStore(MemoryStore(), "b/"))
    # Compared as JSON: 1 == 1.0 and 0.0 == -0.0 in Python.
    assert orjson.dumps(second) == orjson.dumps(fresh) != orjson.dumps(first)
    assert checkpoints.cache.reused == 0


def test_a_read_only_array_over_bytes_is_reused_without_reading_it() -> None:
    checkpoints = Checkpoints()
    array = np.frombuffer(bytes(range(256)) * 1000, dtype=np.uint8)
    context = {"a": array}
    first = checkpoints.encode(context)
    with pytest.raises(ValueError, match="WRITEABLE"):
        array.flags.writeable = True  # so its bytes can never change
    assert checkpoints.encode(context) == first
    assert checkpoints.cache.reused == 1


def test_a_value_of_a_registered_type_is_always_encoded_again() -> None:
    class Box:
        def __init__(self, items: list[int]) -> None:
            self.items = items

    from resumable import register_codec, unregister_codec

    register_codec(Box, name="box", encode=lambda b: b.items, decode=Box)
    try:
        checkpoints = Checkpoints()
        box = Box([1])
        context = {"box": box}
        checkpoints.encode(context)
        box.items.append(2)
        decoded = checkpoints.decode(checkpoints.encode(context))
        assert decoded["box"].items == [1, 2]
        assert checkpoints.cache.reused == 0
    finally:
        unregister_codec(Box)


class FailingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def write(self, name: str, data: Any, **kwargs: Any) -> int:
        if self.fail:
            raise StorageError("storage is down")
        return super().write(name, data, **kwargs)


def test_an_entry_whose_blobs_were_not_stored_is_not_reused() -> None:
    store = FailingStore()
    blobs, cache = BlobStore(store, "b/"), EntryCache()
    context = {"big": np.arange(100_000, dtype=np.int64)}
    store.fail = True
    with pytest.raises(StorageError):
        encode_context(context, blobs, cache=cache)
    store.fail = False
    entries = encode_context(context, blobs, cache=cache)
    assert cache.reused == 0
    decoded = decode_context(entries, BlobStore(store, "b/"))
    np.testing.assert_array_equal(decoded["big"], context["big"])


def test_a_step_that_changes_an_input_array_in_place_has_the_change_checkpointed() -> None:
    def fill(context: dict[str, Any]) -> dict[str, Any]:
        return {"frames": _frames(), "flipped": [f[:, ::-1] for f in _frames()]}

    def touch(context: dict[str, Any]) -> dict[str, Any]:
        np.copyto(context["frames"][1], 3)  # changed in place, not returned
        context["flipped"][0].base[0, 0, 0] = 77  # through the array a view views
        return {"done": True}

    def after(context: dict[str, Any]) -> dict[str, Any]:
        return {"after": True}

    store = MemoryStore()
    steps = {"fill": fill, "touch": touch, "after": after}
    Pipeline("p", steps, storage=store, run_guid="r", cleanup_on_success=False).run()
    loaded = Pipeline("p", steps, storage=store, run_guid="r").load_checkpoint()
    assert loaded is not None
    assert (loaded.context["frames"][1] == 3).all()
    assert loaded.context["flipped"][0][0, -1, 0] == 77


def test_after_a_resume_decoded_values_are_reused_and_a_change_in_place_still_seen() -> None:
    attempts = []

    def fill(context: dict[str, Any]) -> dict[str, Any]:
        return {"frames": _frames(), "other": np.arange(20_000)}

    def touch(context: dict[str, Any]) -> dict[str, Any]:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("crash")
        context["frames"][3][0, 0, 0] = 201  # a decoded array, changed in place
        return {"done": True}

    store = MemoryStore()
    steps = {"fill": fill, "touch": touch}
    first = Pipeline("p", steps, storage=store, run_guid="r", cleanup_on_success=False).run()
    assert first["status"] == "error"
    resumed = Pipeline("p", steps, storage=store, run_guid="r", cleanup_on_success=False)
    assert resumed.run(resume_from_checkpoint=True)["status"] == "completed"
    loaded = Pipeline("p", steps, storage=store, run_guid="r").load_checkpoint()
    assert loaded is not None
    assert loaded.context["frames"][3][0, 0, 0] == 201
    np.testing.assert_array_equal(loaded.context["other"], np.arange(20_000))
