"""Fuzz: damaged serverless checkpoints — the params and step manifests a step's input is
built from — forged with valid integrity hashes, read by the real worker.

Invariant: the step runs on its input or fails with the reason, and the delivery is
acked: on in-memory services nothing is transient, so a "retry later" would mean a raw
exception was taken for a storage hiccup (and redelivered forever).
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from hypothesis import event, given
from hypothesis import strategies as st

from resumable import ResumableError
from resumable.serverless._engine import Engine
from resumable.serverless._worker import handle_step
from resumable.storage import ObjectStore
from tests.fuzz.budget import bounded, fuzz_settings
from tests.fuzz.checkpoint_corpus import serverless_run_before_last_step
from tests.fuzz.mutations import mutate
from tests.support.forge import dump_json, signed


def manifests(store: ObjectStore) -> list[str]:
    return sorted(n for n in store.list() if n.endswith(".json"))


@fuzz_settings(ci_examples=80)
@given(st.data())
def test_damaged_params_and_step_manifests(data: st.DataObject) -> None:
    engine, message = serverless_run_before_last_step()
    name = data.draw(st.sampled_from(manifests(engine.store)), label="manifest")
    document = orjson.loads(engine.store.read(name))
    if data.draw(st.booleans(), label="only the outputs"):
        document["outputs"] = mutate(data, document["outputs"])
    else:
        document = mutate(data, document)
    engine.store.write(
        name, signed(document) if isinstance(document, dict) else dump_json(document)
    )
    with bounded():
        final_context_or_library_error(engine)
        outcome = handle_step(engine, message)
    event(" ".join(outcome.reason.split()[:9]))
    assert outcome.ack, outcome.reason


def final_context_or_library_error(engine: Engine) -> None:
    (state,) = engine.runs.query()
    files = engine.files(state)
    with contextlib.suppress(ResumableError):
        files.final_context(state, engine.registry.get(state.pipeline).spec)


def test_the_corpus_runs_its_last_step_when_undamaged() -> None:
    engine, message = serverless_run_before_last_step()
    assert handle_step(engine, message).ack
    (state,) = engine.runs.query()
    assert state.status == "completed"
    context: dict[str, Any] = engine.files(state).final_context(
        state, engine.registry.get(state.pipeline).spec
    )
    assert context["plain"]["n"] == 4 and context["total"] == len(context) - 1
