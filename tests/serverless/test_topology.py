"""The topology refuses what Pub/Sub or Cloud Run would refuse, or silently break: two
functions sharing a name, names Pub/Sub rejects, and subscriptions whose delivery attempts
would cap a step's retries."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from resumable import Pipeline
from resumable.cli._app import app
from resumable.deploy import build_plan
from resumable.errors import TopologyError
from resumable.serverless._topology import MAX_DELIVERY_ATTEMPTS, DeliveryPolicy, build_topology
from resumable.serverless._worker import max_attempts


def step(context: dict[str, Any]) -> dict[str, Any]:
    return {}


def pipeline(name: str, *steps: str, retries: int = 0) -> Pipeline:
    return Pipeline(name, {s: {"function": step, "retries": retries} for s in steps})


def test_two_pipelines_whose_step_names_join_to_the_same_topic_are_refused_naming_both() -> None:
    with pytest.raises(TopologyError) as refused:
        build_topology([pipeline("ingest-raw", "clean"), pipeline("ingest", "raw-clean")])
    message = str(refused.value)
    assert "pipeline 'ingest-raw' step 'clean'" in message
    assert "pipeline 'ingest' step 'raw-clean'" in message
    assert "'resumable-ingest-raw-clean'" in message


def test_a_step_named_like_a_control_topic_is_refused() -> None:
    with pytest.raises(TopologyError, match="the dead_letter function and pipeline 'dead'"):
        build_topology([pipeline("dead", "letter")])


def test_a_topic_name_longer_than_pubsub_allows_is_refused() -> None:
    with pytest.raises(TopologyError, match="is not a Pub/Sub name"):
        build_topology([pipeline("p" * 128, "s" * 128)])


def test_a_prefix_pubsub_reserves_is_refused() -> None:
    with pytest.raises(TopologyError, match="reserved"):
        build_topology([pipeline("ingest", "clean")], prefix="google")


def test_distinct_names_make_a_topology() -> None:
    topology = build_topology([pipeline("ingest", "clean"), pipeline("ingest-raw", "load")])
    assert len({f.topic for f in topology.functions}) == len(topology.functions) == 5


def test_a_steps_subscription_allows_every_attempt_of_its_retries_and_retry_later_answers() -> None:
    policy = DeliveryPolicy()
    topology = build_topology([pipeline("ingest", "clean", retries=20)])
    clean = topology.step_functions("ingest")["clean"]
    definition = pipeline("ingest", "clean", retries=20).spec.steps["clean"]
    assert clean.max_attempts == max_attempts(definition)
    assert (
        policy.delivery_attempts(clean) == max_attempts(definition) + policy.retry_later_allowance
    )
    assert policy.delivery_attempts(clean) > 20 + 1
    start = next(f for f in topology.functions if f.target == "start_run")
    assert policy.delivery_attempts(start) == policy.max_delivery_attempts


def test_delivery_attempts_stay_within_pubsubs_minimum() -> None:
    topology = build_topology([pipeline("ingest", "clean")])
    clean = topology.step_functions("ingest")["clean"]
    assert DeliveryPolicy(retry_later_allowance=0).delivery_attempts(clean) == 5


def test_a_step_needing_more_than_100_delivery_attempts_is_refused_when_planning() -> None:
    with pytest.raises(TopologyError) as refused:
        build_plan(
            ["tests.serverless.test_topology:greedy"], project="acme-video", region="europe-west1"
        )
    message = str(refused.value)
    assert "pipeline 'greedy' step 'poll' needs 109 delivery attempts" in message
    assert f"more than the {MAX_DELIVERY_ATTEMPTS} Pub/Sub allows" in message
    assert "lower its retries by 9" in message


def test_the_cli_refuses_colliding_pipelines_with_exit_2() -> None:
    result = CliRunner().invoke(
        app,
        [
            "deploy",
            "tfvars",
            "-p",
            "tests.serverless.test_topology:ingest_raw,tests.serverless.test_topology:ingest",
            "--project",
            "acme-video",
            "--region",
            "europe-west1",
            "--output",
            "-",
        ],
    )
    assert result.exit_code == 2
    assert "would both use the topic 'resumable-ingest-raw-clean'" in result.output


greedy = pipeline("greedy", "poll", retries=95)
ingest_raw = pipeline("ingest-raw", "clean")
ingest = pipeline("ingest", "raw-clean")


def test_a_map_steps_subscription_allows_pubsubs_most_delivery_attempts() -> None:
    mapped = Pipeline(
        "mapped",
        {"items": {"function": lambda item, context: item, "map": "xs", "concurrency": 50}},
    )
    topology = build_topology([mapped])
    (function,) = [f for f in topology.functions if f.step == "items"]
    assert function.map_step and (function.concurrency, function.max_instances) == (1, 50)
    assert DeliveryPolicy().delivery_attempts(function) == MAX_DELIVERY_ATTEMPTS
