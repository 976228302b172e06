"""Loading a serverless step's input: a chain step reads one manifest (the context its
last ancestor left), whatever its position; a fan-in, or manifests of an older release,
compose the params and every ancestor's output as before, and give the same context."""

from __future__ import annotations

from typing import Any

import orjson

from resumable import Pipeline
from resumable.checkpoint._manifest import integrity_of
from resumable.serverless._run_files import RunFiles
from resumable.storage import MemoryStore
from tests.serverless_fakes import drain, make_engine, start, state_of


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def read(self, name: str) -> bytes:
        self.reads.append(name)
        return super().read(name)


def _adder(i: int) -> Any:
    def step(context: dict[str, Any]) -> dict[str, Any]:
        return {f"k{i}": i, "total": context.get("total", 0) + i}

    step.__name__ = f"s{i}"
    return step


def _files_of(engine: Any, pipeline: str) -> RunFiles:
    return engine.files(state_of(engine, pipeline))


def test_a_chain_step_reads_one_manifest_and_gets_the_composed_context() -> None:
    pipeline = Pipeline(
        "chain", {f"s{i}": _adder(i) for i in range(1, 31)}, cleanup_on_success=False
    )
    engine = make_engine(pipeline)
    store = engine.store = CountingStore()
    start(engine, "chain", {"seed": 1})
    drain(engine)
    state = state_of(engine, "chain")
    files = _files_of(engine, "chain")
    composed = files._accumulate(state, pipeline.spec, pipeline.spec.ancestors("s30"))
    store.reads.clear()
    entries = files.input_entries(state, pipeline.spec, "s30")
    assert store.reads == [state.steps["s29"].manifest]
    assert entries == composed
    assert files.decode(entries)["total"] == sum(range(30))


def test_a_fan_in_and_old_manifests_compose_every_ancestors_output() -> None:
    def left(context: dict[str, Any]) -> dict[str, Any]:
        return {"left": 1}

    def right(context: dict[str, Any]) -> dict[str, Any]:
        return {"right": 2}

    def join(context: dict[str, Any]) -> dict[str, Any]:
        return {"sum": context["left"] + context["right"]}

    def after(context: dict[str, Any]) -> dict[str, Any]:
        return {"after": context["sum"] + context["seed"]}

    pipeline = Pipeline(
        "fan",
        {
            "left": {"function": left, "dependencies": []},
            "right": {"function": right, "dependencies": []},
            "join": {"function": join, "dependencies": ["left", "right"]},
            "after": {"function": after, "dependencies": ["join"]},
        },
        cleanup_on_success=False,
    )
    engine = make_engine(pipeline)
    start(engine, "fan", {"seed": 10})
    drain(engine)
    state = state_of(engine, "fan")
    assert state.status == "completed"
    files = _files_of(engine, "fan")
    assert files.decode(files.input_entries(state, pipeline.spec, "after")) == {
        "seed": 10,
        "left": 1,
        "right": 2,
        "sum": 3,
    }
    # A manifest written before outputs listed the context they left: composed as before.
    name = state.steps["join"].manifest
    assert name is not None
    document = orjson.loads(engine.store.read(name))
    del document["context_after"]
    document["integrity"] = integrity_of({k: v for k, v in document.items() if k != "integrity"})
    engine.store.write(name, orjson.dumps(document))
    assert files.read_manifest(name).context_after is None
    assert files.decode(files.input_entries(state, pipeline.spec, "after"))["sum"] == 3
