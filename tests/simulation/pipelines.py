"""The pipelines the simulation runs: chains, diamonds, wide fan-outs, steps that save
progress, fail and retry, fail for good, and write values large enough to be blobs.

Every step is deterministic: its output is a function of its input (and, for a step
that saves progress, of how far it got), so any correct schedule ends with the same
context. Each call reports its input (as a digest) to the simulation's recorder, which is
how the invariants see which input every execution ran from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from resumable import Continue, NonRetryableError, Pipeline, RetryableError


@dataclass
class Execution:
    run: str
    step: str
    process: str
    time: float
    input_digest: str
    progress: int  # the item the step started from (0 unless it saved progress before)


@dataclass
class Recorder:
    """What the steps tell the simulation; set per schedule by the world."""

    now: Callable[[], float] = lambda: 0.0
    process: Callable[[], str] = lambda: "?"
    work: Callable[[float], None] = lambda seconds: None
    executions: list[Execution] = field(default_factory=list)
    saves: list[tuple[float, str, str, int]] = field(default_factory=list)  # recorded progress
    failures_left: dict[tuple[str, str], int] = field(default_factory=dict)


RECORDER = Recorder()


def digest(context: dict[str, Any], *, without: str = "") -> str:
    """A digest of a context's content (arrays by dtype, shape and bytes); keys starting
    with ``without`` are left out (a step's own progress)."""
    h = hashlib.sha256()
    for key in sorted(context):
        if without and key.startswith(without):
            continue
        value = context[key]
        h.update(key.encode())
        if isinstance(value, np.ndarray):
            h.update(f"{value.dtype}{value.shape}".encode() + value.tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class StepKind:
    items: int = 0  # > 0: a loop over items that saves progress after every one
    flaky: int = 0  # fails (retryably) its first ``flaky`` executions in each run
    fatal: bool = False  # always raises NonRetryableError
    large: bool = False  # outputs an array above the blob threshold
    work: float = 1.0  # virtual seconds of compute (per item for a loop)
    # A loop longer than a delivery: at the deadline it saves progress and returns
    # Continue() ("polite"), or ignores the deadline and is killed at the time limit.
    marathon: str = ""
    # Changes its ancestors' sums in type only (0 -> False, n -> float(n)): equal by ``==``,
    # different values all the same, which every later step must see.
    retype: bool = False


def _make_step(name: str, kind: StepKind) -> Callable[..., dict[str, Any]]:
    own = f"{name}."

    def step(context: dict[str, Any], save_progress: Any, should_stop: Any) -> dict[str, Any]:
        run = str(context["run"])
        done = int(context.get(f"{own}done", 0))
        RECORDER.executions.append(
            Execution(
                run, name, RECORDER.process(), RECORDER.now(), digest(context, without=own), done
            )
        )
        key = (run, name)
        if kind.flaky and RECORDER.failures_left.setdefault(key, kind.flaky) > 0:
            RECORDER.failures_left[key] -= 1
            RECORDER.work(kind.work)
            raise RetryableError(f"{name}: transient failure")
        if kind.fatal:
            raise NonRetryableError(f"{name}: the input is invalid")
        seed = digest(context, without=own)
        accumulated = list(context.get(f"{own}acc", []))
        for item in range(done, kind.items):
            if should_stop() and kind.marathon == "polite" and item > done:
                return Continue()  # the deadline (or a cancel): go on in a new delivery
            if should_stop() and kind.marathon != "stubborn":  # a cancel: stop here
                raise RetryableError(f"{name}: stopped at item {item}")
            RECORDER.work(kind.work)
            accumulated.append(int(hashlib.sha256(f"{seed}/{item}".encode()).hexdigest()[:8], 16))
            if save_progress({f"{own}done": item + 1, f"{own}acc": accumulated}):
                RECORDER.saves.append((RECORDER.now(), run, name, item + 1))
        if not kind.items:
            RECORDER.work(kind.work)
        value = np.frombuffer(hashlib.sha256(f"{seed}{accumulated}".encode()).digest(), np.uint8)
        out: dict[str, Any] = {f"{own}out": value.copy(), f"{own}sum": int(sum(accumulated))}
        if kind.retype:
            for key, old in context.items():
                if key.endswith(".sum") and type(old) is int:
                    out[key] = False if old == 0 else float(old)
        if kind.large:
            # Over the 64 KiB blob threshold, and incompressible: it costs its size to move.
            noise = np.random.default_rng(int(seed, 16))
            out[f"{own}big"] = noise.integers(0, 256, 80_000, dtype=np.uint8)
        return out

    step.__name__ = name
    return step


def build(name: str, graph: dict[str, tuple[list[str], StepKind]], *, retries: int = 2) -> Pipeline:
    """A pipeline from ``{step: (dependencies, kind)}`` in graph order."""
    return Pipeline(
        name,
        {
            step: {"function": _make_step(step, kind), "dependencies": deps, "retries": retries}
            for step, (deps, kind) in graph.items()
        },
        storage="memory://simulation-unused",
        cleanup_on_success=False,
    )


PLAIN = StepKind()
LAST = StepKind(work=30.0)  # long enough for a cancel to arrive while it runs
LOOP = StepKind(items=4, work=20.0)
FLAKY = StepKind(flaky=1)
LARGE = StepKind(large=True)

PIPELINES: dict[str, Pipeline] = {
    "chain": build(
        "chain",
        {"a": ([], LARGE), "b": (["a"], LOOP), "c": (["b"], FLAKY), "d": (["c"], LAST)},
    ),
    "diamond": build(
        "diamond",
        {"a": ([], PLAIN), "b": (["a"], LOOP), "c": (["a"], LARGE), "d": (["b", "c"], LAST)},
    ),
    "fanout": build(
        "fanout",
        {
            "root": ([], PLAIN),
            **{
                f"w{i}": (["root"], FLAKY if i == 2 else LOOP if i == 3 else PLAIN)
                for i in range(5)
            },
            "join": ([f"w{i}" for i in range(5)], LAST),
        },
    ),
    "fatal": build(
        "fatal", {"a": ([], PLAIN), "b": (["a"], StepKind(fatal=True)), "c": (["b"], PLAIN)}
    ),
    "slowloop": build("slowloop", {"a": ([], StepKind(items=6, work=45.0)), "b": (["a"], LAST)}),
}

PIPELINES["marathon"] = build(
    "marathon",
    {
        "a": ([], PLAIN),
        "polite": (["a"], StepKind(items=30, work=20.0, marathon="polite")),
        "stubborn": (["a"], StepKind(items=10, work=60.0, marathon="stubborn")),
        "z": (["polite", "stubborn"], LAST),
    },
)

PIPELINES["retype"] = build(
    "retype",
    {
        "a": ([], PLAIN),
        "b": (["a"], LOOP),
        "t": (["b"], StepKind(retype=True)),
        "c": (["b"], PLAIN),
        "d": (["t", "c"], LAST),  # its input is composed from two ancestors' deltas
    },
)

FAILING_STEPS = {"fatal": "b"}  # pipelines that must end in error, and the step that fails


# A map step between two plain steps: ``list`` makes 8-14 items, ``m`` maps over them (an
# item in four fails once, retryably), ``z`` uses the results.


def _list_items(context: dict[str, Any]) -> dict[str, Any]:
    return {"items": [f"i{n}" for n in range(8 + int(context["seed"]) % 7)]}


def _map_item(item: str, context: Any) -> int:
    run = str(context["run"])
    RECORDER.work(5.0)
    key = (run, f"m#{item}")
    if int(item[1:]) % 4 == 1 and RECORDER.failures_left.setdefault(key, 1) > 0:
        RECORDER.failures_left[key] -= 1
        raise RetryableError(f"item {item}: transient failure")
    seed = digest(dict(context))
    return int(hashlib.sha256(f"{seed}/{item}".encode()).hexdigest()[:8], 16)


PIPELINES["mapper"] = Pipeline(
    "mapper",
    {
        "a": {"function": _make_step("a", PLAIN), "retries": 2},
        "list": {"function": _list_items, "dependencies": ["a"]},
        "m": {
            "function": _map_item,
            "dependencies": ["list"],
            "map": "items",
            "retries": 2,
            "concurrency": 4,
        },
        "z": {"function": _make_step("z", LAST), "dependencies": ["m"], "retries": 2},
    },
    storage="memory://simulation-unused",
    cleanup_on_success=False,
)
