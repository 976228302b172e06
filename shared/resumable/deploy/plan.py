"""What a deployment consists of, derived from its pipelines.

A :class:`DeploymentPlan` is built once from the pipeline definitions with
``build_topology`` (the function the local dev stack uses) and the functions' settings
with ``Settings.to_env`` (the inverse of what the functions read). The Terraform
variables, the gcloud commands and the IAM bindings are all rendered from it, so no name
or setting is derived twice.

Delivery is ``push`` by default: one Pub/Sub push subscription per function, named by
the topology, authenticated with the trigger account's OIDC token, with the production
``DeliveryPolicy`` (ack deadline, backoff, dead-lettering) — the same subscriptions the
local stack creates. ``eventarc`` lets Eventarc create the subscriptions instead (retry
on failure, but no dead-letter policy; see infra/README.md).
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from resumable._defaults import DEFAULT_COLLECTION, DEFAULT_PREFIX
from resumable._ids import validate_id
from resumable.definition._loader import load_pipeline
from resumable.serverless import _naming as naming
from resumable.serverless._firestore import COMPOSITE_INDEXES, EXPIRE_AT
from resumable.serverless._map_firestore import ITEMS, UNINDEXED_ITEM_FIELDS
from resumable.serverless._settings import Settings
from resumable.serverless._topology import DeliveryPolicy, FunctionSpec, Topology, build_topology

Delivery = Literal["push", "eventarc"]
Principal = Literal["runtime", "trigger", "pubsub_agent"]
ResourceKind = Literal["project", "bucket", "topic", "subscription", "service_account", "function"]

DELIVERIES: tuple[Delivery, ...] = ("push", "eventarc")
CONTROL_KEYS = {"start_run": "start", "dead_letter": "dead_letter", "watchdog": "watchdog"}

# Roles, each the narrowest predefined one that does the job.
OBJECT_USER = "roles/storage.objectUser"  # objects only: no bucket settings, no IAM
DATASTORE_USER = "roles/datastore.user"  # documents only: no indexes, no database admin
PUBLISHER = "roles/pubsub.publisher"
SUBSCRIBER = "roles/pubsub.subscriber"
INVOKER = "roles/run.invoker"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"

# CPUs Cloud Run functions give a memory size by default (concurrency > 1 needs >= 1).
_DEFAULT_CPU = {
    "128Mi": 0.083,
    "256Mi": 0.167,
    "512Mi": 0.333,
    "1Gi": 0.583,
    "2Gi": 1.0,
    "4Gi": 2.0,
    "8Gi": 2.0,
    "16Gi": 4.0,
    "32Gi": 8.0,
}


@dataclass(frozen=True)
class Binding:
    """One IAM grant: ``principal`` gets ``role`` on one resource (``kind`` + ``resource``).

    Principals are symbolic because the Pub/Sub service agent's address contains the
    project *number*, which only the cloud knows; each renderer resolves them.
    """

    principal: Principal
    role: str
    kind: ResourceKind
    resource: str
    condition: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class DeploymentPlan:
    """Every name and setting of one deployment (see the module docstring)."""

    project: str
    region: str
    pipelines: tuple[str, ...]
    topology: Topology
    settings: Settings
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    delivery: Delivery = "push"
    bucket: str = ""
    source_bucket: str = ""
    firestore_location: str = ""
    runtime_account: str = ""
    trigger_account: str = ""
    watchdog_job: str = ""
    watchdog_schedule: str = "*/2 * * * *"
    python_runtime: str = ""
    max_instances: int = 100
    # The account Cloud Build builds the functions as (an email); None: the project's
    # default build account.
    build_service_account: str | None = None
    # Days an overwritten or deleted object version stays recoverable in the bucket.
    noncurrent_retention_days: int = 7

    @property
    def prefix(self) -> str:
        """The prefix of every topic, subscription and function name."""
        return self.topology.prefix

    @property
    def runtime_email(self) -> str:
        """The account the functions run as."""
        return service_account_email(self.runtime_account, self.project)

    @property
    def trigger_email(self) -> str:
        """The account Pub/Sub pushes to the functions as (its OIDC token)."""
        return service_account_email(self.trigger_account, self.project)

    @property
    def build_service_account_path(self) -> str | None:
        """``build_service_account`` as the functions API names it."""
        account = self.build_service_account
        return f"projects/{self.project}/serviceAccounts/{account}" if account else None

    @property
    def collection(self) -> str:
        """The Firestore collection of run documents."""
        return self.settings.collection

    @property
    def database(self) -> str:
        """The Firestore database."""
        return self.settings.database

    @property
    def ttl_field(self) -> str:
        """The field the TTL policy deletes finished run documents by."""
        return EXPIRE_AT

    @property
    def indexes(self) -> tuple[tuple[tuple[str, str], ...], ...]:
        """The composite indexes the run store's queries need."""
        return COMPOSITE_INDEXES

    @property
    def map_items_collection(self) -> str:
        """The collection group of map steps' item documents."""
        return ITEMS

    @property
    def unindexed_item_fields(self) -> tuple[str, ...]:
        """Item fields without single-field indexes (no query uses them; see
        ``resumable.serverless._map_firestore``)."""
        return UNINDEXED_ITEM_FIELDS

    @property
    def run_retention_days(self) -> int:
        """How long a finished run's checkpoints and document are kept."""
        return int(self.settings.run_retention_days)

    @property
    def functions(self) -> list[FunctionSpec]:
        """Every function of the deployment."""
        return self.topology.functions

    @property
    def step_topics(self) -> list[str]:
        """Topics the runtime publishes to: one per step."""
        return [f.topic for f in self.functions if f.target == "run_step"]

    def environment(self, spec: FunctionSpec | None = None) -> dict[str, str]:
        """The variables of a function: the deployment's, plus the function's own."""
        env = self.settings.to_env()
        if spec is not None:
            env.update(spec.env)
        return env

    def delivery_attempts(self, spec: FunctionSpec) -> int | None:
        """Max delivery attempts of the function's subscription before it dead-letters;
        ``None`` for a function whose subscription does not dead-letter."""
        return self.policy.delivery_attempts(spec) if spec.dead_letter else None

    def pubsub_endpoint_path(self, spec: FunctionSpec) -> str:
        """Path appended to a function's URL by its push subscription.

        As on the local stack, it makes functions-framework name the topic as the
        CloudEvent's source.
        """
        return "/" + naming.topic_path(self.project, spec.topic)

    def bindings(self) -> list[Binding]:
        """Every IAM grant the deployment needs, and nothing more."""
        grants = [
            Binding(
                "runtime",
                OBJECT_USER,
                "bucket",
                self.bucket,
                reason="read and write checkpoints in its bucket",
            ),
            Binding(
                "runtime",
                DATASTORE_USER,
                "project",
                self.project,
                condition=firestore_condition(self.project, self.database),
                reason="run documents, in its Firestore database only",
            ),
        ]
        grants += [
            Binding("runtime", PUBLISHER, "topic", topic, reason="publish the next steps")
            for topic in self.step_topics
        ]
        grants += [
            Binding("trigger", INVOKER, "function", f.name, reason="deliver messages")
            for f in self.functions
        ]
        if self.delivery == "push":
            grants.append(
                Binding(
                    "pubsub_agent",
                    TOKEN_CREATOR,
                    "service_account",
                    self.trigger_email,
                    reason="sign the push requests' OIDC tokens as the trigger account",
                )
            )
            grants.append(
                Binding(
                    "pubsub_agent",
                    PUBLISHER,
                    "topic",
                    self.topology.dead_letter_topic,
                    reason="forward undeliverable messages to the dead-letter topic",
                )
            )
            grants += [
                Binding(
                    "pubsub_agent",
                    SUBSCRIBER,
                    "subscription",
                    f.subscription,
                    reason="acknowledge messages it dead-letters",
                )
                for f in self.functions
                if f.dead_letter
            ]
        return grants


def build_plan(
    pipelines: Sequence[str],
    *,
    project: str,
    region: str,
    prefix: str = DEFAULT_PREFIX,
    delivery: Delivery = "push",
    bucket: str | None = None,
    source_bucket: str | None = None,
    firestore_location: str | None = None,
    collection: str = DEFAULT_COLLECTION,
    database: str = "(default)",
    lease_seconds: float = 60.0,
    run_retention_days: int = 30,
    watchdog_schedule: str = "*/2 * * * *",
    max_instances: int = 100,
    build_service_account: str | None = None,
) -> DeploymentPlan:
    """The plan for the pipelines ``MODULE:ATTR`` references, in ``project``/``region``.

    Raises :class:`~resumable.errors.PipelineLoadError` for a reference that does not load,
    :class:`~resumable.errors.TopologyError` for pipelines whose names collide or whose
    steps need more delivery attempts than Pub/Sub allows, and ``ValueError`` for a setting
    no deployment can have.
    """
    if not pipelines:
        raise ValueError("name at least one pipeline (--pipeline MODULE:ATTR)")
    if delivery not in DELIVERIES:
        raise ValueError(f"delivery must be one of {', '.join(DELIVERIES)}, got {delivery!r}")
    validate_location(project, region, prefix)
    if build_service_account is not None and not re.fullmatch(
        r"[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.-]+\.gserviceaccount\.com", build_service_account
    ):
        raise ValueError(
            f"{build_service_account!r} is not a service account email "
            "(NAME@PROJECT.iam.gserviceaccount.com)"
        )
    loaded = [load_pipeline(ref) for ref in pipelines]
    names = [p.pipeline_name for p in loaded]
    if len(set(names)) != len(names):
        raise ValueError(f"two references name the same pipeline: {names}")
    bucket = bucket or bucket_name(project, prefix, "runs")
    settings = Settings(
        project=project,
        storage=f"gs://{bucket}",
        pipelines=tuple(pipelines),
        topic_prefix=prefix,
        collection=collection,
        database=database,
        lease_seconds=lease_seconds,
        heartbeat_seconds=max(lease_seconds / 4, 0.2),
        watchdog_grace_seconds=2 * lease_seconds,
        run_retention_days=run_retention_days,
    )
    topology = build_topology(loaded, prefix)
    policy = DeliveryPolicy()
    for spec in topology.functions:
        policy.delivery_attempts(spec)  # refuses a step Pub/Sub cannot give its attempts
    return DeploymentPlan(
        project=project,
        region=region,
        pipelines=tuple(pipelines),
        topology=topology,
        settings=settings,
        policy=policy,
        delivery=delivery,
        bucket=bucket,
        source_bucket=source_bucket or bucket_name(project, prefix, "sources"),
        firestore_location=firestore_location or region,
        runtime_account=account_id(prefix, "runtime"),
        trigger_account=account_id(prefix, "trigger"),
        watchdog_job=f"{prefix}-watchdog",
        watchdog_schedule=watchdog_schedule,
        python_runtime=f"python{sys.version_info.major}{sys.version_info.minor}",
        max_instances=max_instances,
        build_service_account=build_service_account,
    )


def validate_location(project: str, region: str, prefix: str) -> None:
    """Raise ``ValueError`` for a project id, region or prefix no deployment can have."""
    if not re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", project):
        raise ValueError(f"{project!r} is not a Google Cloud project id")
    if not re.fullmatch(r"[a-z]+-[a-z]+[0-9]+", region):
        raise ValueError(f"{region!r} is not a Google Cloud region (e.g. europe-west1)")
    validate_id(prefix, "prefix")


def cpu(spec: FunctionSpec) -> str | None:
    """The CPUs to ask for, or ``None`` for the platform's default for the memory size.

    Cloud Run functions serve concurrent requests only with at least one CPU.
    """
    default = _DEFAULT_CPU.get(spec.memory)
    if spec.concurrency > 1 and (default is None or default < 1):
        return "1"
    return None


def account_id(prefix: str, role: str) -> str:
    """A service account id (6-30 lowercase letters, digits, hyphens) for ``role``."""
    raw = f"{prefix}-{role}"
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    if not name[:1].isalpha():
        name = f"sa-{name}"
    if len(name) > 30 or name != raw:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:4]
        name = f"{name[: 30 - len(role) - 6].rstrip('-')}-{digest}-{role}"
    return name


def service_account_email(account: str, project: str) -> str:
    """The e-mail address of service account ``account`` of ``project``."""
    return f"{account}@{project}.iam.gserviceaccount.com"


def firestore_condition(project: str, database: str) -> str:
    """An IAM condition that limits a Firestore role to one database."""
    return f'resource.name == "projects/{project}/databases/{database}"'


def bucket_name(project: str, prefix: str, purpose: str) -> str:
    """A bucket name for ``purpose`` (3-63 lowercase letters, digits, hyphens), unique to
    the project and prefix."""
    raw = f"{project}-{prefix}-{purpose}"
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    if len(name) > 63 or name != raw:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:6]
        name = f"{name[: 63 - len(purpose) - 8].rstrip('-')}-{digest}-{purpose}"
    return name
