"""The Terraform variables of a deployment (``infra/``), rendered from its plan.

Every name the Terraform configuration creates — topics, subscriptions, functions,
service accounts, buckets, the scheduler job — is a value here; the configuration only
wires them together. ``terraform.tfvars.json`` is the usual file name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from resumable.deploy.plan import CONTROL_KEYS, DeploymentPlan, cpu
from resumable.serverless._topology import FunctionSpec


def function_vars(plan: DeploymentPlan, spec: FunctionSpec) -> dict[str, Any]:
    """One function's object, as the ``function`` module takes it."""
    return {
        "name": spec.name,
        "entry_point": spec.target,
        "topic": spec.topic,
        "subscription": spec.subscription,
        "push_path": plan.pubsub_endpoint_path(spec),
        "timeout_seconds": spec.timeout_seconds,
        "memory": spec.memory,
        "cpu": cpu(spec),
        "concurrency": spec.concurrency,
        "max_instances": spec.max_instances,
        "dead_letter": spec.dead_letter,
        "max_delivery_attempts": plan.delivery_attempts(spec),
        "environment": dict(spec.env),
    }


def tfvars(plan: DeploymentPlan, *, source_dir: str) -> dict[str, Any]:
    """The variables for ``infra/``; ``source_dir`` is the function bundle's folder, as
    Terraform (running in ``infra/``) will find it."""
    pipelines: dict[str, dict[str, Any]] = {}
    for spec in plan.functions:
        if spec.target == "run_step" and spec.pipeline and spec.step:
            steps = pipelines.setdefault(spec.pipeline, {"steps": {}})["steps"]
            steps[spec.step] = function_vars(plan, spec)
    policy = plan.policy
    return {
        "project_id": plan.project,
        "region": plan.region,
        "prefix": plan.prefix,
        "delivery": plan.delivery,
        "bucket": plan.bucket,
        "source_bucket": plan.source_bucket,
        "source_dir": source_dir,
        "python_runtime": plan.python_runtime,
        "build_service_account": plan.build_service_account_path,
        "max_instances": plan.max_instances,
        "firestore_location": plan.firestore_location,
        "database": plan.database,
        "collection": plan.collection,
        "ttl_field": plan.ttl_field,
        "map_items_collection": plan.map_items_collection,
        "unindexed_item_fields": list(plan.unindexed_item_fields),
        "firestore_indexes": [
            [{"field_path": path, "order": order} for path, order in index]
            for index in plan.indexes
        ],
        "noncurrent_retention_days": plan.noncurrent_retention_days,
        "environment": plan.environment(),
        "delivery_policy": {
            "ack_deadline_seconds": policy.ack_deadline_seconds,
            "min_backoff_seconds": int(policy.min_backoff_seconds),
            "max_backoff_seconds": int(policy.max_backoff_seconds),
        },
        "service_accounts": {"runtime": plan.runtime_account, "trigger": plan.trigger_account},
        "topics": {
            "start": plan.topology.start_topic,
            "dead_letter": plan.topology.dead_letter_topic,
            "watchdog": plan.topology.watchdog_topic,
        },
        "watchdog": {"job": plan.watchdog_job, "schedule": plan.watchdog_schedule},
        "control_functions": {
            CONTROL_KEYS[spec.target]: function_vars(plan, spec)
            for spec in plan.functions
            if spec.target in CONTROL_KEYS
        },
        "pipelines": pipelines,
    }


def write_tfvars(plan: DeploymentPlan, path: Path, *, source_dir: Path) -> dict[str, Any]:
    """Write ``path`` (JSON); the bundle folder is written relative to the file's folder,
    where Terraform runs. Returns the variables."""
    relative = os.path.relpath(source_dir.resolve(), path.parent.resolve())
    variables = tfvars(plan, source_dir=relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(variables))
    return variables


def dumps(variables: dict[str, Any]) -> str:
    """The variables as the JSON of a ``.tfvars.json`` file."""
    return json.dumps(variables, indent=2, ensure_ascii=False) + "\n"
