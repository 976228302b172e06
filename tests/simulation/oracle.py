"""The final context a run must end with, computed without the library.

The invariants compare a completed run's final context with this one. Before, the
reference was a fault-free run of the same serverless code: a mistake the code makes in
every schedule alike (a change dropped from a step's delta whatever happens) was in the
reference too, and no schedule could show it. Here the documented semantics are
interpreted in plain Python instead — a step's input is the run's parameters plus its
ancestors' outputs in graph order; its output is what it returned and what it saved as
progress (a step returning ``Continue`` is called again at once, from its progress),
where that differs from its input (type and sign included: ``1`` and ``True``,
``0.0`` and ``-0.0`` differ); a map step's output is ``{step: [results in item order],
step + "_failed": []}``; the final context is the parameters plus every step's output in
graph order.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from resumable import Continue, Pipeline, RetryableError

from . import pipelines as sim_pipelines

_ATTEMPTS = 10  # the simulation's flaky steps and items fail once or twice, then succeed


def final_context(pipeline: Pipeline, params: dict[str, Any]) -> dict[str, Any]:
    """What a completed run of ``pipeline`` from ``params`` ends with."""
    spec = pipeline.spec
    recorder = sim_pipelines.RECORDER
    saved = (recorder.executions, recorder.saves, recorder.failures_left, recorder.work)
    recorder.executions, recorder.saves, recorder.failures_left = [], [], {}
    recorder.work = lambda seconds: None
    try:
        outputs: dict[str, dict[str, Any]] = {}
        for name in spec.order:
            ancestors = spec.ancestors(name)  # the graph as defined, not how a runner uses it
            context = dict(params)
            for earlier in spec.order:
                if earlier in ancestors:
                    context.update(outputs[earlier])
            outputs[name] = _run_step(spec.steps[name], context)
        final = dict(params)
        for name in spec.order:
            final.update(outputs[name])
        return final
    finally:
        recorder.executions, recorder.saves, recorder.failures_left, recorder.work = saved


def _run_step(step: Any, given: dict[str, Any]) -> dict[str, Any]:
    if step.map is not None:
        items = given[step.map.source]
        results = [
            _retried(lambda item=item: step.function(item, copy.deepcopy(given))) for item in items
        ]
        return {step.name: results, f"{step.name}_failed": []}
    context: dict[str, Any] = {}

    def save_progress(values: dict[str, Any]) -> bool:
        context.update(values)
        return True

    offered = {"save_progress": save_progress, "should_stop": lambda: False}
    wanted = list(inspect.signature(step.function).parameters)[1:]
    kwargs = {p: offered[p] for p in wanted}

    def attempt() -> dict[str, Any]:
        context.clear()
        context.update(copy.deepcopy(given))  # a step may change its input in place
        result = step.function(context, **kwargs)
        while isinstance(result, Continue):  # called again at once, from its progress
            context.update(result.progress or {})
            result = step.function(context, **kwargs)
        context.update(result or {})
        return context

    after = _retried(attempt)
    return {k: v for k, v in after.items() if k not in given or not _same(given[k], v)}


def _retried(call: Any) -> Any:
    for _ in range(_ATTEMPTS - 1):
        try:
            return call()
        except RetryableError:
            continue
    return call()


def _same(a: Any, b: Any) -> bool:
    return sim_pipelines.digest({"v": a}) == sim_pipelines.digest({"v": b})
