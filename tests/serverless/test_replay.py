"""Replaying one step of a serverless run here (serverless._replay): its progress saves
are counted and discarded, a step the pipeline lacks is refused, and stored outputs read
back exactly, or not at all when they were tampered with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resumable import Pipeline, save_progress
from resumable.errors import CorruptCheckpointError, ReplayError
from resumable.serverless._replay import load_outputs, load_replay, replay_step, save_outputs
from tests.serverless_fakes import drain, make_engine, start, state_of


def make(context: dict[str, Any]) -> dict[str, Any]:
    return {"frames": np.arange(6, dtype=np.uint8).reshape(2, 3)}


def collect(context: dict[str, Any]) -> dict[str, Any]:
    sums = []
    for frame in context["frames"]:
        sums.append(int(frame.sum()))
        save_progress({"sums": sums})
    return {"sums": sums, "frames": context["frames"] * 2}


def pipeline() -> Pipeline:
    return Pipeline(
        "replayed",
        {"make": {"function": make}, "collect": {"function": collect}},
        storage="memory://unused",
        cleanup_on_success=False,
    )


@pytest.fixture
def done() -> Any:
    engine = make_engine(pipeline())
    start(engine, "replayed", {}, run_id="r-1")
    drain(engine)
    state = state_of(engine, "replayed", "r-1")
    assert state.status == "completed"
    return engine, state


def test_a_replay_counts_and_discards_progress_saves_and_stores_outputs_exactly(
    done: Any, tmp_path: Path
) -> None:
    engine, state = done
    files = engine.files(state)
    objects = sorted(engine.store.list(""))
    loaded = load_replay(files, state, engine.registry.get("replayed"), "collect")
    replay = replay_step(loaded, files)
    assert replay.progress_saves == 2
    assert replay.changed == ["frames", "sums"] and replay.removed == []
    assert sorted(engine.store.list("")) == objects  # nothing was written to the run
    saved = save_outputs(replay, tmp_path)
    assert saved == tmp_path / "outputs.json"
    back = load_outputs(tmp_path)
    assert back["sums"] == [3, 12]
    assert back["frames"].dtype == np.uint8 and back["frames"].tolist() == [[0, 2, 4], [6, 8, 10]]


def test_a_step_the_pipeline_lacks_is_refused(done: Any) -> None:
    engine, state = done
    with pytest.raises(ReplayError, match="pipeline 'replayed' has no step 'nope': make, collect"):
        load_replay(engine.files(state), state, engine.registry.get("replayed"), "nope")


def test_stored_outputs_that_were_changed_are_refused(done: Any, tmp_path: Path) -> None:
    engine, state = done
    files = engine.files(state)
    replay = replay_step(load_replay(files, state, engine.registry.get("replayed"), "make"), files)
    path = save_outputs(replay, tmp_path)
    document = json.loads(path.read_text())
    document["deleted"] = ["frames"]
    path.write_text(json.dumps(document))
    with pytest.raises(CorruptCheckpointError, match="fails its integrity check"):
        load_outputs(tmp_path)
