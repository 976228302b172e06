"""The IAM grants of a deployment as gcloud commands (one ``add-iam-policy-binding`` per
:class:`~resumable.deploy.plan.Binding`), apart from the resources they grant on.

A binding names its principal (the runtime account, the trigger account, or Pub/Sub's
service agent, whose address is looked up as the commands run) and the kind of resource
(project, bucket, topic, subscription, service account, Cloud Run service): each kind has
its own gcloud command group. Adding a binding that exists changes nothing, so the
commands are safe to re-run; they are retried, as a new account takes a while to be seen.
"""

from __future__ import annotations

from resumable.deploy.commands import Action, Arg, Lookup, gcloud, plain
from resumable.deploy.plan import Binding, DeploymentPlan

# The gcloud command group that grants on a kind of resource named as it is (a project
# takes a condition, a bucket a gs:// address, a function its Cloud Run service's region).
_GROUPS: dict[str, tuple[str, ...]] = {
    "topic": ("pubsub", "topics"),
    "subscription": ("pubsub", "subscriptions"),
    "service_account": ("iam", "service-accounts"),
}


def grant(plan: DeploymentPlan, binding: Binding) -> Action:
    """The command that grants ``binding``'s role to its principal on its resource."""
    member = _member(plan, binding)
    role = f"--role={binding.role}"
    where: tuple[Arg, ...]
    if binding.kind == "project":
        condition = (
            f"--condition=expression={binding.condition},title=only-{plan.database.strip('()')}"
            if binding.condition
            else "--condition=None"
        )
        where = ("projects", "add-iam-policy-binding", binding.resource, member, role, condition)
    elif binding.kind == "bucket":
        resource = f"gs://{binding.resource}"
        where = ("storage", "buckets", "add-iam-policy-binding", resource, member, role)
    elif binding.kind in _GROUPS:
        where = (*_GROUPS[binding.kind], "add-iam-policy-binding", binding.resource, member, role)
    else:
        region = f"--region={plan.region}"
        where = (
            "run",
            "services",
            "add-iam-policy-binding",
            binding.resource,
            region,
            member,
            role,
        )
    return Action(
        f"{binding.principal} → {binding.role} on {binding.kind} {binding.resource}: "
        f"{binding.reason}",
        gcloud(plan.project, *where),
        retry=True,
    )


def _member(plan: DeploymentPlan, binding: Binding) -> Arg:
    if binding.principal == "runtime":
        return f"--member=serviceAccount:{plan.runtime_email}"
    if binding.principal == "trigger":
        return f"--member=serviceAccount:{plan.trigger_email}"
    # Creating Pub/Sub's service agent if the project has none yet (a fresh project may
    # not) also prints its address.
    return Lookup(
        "pubsub_agent",
        plain(
            gcloud(
                plan.project,
                "beta",
                "services",
                "identity",
                "create",
                "--service=pubsub.googleapis.com",
                "--format=value(email)",
            )
        ),
        before="--member=serviceAccount:",
    )
