"""The one-time setup of a project before its first deployment, run once by an Owner.

It enables the APIs, and creates two service accounts and the Terraform state bucket:

- the **deployer**, which Cloud Build runs ``cloudbuild.yaml`` as (its ``serviceAccount``)
  and which deploys with Terraform or gcloud. It gets the narrowest predefined roles that
  create what ``infra/`` creates, and may grant one role only, ``roles/datastore.user``
  (the runtime account's): an IAM condition limits its Project IAM Admin role to that.
- the **builder**, which Cloud Build builds the functions' containers as
  (``--build-service-account``; Terraform's ``build_service_account``): Cloud Run Builder.

No workload runs as either account, and no account of the deployment gets a role from
here. ``infra/README.md`` says why each role is needed. :func:`actions` renders them with
the same machinery as the deployment (:mod:`resumable.deploy.commands`): a re-runnable
script, or commands run in order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from resumable._defaults import DEFAULT_PREFIX
from resumable.deploy.commands import Action, Arg, TempFile, gcloud, plain
from resumable.deploy.commands import script as render_script
from resumable.deploy.plan import account_id, bucket_name, service_account_email, validate_location

APIS = (
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "pubsub.googleapis.com",
    "firestore.googleapis.com",
    "storage.googleapis.com",
    "cloudscheduler.googleapis.com",
    "eventarc.googleapis.com",
    "iam.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "serviceusage.googleapis.com",
    "logging.googleapis.com",
)


@dataclass(frozen=True)
class Grant:
    """A project-level role, why the account needs it, and the condition limiting it."""

    role: str
    reason: str
    condition: dict[str, str] | None = None


# What the deployer creates is what infra/ creates; each role is the narrowest predefined
# one for it. The README lists them with these reasons.
DEPLOYER_GRANTS = (
    Grant("roles/cloudfunctions.developer", "create and update the functions"),
    Grant("roles/run.admin", "let the trigger account invoke each function (run.invoker)"),
    Grant("roles/pubsub.admin", "topics, push subscriptions and their grants"),
    Grant(
        "roles/storage.admin",
        "the checkpoint and source buckets with their grants, the source archive, "
        "the Terraform state",
    ),
    Grant("roles/datastore.owner", "the Firestore database, its TTL policy and index"),
    Grant("roles/cloudscheduler.admin", "the watchdog's scheduler job"),
    Grant(
        "roles/iam.serviceAccountAdmin",
        "create the runtime and trigger accounts; let Pub/Sub's agent sign push tokens "
        "as the trigger account",
    ),
    Grant(
        "roles/iam.serviceAccountUser",
        "deploy functions that run as the runtime account and build as the builder, "
        "subscriptions and triggers that authenticate as the trigger account",
    ),
    Grant(
        "roles/resourcemanager.projectIamAdmin",
        "grant the runtime account roles/datastore.user (limited to its database); "
        "the condition allows granting no other role",
        condition={
            "title": "grant-datastore-user-only",
            "expression": "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', [])"
            ".hasOnly(['roles/datastore.user'])",
        },
    ),
    Grant("roles/serviceusage.serviceUsageConsumer", "check that the APIs are enabled"),
    Grant("roles/logging.logWriter", "write the Cloud Build build's own logs"),
)
BUILDER_GRANTS = (
    Grant("roles/run.builder", "build the functions' containers from the uploaded source"),
)
# Two permissions no narrow predefined role has, in a custom role of the project.
DEPLOYER_PERMISSIONS = (
    "serviceusage.services.generateServiceIdentity",  # create Pub/Sub's service agent
    "resourcemanager.projects.get",  # read the project (gcloud and Terraform do)
)


@dataclass(frozen=True)
class Bootstrap:
    """The names the setup of ``project`` gives its accounts, role and state bucket."""

    project: str
    region: str
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def of(cls, project: str, region: str, prefix: str = DEFAULT_PREFIX) -> Bootstrap:
        """Raises ``ValueError`` for a project, region or prefix no project can have."""
        validate_location(project, region, prefix)
        return cls(project, region, prefix)

    @property
    def deployer_email(self) -> str:
        """The account Cloud Build deploys as."""
        return service_account_email(account_id(self.prefix, "deployer"), self.project)

    @property
    def builder_email(self) -> str:
        """The account that builds the functions' images."""
        return service_account_email(account_id(self.prefix, "builder"), self.project)

    @property
    def custom_role(self) -> str:
        """The custom role's id (letters, digits, underscores and dots)."""
        return re.sub(r"[^A-Za-z0-9_.]", "_", f"{self.prefix}_deployer")

    @property
    def state_bucket(self) -> str:
        """The bucket of the Terraform state."""
        return bucket_name(self.project, self.prefix, "tfstate")


def actions(setup: Bootstrap) -> list[Action]:
    """The commands that set ``setup.project`` up, in order."""
    project = setup.project
    steps = [Action("enable the APIs", gcloud(project, "services", "enable", *APIS))]
    for account, what in (
        (setup.builder_email, "builds the functions"),
        (setup.deployer_email, "deploys (Cloud Build runs as it)"),
    ):
        steps.append(
            Action(
                f"service account {account}: {what}",
                gcloud(
                    project,
                    "iam",
                    "service-accounts",
                    "create",
                    account.split("@")[0],
                    f"--display-name={setup.prefix} {what}",
                ),
                exists=plain(gcloud(project, "iam", "service-accounts", "describe", account)),
            )
        )
    permissions = f"--permissions={','.join(DEPLOYER_PERMISSIONS)}"
    steps.append(
        Action(
            f"custom role {setup.custom_role}: {', '.join(DEPLOYER_PERMISSIONS)}",
            gcloud(
                project,
                "iam",
                "roles",
                "create",
                setup.custom_role,
                f"--title={setup.prefix} deployer extras",
                permissions,
                "--stage=GA",
            ),
            exists=plain(gcloud(project, "iam", "roles", "describe", setup.custom_role)),
            update=gcloud(project, "iam", "roles", "update", setup.custom_role, permissions),
        )
    )
    custom = Grant(
        f"projects/{project}/roles/{setup.custom_role}",
        "create Pub/Sub's service agent; read the project",
    )
    for account, grants in (
        (setup.builder_email, BUILDER_GRANTS),
        (setup.deployer_email, (*DEPLOYER_GRANTS, custom)),
    ):
        for grant in grants:
            condition: Arg = (
                TempFile(
                    "--condition-from-file",
                    f"condition-{grant.condition['title']}.json",
                    json.dumps(grant.condition),
                )
                if grant.condition
                else "--condition=None"
            )
            steps.append(
                Action(
                    f"{account} → {grant.role}: {grant.reason}",
                    gcloud(
                        project,
                        "projects",
                        "add-iam-policy-binding",
                        project,
                        f"--member=serviceAccount:{account}",
                        f"--role={grant.role}",
                        condition,
                    ),
                    retry=True,
                )
            )
    bucket = f"gs://{setup.state_bucket}"
    steps.append(
        Action(
            f"bucket {bucket}: Terraform state",
            gcloud(
                project,
                "storage",
                "buckets",
                "create",
                bucket,
                f"--location={setup.region}",
                "--uniform-bucket-level-access",
                "--public-access-prevention",
            ),
            exists=plain(gcloud(project, "storage", "buckets", "describe", bucket)),
        )
    )
    steps.append(
        Action(
            f"bucket {bucket}: versioned, earlier states recoverable",
            gcloud(project, "storage", "buckets", "update", bucket, "--versioning"),
        )
    )
    return steps


def script(setup: Bootstrap, setup_actions: Sequence[Action]) -> str:
    """The setup as a bash script (what ``--dry-run`` prints)."""
    title = f"Sets project {setup.project} up for resumable deployments (run as an Owner)."
    return render_script(title, setup_actions)
