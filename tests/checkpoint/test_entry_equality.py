"""A step's change is a change even where Python's ``==`` says otherwise: ``1 == 1.0 ==
True`` and ``0.0 == -0.0``, yet a step that turns one into the other changed the context,
and every later step (and every resume) must see the new value with its type."""

from __future__ import annotations

import math
from typing import Any

import pytest

from resumable import NonRetryableError, Pipeline
from resumable.checkpoint._blobs import BlobStore
from resumable.checkpoint._deltas import diff, same_entry
from resumable.checkpoint._segments import encode_context
from resumable.storage import MemoryStore
from tests.serverless_fakes import drain, make_engine, start, state_of

LOOKALIKES = [
    (1, True),
    (0, False),
    (1, 1.0),
    (0.0, -0.0),
    ([1, 2], [True, 2]),
    ({"a": 1}, {"a": 1.0}),
]


@pytest.mark.parametrize(("before", "after"), LOOKALIKES)
def test_a_value_equal_by_python_but_not_in_type_or_sign_is_a_change(
    before: Any, after: Any
) -> None:
    blobs = BlobStore(MemoryStore(), "b/")
    old, new = encode_context({"k": before}, blobs), encode_context({"k": after}, blobs)
    assert old == new  # what Python's == says of the entries
    assert not same_entry(old["k"], new["k"])
    assert list(diff(old, new).outputs) == ["k"]
    assert same_entry(new["k"], encode_context({"k": after}, blobs)["k"])
    assert not diff(new, encode_context({"k": after}, blobs)).outputs


def _signature(value: Any) -> Any:
    """A value's type and sign, all the way down (what == does not compare)."""
    if isinstance(value, list):
        return [_signature(v) for v in value]
    if isinstance(value, float):
        return ("float", math.copysign(1.0, value), value)
    return (type(value).__name__, value)


def _steps(seen: list[Any]) -> dict[str, Any]:
    def first(context: dict[str, Any]) -> dict[str, Any]:
        return {"flag": 1, "level": 0.0, "items": [1, 2]}

    def second(context: dict[str, Any]) -> dict[str, Any]:
        return {"flag": True, "level": -0.0, "items": [True, 2.0]}

    def third(context: dict[str, Any]) -> dict[str, Any]:
        seen.append(_signature([context["flag"], context["level"], context["items"]]))
        if len(seen) == 1:
            raise NonRetryableError("first call fails, so that a resume restores the input")
        return {}

    return {"first": first, "second": second, "third": third}


EXPECTED = [("bool", True), ("float", -1.0, -0.0), [("bool", True), ("float", 1.0, 2.0)]]


def test_in_process_a_resumed_step_sees_the_changed_types_and_signs() -> None:
    seen: list[Any] = []
    store = MemoryStore()
    pipeline = Pipeline("lookalikes", _steps(seen), storage=store, run_guid="r1")
    assert pipeline.run()["status"] == "error"
    again = Pipeline("lookalikes", _steps(seen), storage=store, run_guid="r1")
    result = again.run(resume_from_checkpoint=True)
    assert result["status"] == "completed"
    assert seen == [EXPECTED, EXPECTED]  # live, then restored from the checkpoint


def test_serverless_a_later_step_sees_the_changed_types_and_signs() -> None:
    seen: list[Any] = []
    seen.append("skip the failure")  # third succeeds at once here
    engine = make_engine(Pipeline("lookalikes", _steps(seen)))
    start(engine, "lookalikes", {})
    drain(engine)
    state = state_of(engine, "lookalikes")
    assert state.status == "completed"
    assert seen[1:] == [EXPECTED]
    # the step's output records the changes (a step with several ancestors composes its
    # input from these deltas, as `replay` and `status` read them)
    assert state.steps["second"].output_keys == ["flag", "items", "level"]


def test_in_process_a_branch_sees_its_own_input_not_a_sibling_branchs_lookalike() -> None:
    """``retype`` turns ``flag`` 1 into ``True`` and ``level`` 0.0 into -0.0; ``other``, a
    parallel branch run after it, must see ``first``'s 1 and 0.0 (its input), not the
    look-alikes the live context holds by then — and saving that input back as its
    progress is no write of those keys (found by the in-process simulation)."""
    seen: list[Any] = []

    def first(context: dict[str, Any]) -> dict[str, Any]:
        return {"flag": 1, "level": 0.0}

    def retype(context: dict[str, Any]) -> dict[str, Any]:
        return {"flag": True, "level": -0.0}

    def other(context: dict[str, Any], save_progress: Any) -> dict[str, Any]:
        seen.append(_signature([context["flag"], context["level"]]))
        save_progress({**context, "done": 1})
        return {"done": 2}

    steps = {
        "first": {"function": first},
        "retype": {"function": retype, "dependencies": ["first"]},
        "other": {"function": other, "dependencies": ["first"]},
    }
    result = Pipeline("branches", steps, storage=MemoryStore(), max_workers=1).run()
    assert result["status"] == "completed", result["errors"]
    assert seen == [[("int", 1), ("float", 1.0, 0.0)]]
    assert _signature([result["context"]["flag"], result["context"]["level"]]) == [
        ("bool", True),
        ("float", -1.0, -0.0),
    ]
