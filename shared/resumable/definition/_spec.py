"""Pipeline definitions: steps, their dependency graph, and the graph's fingerprint.

A step definition is the original's dict, ``{"function": f, "description": "..."}`` plus
optional ``dependencies`` (default: the previous step), ``retries``, ``timeout``,
``version``, the deployment settings ``memory`` and ``concurrency``, and for a map step
``map``, ``tolerated_failures`` and ``map_output`` (see ``resumable.definition._map``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from resumable._ids import validate_id
from resumable.definition._map import MapSpec, parse_map
from resumable.errors import InvalidIdError, NonRetryableError, PipelineDefinitionError

StepFunction = Callable[..., Any]

_KNOWN_KEYS = {
    "function",
    "description",
    "dependencies",
    "retries",
    "timeout",
    "version",
    "memory",
    "concurrency",
    "map",
    "tolerated_failures",
    "map_output",
}


@dataclass(frozen=True)
class StepSpec:
    """One step: what it runs, what it needs, and how hard to try."""

    name: str
    function: StepFunction
    description: str = ""
    dependencies: tuple[str, ...] = ()
    retries: int = 0
    timeout: float | None = None
    version: str = "1"
    memory: str | None = None
    concurrency: int | None = None
    map: MapSpec | None = None  # a map step: ``function(item, context)`` per item


@dataclass(frozen=True)
class PipelineSpec:
    """A validated step graph. ``order`` is a topological order, stable for a definition."""

    name: str
    steps: Mapping[str, StepSpec]
    order: tuple[str, ...]
    step_fingerprints: Mapping[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """A stable hash of the whole graph: names, dependencies and versions."""
        digest = hashlib.sha256()
        for name in self.order:
            digest.update(self.step_fingerprints[name].encode())
        return digest.hexdigest()[:32]

    def successors(self, step: str) -> list[str]:
        return [n for n in self.order if step in self.steps[n].dependencies]

    def ancestors(self, step: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.steps[step].dependencies)
        while stack:
            dep = stack.pop()
            if dep not in seen:
                seen.add(dep)
                stack.extend(self.steps[dep].dependencies)
        return seen

    def descendants(self, step: str) -> set[str]:
        return {n for n in self.order if step in self.ancestors(n)}

    def roots(self) -> list[str]:
        return [n for n in self.order if not self.steps[n].dependencies]

    def ready_steps(self, done: Iterable[str]) -> list[str]:
        """Steps not in ``done`` whose dependencies all are, in graph order."""
        finished = set(done)
        return [
            n
            for n in self.order
            if n not in finished and all(d in finished for d in self.steps[n].dependencies)
        ]


def build_pipeline_spec(name: str, step_definitions: Mapping[str, Any]) -> PipelineSpec:
    """Validate ``step_definitions`` and build the graph.

    Raises :class:`PipelineDefinitionError` for an unknown dependency, a cycle, a step
    without a callable ``function``, an unsafe name, or a malformed option.
    """
    validate_id(name, "pipeline name")
    if not step_definitions:
        raise PipelineDefinitionError(f"pipeline {name!r} defines no steps")
    steps: dict[str, StepSpec] = {}
    previous: str | None = None
    for step_name, definition in step_definitions.items():
        steps[step_name] = _step_spec(name, step_name, definition, previous)
        previous = step_name
    for spec in steps.values():
        for dep in spec.dependencies:
            if dep not in steps:
                raise PipelineDefinitionError(
                    f"step {spec.name!r} of pipeline {name!r} depends on unknown step {dep!r}"
                )
    order = _topological_order(name, steps)
    fingerprints: dict[str, str] = {}
    for step_name in order:
        spec = steps[step_name]
        # A step's fingerprint covers its ancestors': changing a step invalidates
        # everything downstream of it, and nothing else.
        identity: list[Any] = [
            spec.name,
            spec.version,
            sorted(fingerprints[d] for d in spec.dependencies),
        ]
        if spec.map is not None:  # only map steps: the fingerprints of others stay as they were
            identity.append([spec.map.source, spec.map.output])
        payload = orjson.dumps(identity)
        fingerprints[step_name] = hashlib.sha256(payload).hexdigest()[:16]
    return PipelineSpec(name=name, steps=steps, order=order, step_fingerprints=fingerprints)


def _step_spec(pipeline: str, name: str, definition: Any, previous: str | None) -> StepSpec:
    where = f"step {name!r} of pipeline {pipeline!r}"
    try:
        validate_id(name, "step name")
    except InvalidIdError as exc:
        raise PipelineDefinitionError(f"pipeline {pipeline!r}: {exc}") from None
    if callable(definition):
        definition = {"function": definition}
    if not isinstance(definition, Mapping):
        raise PipelineDefinitionError(f"{where}: definition must be a dict, got {definition!r}")
    unknown = set(definition) - _KNOWN_KEYS
    if unknown:
        raise PipelineDefinitionError(f"{where}: unknown option(s) {sorted(unknown)}")
    function = definition.get("function")
    if not callable(function):
        raise PipelineDefinitionError(f"{where}: 'function' must be callable")
    if "dependencies" in definition:
        deps = definition["dependencies"]
        if isinstance(deps, str):
            deps = [deps]
        if not isinstance(deps, list | tuple) or not all(isinstance(d, str) for d in deps):
            raise PipelineDefinitionError(f"{where}: 'dependencies' must be a list of step names")
        dependencies = tuple(dict.fromkeys(deps))
    else:
        dependencies = (previous,) if previous is not None else ()
    retries = definition.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise PipelineDefinitionError(f"{where}: 'retries' must be an integer >= 0")
    timeout = definition.get("timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise PipelineDefinitionError(f"{where}: 'timeout' must be a positive number of seconds")
    concurrency = definition.get("concurrency")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise PipelineDefinitionError(f"{where}: 'concurrency' must be an integer >= 1")
    return StepSpec(
        name=name,
        function=function,
        description=str(definition.get("description", "")),
        dependencies=dependencies,
        retries=retries,
        timeout=float(timeout) if timeout is not None else None,
        version=str(definition.get("version", "1")),
        memory=definition.get("memory"),
        concurrency=concurrency,
        map=parse_map(where, definition),
    )


def _topological_order(pipeline: str, steps: Mapping[str, StepSpec]) -> tuple[str, ...]:
    """Kahn's algorithm, breaking ties by definition order so the order is stable."""
    position = {name: i for i, name in enumerate(steps)}
    remaining = {name: set(spec.dependencies) for name, spec in steps.items()}
    order: list[str] = []
    while remaining:
        ready = sorted((n for n, deps in remaining.items() if not deps), key=position.__getitem__)
        if not ready:
            cycle = ", ".join(sorted(remaining))
            raise PipelineDefinitionError(
                f"pipeline {pipeline!r} has a dependency cycle among steps: {cycle}"
            )
        for name in ready:
            order.append(name)
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return tuple(order)


MAX_DELIVERY_SECONDS = 540  # event-driven Cloud Run functions: the longest request allowed


def delivery_seconds(step: StepSpec) -> int:
    """How long one serverless delivery of ``step`` may run: its function's timeout (the
    step's ``timeout``, at most 540 s). A step that needs longer continues across
    deliveries (``resumable.Continue``)."""
    return int(min(step.timeout, MAX_DELIVERY_SECONDS)) if step.timeout else MAX_DELIVERY_SECONDS


def step_updates(step: str, result: Any) -> dict[str, Any]:
    """What a step's return value puts into the context: a dict is merged as is, ``None``
    adds nothing, any other value is stored as ``"{step}_result"``."""
    if result is None:
        return {}
    if isinstance(result, dict):
        bad = [k for k in result if not isinstance(k, str)]
        if bad:
            raise NonRetryableError(f"step {step!r} returned non-string context keys {bad!r}")
        return result
    return {f"{step}_result": result}
