"""The infrastructure a deployment needs, derived from its pipelines.

Topics, push subscriptions (with their retry and dead-letter policies) and functions come
from here for the local dev stack, the generated gcloud commands and the Terraform
variables alike, so infrastructure and code agree by construction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from resumable._defaults import DEFAULT_PREFIX
from resumable.definition._loader import PipelineLike as Pipeline
from resumable.definition._spec import delivery_seconds
from resumable.errors import TopologyError
from resumable.serverless import _naming as naming
from resumable.serverless.transitions import max_attempts

# Pub/Sub's bounds on a subscription's max delivery attempts before dead-lettering.
MIN_DELIVERY_ATTEMPTS, MAX_DELIVERY_ATTEMPTS = 5, 100


@dataclass(frozen=True)
class DeliveryPolicy:
    """How Pub/Sub pushes to a function: ack deadline, backoff, dead-lettering."""

    ack_deadline_seconds: int = 600
    min_backoff_seconds: float = 10.0
    max_backoff_seconds: float = 600.0
    # Deliveries of a start message before it is dead-lettered.
    max_delivery_attempts: int = 10
    # Deliveries of a step message beyond the attempts the worker allows the step: every
    # "retry later" answer (another worker holds the step's lease, as for up to a lease
    # after each crash) consumes one too, and must not dead-letter a step that still has
    # retries left.
    retry_later_allowance: int = 10

    @classmethod
    def local(cls) -> DeliveryPolicy:
        """Fast feedback on the emulators: seconds, not minutes, between redeliveries."""
        return cls(ack_deadline_seconds=60, min_backoff_seconds=1.0, max_backoff_seconds=5.0)

    def delivery_attempts(self, spec: FunctionSpec) -> int:
        """Max delivery attempts of ``spec``'s subscription: for a step, enough that its
        own retry limit (``retries``), not Pub/Sub, ends its attempts.

        Raises :class:`TopologyError` if that is more than Pub/Sub allows.
        """
        if spec.max_attempts is None:
            return self.max_delivery_attempts
        if spec.map_step:
            # Items queue behind the step's instances: a push refused while every instance
            # is busy (429) or an item busy elsewhere counts as a delivery too. Each item
            # counts its own claims (its document gives up a crashing item), so Pub/Sub's
            # limit need only stay out of the way.
            return MAX_DELIVERY_ATTEMPTS
        needed = spec.max_attempts + self.retry_later_allowance
        if needed > MAX_DELIVERY_ATTEMPTS:
            raise TopologyError(
                f"pipeline {spec.pipeline!r} step {spec.step!r} needs {needed} delivery "
                f"attempts ({spec.max_attempts} attempts from its retries, plus "
                f"{self.retry_later_allowance} for 'retry later' answers), more than the "
                f"{MAX_DELIVERY_ATTEMPTS} Pub/Sub allows: lower its retries by "
                f"{needed - MAX_DELIVERY_ATTEMPTS}"
            )
        return max(needed, MIN_DELIVERY_ATTEMPTS)


@dataclass(frozen=True)
class FunctionSpec:
    """One deployed function: its entry point, the topic that triggers it, its settings."""

    name: str
    target: str  # start_run, run_step, dead_letter, watchdog
    topic: str
    subscription: str
    pipeline: str | None = None
    step: str | None = None
    timeout_seconds: int = 540
    memory: str = "512Mi"
    concurrency: int = 1
    # Instances at most (None: the deployment's): a map step's ``concurrency``, one item
    # per instance, so that its items run that many at once.
    max_instances: int | None = None
    map_step: bool = False
    dead_letter: bool = True
    # Attempts the worker allows the step (transitions.max_attempts); None for the
    # control functions.
    max_attempts: int | None = None

    @property
    def env(self) -> dict[str, str]:
        """Variables this function needs beyond the deployment's common ones."""
        return {"RESUMABLE_STEP": self.step} if self.step else {}


@dataclass(frozen=True)
class Topology:
    """Every topic, subscription and function of a deployment."""

    prefix: str
    functions: list[FunctionSpec] = field(default_factory=list)
    dead_letter_topic: str = ""
    start_topic: str = ""
    watchdog_topic: str = ""

    @property
    def topics(self) -> list[str]:
        names = [self.start_topic, self.dead_letter_topic, self.watchdog_topic]
        names += [f.topic for f in self.functions if f.target == "run_step"]
        return list(dict.fromkeys(names))

    def step_functions(self, pipeline: str) -> dict[str, FunctionSpec]:
        return {
            f.step: f
            for f in self.functions
            if f.target == "run_step" and f.pipeline == pipeline and f.step
        }

    def step_topics(self, pipeline: str) -> dict[str, str]:
        return {step: f.topic for step, f in self.step_functions(pipeline).items()}


def _memory(value: str | None) -> str:
    return value or "512Mi"


def build_topology(pipelines: Iterable[Pipeline], prefix: str = DEFAULT_PREFIX) -> Topology:
    """The deployment's topology for ``pipelines``, with names from :mod:`naming`.

    Raises :class:`TopologyError` when two functions would share a topic, subscription
    or function name (pipeline ``a-b`` step ``c`` and pipeline ``a`` step ``b-c``), or a
    topic name breaks Pub/Sub's rules.
    """
    # The control functions: (name, entry point, topic, timeout, dead-lettered).
    controls = [
        ("start", "start_run", naming.start_topic(prefix), 60, True),
        ("dead-letter", "dead_letter", naming.dead_letter_topic(prefix), 60, False),
        ("watchdog", "watchdog", naming.watchdog_topic(prefix), 300, False),
    ]
    functions = [
        FunctionSpec(
            name=naming.service_name(prefix, name),
            target=target,
            topic=topic,
            subscription=naming.push_subscription(topic),
            timeout_seconds=timeout,
            dead_letter=dead_lettered,
        )
        for name, target, topic, timeout, dead_lettered in controls
    ]
    for pipeline in pipelines:
        spec = pipeline.spec
        for step in spec.order:
            definition = spec.steps[step]
            topic = naming.step_topic(prefix, spec.name, step)
            functions.append(
                FunctionSpec(
                    name=naming.step_function(prefix, spec.name, step),
                    target="run_step",
                    topic=topic,
                    subscription=naming.push_subscription(topic),
                    pipeline=spec.name,
                    step=step,
                    timeout_seconds=delivery_seconds(definition),
                    memory=_memory(definition.memory),
                    concurrency=(definition.concurrency or 1) if definition.map is None else 1,
                    max_instances=definition.concurrency if definition.map is not None else None,
                    map_step=definition.map is not None,
                    max_attempts=max_attempts(definition),
                )
            )
    _check_names(functions)
    return Topology(
        prefix=prefix,
        functions=functions,
        dead_letter_topic=naming.dead_letter_topic(prefix),
        start_topic=naming.start_topic(prefix),
        watchdog_topic=naming.watchdog_topic(prefix),
    )


def _what(spec: FunctionSpec) -> str:
    if spec.step:
        return f"pipeline {spec.pipeline!r} step {spec.step!r}"
    return f"the {spec.target} function"


def _check_names(functions: list[FunctionSpec]) -> None:
    """Every function gets its own topic, subscription and function name, and each
    topic and subscription name is one Pub/Sub accepts."""
    for kind in ("topic", "subscription", "name"):
        owners: dict[str, FunctionSpec] = {}
        for spec in functions:
            name = getattr(spec, kind)
            if kind != "name" and (problem := naming.pubsub_name_problem(name)):
                raise TopologyError(f"{_what(spec)}: {kind} {name!r} {problem}")
            other = owners.setdefault(name, spec)
            if other is not spec:
                what = "function" if kind == "name" else kind
                raise TopologyError(
                    f"{_what(other)} and {_what(spec)} would both use the {what} "
                    f"{name!r}: rename a pipeline or step so that their names differ"
                )
