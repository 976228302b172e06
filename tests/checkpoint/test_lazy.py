"""A serverless step's input context reads a value from storage only when the step uses
it, behaves as the decoded dict in every way of reading it, and a value the step never
read is stored again as it was, without being read."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from resumable.checkpoint._blobs import BlobStore
from resumable.checkpoint._lazy import LazyContext
from resumable.checkpoint._segments import encode_context
from resumable.serverless._run_files import RunFiles
from resumable.storage import MemoryStore

CONTEXT: dict[str, Any] = {
    "big": np.arange(200_000, dtype=np.int64),
    "frames": [np.full((64, 64), i, dtype=np.uint8) for i in range(3)],
    "meta": {"name": "clip", "fps": 25.0},
    "n": 3,
}


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.read_names: list[str] = []

    def read_buffer(self, name: str) -> bytearray:
        self.read_names.append(name)
        return super().read_buffer(name)


def lazy() -> tuple[LazyContext, CountingStore]:
    store = CountingStore()
    entries = encode_context(CONTEXT, BlobStore(store, "b/"))
    return LazyContext(entries, BlobStore(store, "b/")), store


def _same(got: Any, want: Any) -> None:
    assert json.dumps(got, default=lambda a: a.tolist()) == json.dumps(
        want, default=lambda a: a.tolist()
    )


def test_a_value_is_read_when_first_used() -> None:
    context, store = lazy()
    assert list(context) == list(CONTEXT) and len(context) == 4 and "big" in context
    assert store.read_names == []
    assert context["meta"] == {"name": "clip", "fps": 25.0}
    assert context.get("n") == 3 and context.get("missing", 7) == 7
    np.testing.assert_array_equal(context["frames"][2], CONTEXT["frames"][2])
    assert not any("big" in n for n in store.read_names) and len(store.read_names) == 1


@pytest.mark.parametrize(
    "read",
    [
        dict,
        lambda c: {**c},
        lambda c: c.copy(),
        lambda c: dict(c.items()),
        lambda c: dict(zip(c.keys(), c.values(), strict=True)),
        copy.deepcopy,
        lambda c: c | {},
        lambda c: {} | c,
        lambda c: json.loads(json.dumps(c, default=lambda a: a.tolist())),
    ],
)
def test_every_way_of_reading_the_whole_context_gives_the_decoded_values(read: Any) -> None:
    context, _store = lazy()
    whole = read(context)
    assert type(whole) is dict
    _same(whole, CONTEXT)


def test_pop_setdefault_equality_and_repr_read_values() -> None:
    context, _store = lazy()
    assert context.setdefault("n", 0) == 3
    np.testing.assert_array_equal(context.pop("big"), CONTEXT["big"])
    assert "big" not in context
    rest = {k: v for k, v in CONTEXT.items() if k != "big"}
    assert context == context.copy() and "not read" not in repr(context)
    _same(dict(context), rest)


def test_an_unread_value_is_stored_again_without_being_read() -> None:
    store = CountingStore()
    files = RunFiles(store, "default", "p", "r")
    before = encode_context(CONTEXT, files.blobs)
    files = RunFiles(store, "default", "p", "r")  # a new delivery
    context = files.decode_lazily(before)
    context["frames"][1][0, 0] = 99  # read, and changed in place
    context["new"] = "x"
    name, _size, keys = files.write_step_output(
        step="s", attempt=1, step_fingerprint="f", before=before, context=context
    )
    assert keys == ["frames", "new"]
    assert not any(n.endswith(before["big"]["blobs"][0]) for n in store.read_names)
    after = files.read_manifest(name).context_after
    assert after is not None and after["big"] == before["big"] and list(after)[-1] == "new"
    decoded = RunFiles(store, "default", "p", "r").decode(after)
    assert decoded["frames"][1][0, 0] == 99


def test_a_value_the_step_could_not_read_fails_the_attempt_even_if_the_step_caught_it() -> None:
    from resumable import Pipeline
    from tests.serverless_fakes import drain, make_engine, start, state_of, take_messages

    def make(context: dict[str, Any]) -> dict[str, Any]:
        return {"big": np.arange(100_000)}

    def use(context: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"total": int(context["big"].sum())}
        except Exception:
            return {"total": -1}  # the step swallowed the error

    pipeline = Pipeline("p", {"make": make, "use": use}, cleanup_on_success=False)
    engine = make_engine(pipeline)
    start(engine, "p", {})
    from resumable.serverless._worker import handle_step

    first = take_messages(engine)
    assert handle_step(engine, first[0]).ack
    for name in list(engine.store.list("runs/default/p/run-1/blobs/")):
        engine.store.delete(name)
    drain(engine)
    state = state_of(engine, "p")
    assert state.steps["use"].status != "completed"
    assert "cannot load the step's input" in (state.error or state.steps["use"].error or "")
