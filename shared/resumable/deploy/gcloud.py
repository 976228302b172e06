"""The gcloud commands that deploy a plan: the same resources as ``infra/``.

:func:`actions` lists them in dependency order (accounts, bucket, Firestore, topics,
grants — ``_grants`` —, functions, subscriptions, scheduler). :func:`script` renders them as a bash
script that is safe to re-run: a resource that exists is updated or left alone, never
duplicated; :func:`resumable.deploy.commands.run` runs them.

Two values are known only at deploy time and are looked up as the commands run: the
Pub/Sub service agent's address and a function's URL (its push subscription's endpoint
and token audience).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resumable.deploy._grants import grant
from resumable.deploy.commands import Action, Arg, Lookup, TempFile, gcloud, plain
from resumable.deploy.commands import script as render_script
from resumable.deploy.plan import Binding, DeploymentPlan, cpu
from resumable.serverless import _naming as naming
from resumable.serverless._topology import FunctionSpec


@dataclass
class _Builder:
    plan: DeploymentPlan
    source: str
    actions: list[Action] = field(default_factory=list)

    def gcloud(self, *args: Arg) -> tuple[Arg, ...]:
        return gcloud(self.plan.project, *args)

    def add(self, summary: str, command: tuple[Arg, ...], **options: Any) -> None:
        self.actions.append(Action(summary, command, **options))


def actions(plan: DeploymentPlan, *, source: str | Path) -> list[Action]:
    """The commands that deploy ``plan``, with the function bundle in ``source``."""
    b = _Builder(plan, str(source))
    _accounts(b)
    _bucket(b)
    _firestore(b)
    _topics(b)
    _grants(b, [g for g in plan.bindings() if g.kind in ("bucket", "project", "topic")])
    for spec in plan.functions:
        _function(b, spec)
    _grants(b, [g for g in plan.bindings() if g.kind == "function"])
    if plan.delivery == "push":
        for spec in plan.functions:
            _subscription(b, spec)
        _grants(b, [g for g in plan.bindings() if g.kind in ("service_account", "subscription")])
    _scheduler(b)
    return b.actions


def _accounts(b: _Builder) -> None:
    plan = b.plan
    for account, email, what in (
        (plan.runtime_account, plan.runtime_email, "runs the functions"),
        (plan.trigger_account, plan.trigger_email, "invokes the functions"),
    ):
        b.add(
            f"service account {email}: {what}",
            b.gcloud("iam", "service-accounts", "create", account, f"--display-name={what}"),
            exists=plain(b.gcloud("iam", "service-accounts", "describe", email)),
        )


def _bucket(b: _Builder) -> None:
    plan = b.plan
    url = f"gs://{plan.bucket}"
    b.add(
        f"bucket {url}: checkpoints",
        b.gcloud(
            "storage",
            "buckets",
            "create",
            url,
            f"--location={plan.region}",
            "--uniform-bucket-level-access",
            "--public-access-prevention",
        ),
        exists=plain(b.gcloud("storage", "buckets", "describe", url)),
    )
    b.add(
        f"bucket {url}: private, versioned, overwritten versions expire",
        b.gcloud(
            "storage",
            "buckets",
            "update",
            url,
            "--uniform-bucket-level-access",
            "--public-access-prevention",
            "--versioning",
            TempFile("--lifecycle-file", "lifecycle.json", json.dumps(lifecycle(plan))),
        ),
    )


def lifecycle(plan: DeploymentPlan) -> dict[str, Any]:
    """The bucket's lifecycle policy (the JSON ``gcloud storage`` takes), as in
    ``infra/storage.tf``.

    No rule deletes live objects by age: a run resumed after weeks still needs its params
    and blobs, however old. Only what no run reads goes: object versions overwritten or
    deleted ``noncurrent_retention_days`` ago, and parts of uploads abandoned a day ago.
    """
    return {
        "rule": [
            {
                "action": {"type": "Delete"},
                "condition": {
                    "daysSinceNoncurrentTime": plan.noncurrent_retention_days,
                    "isLive": False,
                },
            },
            {"action": {"type": "AbortIncompleteMultipartUpload"}, "condition": {"age": 1}},
        ]
    }


def _firestore(b: _Builder) -> None:
    plan = b.plan
    database = f"--database={plan.database}"
    group = f"--collection-group={plan.collection}"
    b.add(
        f"Firestore database {plan.database}",
        b.gcloud(
            "firestore",
            "databases",
            "create",
            database,
            f"--location={plan.firestore_location}",
            "--type=firestore-native",
            "--enable-pitr",
            "--delete-protection",
        ),
        exists=plain(b.gcloud("firestore", "databases", "describe", database)),
    )
    b.add(
        f"TTL policy: finished runs deleted after {plan.run_retention_days} days",
        b.gcloud(
            "firestore", "fields", "ttls", "update", plan.ttl_field, group, "--enable-ttl", database
        ),
    )
    b.add(
        f"no single-field indexes on {plan.ttl_field} (a timestamp written in order)",
        b.gcloud(
            "firestore",
            "indexes",
            "fields",
            "update",
            plan.ttl_field,
            group,
            "--disable-indexes",
            database,
        ),
    )
    items = f"--collection-group={plan.map_items_collection}"
    for item_field in plan.unindexed_item_fields:
        b.add(
            f"no single-field indexes on map items' {item_field} (no query uses it)",
            b.gcloud(
                "firestore", "indexes", "fields", "update", item_field, items, "--disable-indexes",
                database,
            ),
        )  # fmt: skip
    for index in plan.indexes:
        configs = [
            f"--field-config=field-path={path},order={order.lower()}" for path, order in index
        ]
        b.add(
            "index for " + ", ".join(path for path, _ in index),
            b.gcloud(
                "firestore",
                "indexes",
                "composite",
                "create",
                group,
                "--query-scope=collection",
                *configs,
                database,
            ),
            exists_ok=True,
        )


def _topics(b: _Builder) -> None:
    for topic in b.plan.topology.topics:
        b.add(
            f"topic {topic}",
            b.gcloud("pubsub", "topics", "create", topic),
            exists=plain(b.gcloud("pubsub", "topics", "describe", topic)),
        )


def _function(b: _Builder, spec: FunctionSpec) -> None:
    plan = b.plan
    env = plan.environment(spec)
    args: list[Arg] = [
        "functions",
        "deploy",
        spec.name,
        "--gen2",
        f"--region={plan.region}",
        f"--runtime={plan.python_runtime}",
        f"--source={b.source}",
        f"--entry-point={spec.target}",
        f"--service-account={plan.runtime_email}",
        "--ingress-settings=internal-only",
        f"--memory={spec.memory}",
        f"--timeout={spec.timeout_seconds}s",
        f"--concurrency={spec.concurrency}",
        f"--max-instances={spec.max_instances or plan.max_instances}",
        f"--set-env-vars={_env_vars(env)}",
    ]
    if plan.build_service_account_path:
        args.append(f"--build-service-account={plan.build_service_account_path}")
    if (cpus := cpu(spec)) is not None:
        args.append(f"--cpu={cpus}")
    if plan.delivery == "push":
        args += ["--trigger-http", "--no-allow-unauthenticated"]
    else:
        args += [
            f"--trigger-topic={spec.topic}",
            f"--trigger-location={plan.region}",
            f"--trigger-service-account={plan.trigger_email}",
            "--retry",
        ]
    what = f"step {spec.pipeline}.{spec.step}" if spec.step else spec.target
    b.add(f"function {spec.name}: {what}", b.gcloud(*args))


def _subscription(b: _Builder, spec: FunctionSpec) -> None:
    plan = b.plan
    policy = plan.policy
    uri = function_uri(b, spec)
    variable = "uri_" + re.sub(r"[^a-z0-9]", "_", spec.name)
    settings: list[Arg] = [
        Lookup(variable, uri, before="--push-endpoint=", after=plan.pubsub_endpoint_path(spec)),
        Lookup(variable, uri, before="--push-auth-token-audience="),
        f"--push-auth-service-account={plan.trigger_email}",
        f"--ack-deadline={policy.ack_deadline_seconds}",
        f"--min-retry-delay={int(policy.min_backoff_seconds)}s",
        f"--max-retry-delay={int(policy.max_backoff_seconds)}s",
        # Pub/Sub deletes a subscription idle for 31 days by default: a pipeline run
        # rarely would then stall at that step.
        "--expiration-period=never",
    ]
    attempts = plan.delivery_attempts(spec)
    dead_letter: list[Arg] = (
        [
            f"--dead-letter-topic={plan.topology.dead_letter_topic}",
            f"--max-delivery-attempts={attempts}",
        ]
        if attempts is not None
        else []
    )
    b.add(
        f"push subscription {spec.subscription} → {spec.name}",
        b.gcloud(
            "pubsub",
            "subscriptions",
            "create",
            spec.subscription,
            f"--topic={spec.topic}",
            *settings,
            *dead_letter,
        ),
        exists=plain(b.gcloud("pubsub", "subscriptions", "describe", spec.subscription)),
        update=b.gcloud(
            "pubsub",
            "subscriptions",
            "update",
            spec.subscription,
            *settings,
            *(dead_letter or ["--clear-dead-letter-policy"]),
        ),
    )


def function_uri(b: _Builder, spec: FunctionSpec) -> tuple[str, ...]:
    """The command printing a deployed function's ``run.app`` URL (the one Pub/Sub push
    may reach with internal-only ingress)."""
    return plain(
        b.gcloud(
            "functions",
            "describe",
            spec.name,
            "--v2",
            f"--region={b.plan.region}",
            "--format=value(serviceConfig.uri)",
        )
    )


def _grants(b: _Builder, grants: Sequence[Binding]) -> None:
    b.actions.extend(grant(b.plan, g) for g in grants)


def _scheduler(b: _Builder) -> None:
    plan = b.plan
    settings = (
        f"--location={plan.region}",
        f"--schedule={plan.watchdog_schedule}",
        "--time-zone=Etc/UTC",
        # The full path: gcloud resolves a bare topic name against the default project,
        # not --project.
        f"--topic={naming.topic_path(plan.project, plan.topology.watchdog_topic)}",
        "--message-body={}",
    )
    b.add(
        f"scheduler job {plan.watchdog_job}: the watchdog, {plan.watchdog_schedule}",
        b.gcloud("scheduler", "jobs", "create", "pubsub", plan.watchdog_job, *settings),
        exists=plain(
            b.gcloud(
                "scheduler", "jobs", "describe", plan.watchdog_job, f"--location={plan.region}"
            )
        ),
        update=b.gcloud("scheduler", "jobs", "update", "pubsub", plan.watchdog_job, *settings),
    )


def _env_vars(env: dict[str, str]) -> str:
    """``--set-env-vars`` with a delimiter no value contains (gcloud's ``^D^`` syntax):
    the pipelines list has commas."""
    text = "".join(f"{k}{v}" for k, v in env.items())
    delimiter = next(d for d in "@|#;~:" if d not in text)
    return f"^{delimiter}^" + delimiter.join(f"{k}={v}" for k, v in env.items())


def script(plan: DeploymentPlan, deploy_actions: Sequence[Action]) -> str:
    """The deployment as a bash script (what ``--dry-run`` prints)."""
    title = f"Deploys {', '.join(plan.pipelines)} to project {plan.project} ({plan.region})."
    return render_script(title, deploy_actions)
