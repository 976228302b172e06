"""Every command of the generated gcloud scripts, run by the installed Google Cloud CLI
against a local fake of the Google APIs (tests/support/google_apis.py), with no network.

gcloud's own parser checks every flag and resource path, and the fake records what gcloud
sends: the tests assert those requests — every one in the target project, whatever
gcloud's default project is — and their bodies: the functions' settings, the push
subscriptions' endpoint, token and dead-lettering, the bucket's lifecycle, the scheduler's
target, each grant.

The deployments run the script that ``--dry-run`` prints (with bash) and ``resumable deploy
gcloud --yes`` itself, for push and for Eventarc delivery, with no default project and
with another default project: each (way of running, default project) pair once, each
delivery both ways and with both defaults. ``resumable deploy gcloud`` runs twice, as
re-running a deployment must work: the second run takes every update path. The bootstrap
script runs twice too. gcloud is forked from one pre-loaded process per deployment
(tests/support/gcloud_forkserver.py): its start-up would otherwise cost a second a command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from resumable.deploy import build_bundle, build_plan
from resumable.deploy.bootstrap import BUILDER_GRANTS, DEPLOYER_GRANTS, Bootstrap
from resumable.deploy.bootstrap import actions as bootstrap_actions
from resumable.deploy.bootstrap import script as bootstrap_script
from resumable.deploy.gcloud import actions, lifecycle, script
from resumable.deploy.plan import Binding, DeploymentPlan, cpu
from resumable.serverless._firestore import COMPOSITE_INDEXES
from tests.support.gcloud_forkserver import GcloudForkServer, installed_gcloud
from tests.support.google_apis import PROJECT_NUMBER, GoogleApis, Request

SDK_ROOT = installed_gcloud()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SDK_ROOT is None, reason="the Google Cloud CLI (gcloud) is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
PROJECT, OTHER_PROJECT, REGION = "acme-video", "someone-elses", "europe-west1"
PIPELINE = "tests.support.deploy_pipeline:ingest"
BUILDER = f"resumable-builder@{PROJECT}.iam.gserviceaccount.com"
PUBSUB_AGENT = f"service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
# (delivery, how the commands run, gcloud's default project)
SCENARIOS = [
    ("push", "script", None),
    ("push", "cli", OTHER_PROJECT),
    ("eventarc", "script", OTHER_PROJECT),
    ("eventarc", "cli", None),
]


@dataclass
class Deployment:
    """What deploying one scenario sent, and how each run ended."""

    plan: DeploymentPlan
    apis: GoogleApis
    runs: list[subprocess.CompletedProcess[str]]
    first_run: list[Request]


def plan_for(delivery: str) -> DeploymentPlan:
    return build_plan(
        [PIPELINE],
        project=PROJECT,
        region=REGION,
        delivery="push" if delivery == "push" else "eventarc",
        build_service_account=BUILDER,
    )


def environment(folder: Path, apis: GoogleApis) -> dict[str, str]:
    """A clean environment: a fresh gcloud configuration, a token, the fake's endpoints,
    and a proxy that refuses whatever would leave this machine."""
    token = folder / "token"
    token.write_text("fake-token")
    return {
        "PATH": f"{folder / 'bin'}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(folder),
        "LANG": "C.UTF-8",
        "CLOUDSDK_CONFIG": str(folder / "gcloud-config"),
        "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token),
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        # No progress spinners: each waits for its next tick (0.2 s) before it ends.
        "CLOUDSDK_CORE_INTERACTIVE_UX_STYLE": "OFF",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1",
        **apis.env,
        # `make test` measures `resumable deploy gcloud` too (coverage's subprocess patch)
        **{k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")},
    }


def deploy(command: list[str], default_project: str | None, *, runs: int) -> Deployment:
    """Run ``command`` ``runs`` times against a fresh fake, with ``default_project`` as
    gcloud's default project (``None``: none set)."""
    assert SDK_ROOT is not None
    with tempfile.TemporaryDirectory() as tmp, GoogleApis() as apis:
        folder = Path(tmp)
        # A failed grant is retried for a minute by the script; here it fails at once.
        (folder / "bin").mkdir()
        (folder / "bin" / "sleep").write_text("#!/bin/sh\n")
        (folder / "bin" / "sleep").chmod(0o755)
        with GcloudForkServer(SDK_ROOT, folder, environment(folder, apis)) as gcloud:
            if default_project:
                subprocess.run(
                    ["gcloud", "config", "set", "project", default_project],
                    env=gcloud.env,
                    check=True,
                    capture_output=True,
                )
            done: list[subprocess.CompletedProcess[str]] = []
            first_run: list[Request] = []
            for _ in range(runs):
                done.append(
                    subprocess.run(
                        command, env=gcloud.env, cwd=ROOT, capture_output=True, text=True,
                        timeout=300,
                    )
                )  # fmt: skip
                first_run = first_run or list(apis.requests)
    return Deployment(plan_for("push"), apis, done, first_run)


def run_scenario(delivery: str, how: str, default_project: str | None, bundle: Path) -> Deployment:
    """The script ``--dry-run`` prints, run by bash once; or ``resumable deploy gcloud``
    run twice, the second time over what the first created (the update paths)."""
    plan = plan_for(delivery)
    if how == "script":
        deployment = deploy(
            ["bash", "-c", script(plan, actions(plan, source=bundle))], default_project, runs=1
        )
    else:
        command = [
            str(Path(sys.executable).parent / "resumable"),
            "deploy",
            "gcloud",
            f"--pipeline={PIPELINE}",
            f"--project={PROJECT}",
            f"--region={REGION}",
            f"--delivery={delivery}",
            f"--build-service-account={BUILDER}",
            f"--source={bundle}",
            "--yes",
        ]
        deployment = deploy(command, default_project, runs=2)
    deployment.plan = plan
    return deployment


def run_bootstrap() -> Deployment:
    """The bootstrap script, run twice (the second run updates its custom role)."""
    setup = Bootstrap(PROJECT, REGION)
    text = bootstrap_script(setup, bootstrap_actions(setup))
    return deploy(["bash", "-c", text], None, runs=2)


def scenario_id(delivery: str, how: str, default_project: str | None) -> str:
    default = "other-default-project" if default_project else "no-default-project"
    return f"{delivery}-{how}-{default}"


IDS = [scenario_id(*s) for s in SCENARIOS]


@pytest.fixture(scope="module")
def deployments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Deployment]:
    """Every scenario and the bootstrap, two at a time (gcloud is CPU-bound)."""
    bundle = tmp_path_factory.mktemp("bundle") / "functions"
    build_bundle(bundle, [PIPELINE])
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {scenario_id(*s): pool.submit(run_scenario, *s, bundle) for s in SCENARIOS}
        futures["bootstrap"] = pool.submit(run_bootstrap)
        return {key: future.result() for key, future in futures.items()}


@pytest.fixture(params=IDS)
def deployment(request: pytest.FixtureRequest, deployments: dict[str, Deployment]) -> Deployment:
    return deployments[request.param]


def only(requests: list[Request]) -> Request:
    assert len(requests) == 1, requests
    return requests[0]


# -- it runs --------------------------------------------------------------------------------


def test_every_command_runs_end_to_end(deployment: Deployment) -> None:
    for number, run in enumerate(deployment.runs, 1):
        assert run.returncode == 0, f"run {number} failed:\n{run.stderr[-3000:]}"


def test_every_request_names_the_target_project_and_never_the_default_one(
    deployment: Deployment,
) -> None:
    for request in deployment.apis.requests:
        assert OTHER_PROJECT not in request.text, request
        assert PROJECT in request.text, request


def test_a_second_deployment_updates_what_the_first_created(
    deployments: dict[str, Deployment],
) -> None:
    for key in ("push-cli-other-default-project", "eventarc-cli-no-default-project"):
        deployment = deployments[key]
        plan = deployment.plan
        second = deployment.apis.requests[len(deployment.first_run) :]
        updated = [r for r in second if r.api == "cloudfunctions" and r.method == "PATCH"]
        assert len(updated) == len(plan.functions)
        assert not [r for r in second if r.method == "POST" and r.path.endswith("/functions")]
        patched = {
            r.path.rsplit("/", 1)[1] for r in second if r.api == "pubsub" and r.method == "PATCH"
        }
        assert patched == (
            {f.subscription for f in plan.functions} if plan.delivery == "push" else set()
        )
        assert only([r for r in second if r.api == "cloudscheduler" and r.method == "PATCH"])


# -- what it sends --------------------------------------------------------------------------


def test_functions_get_their_steps_settings_internal_ingress_and_the_builder(
    deployment: Deployment,
) -> None:
    plan = deployment.plan
    for spec in plan.functions:
        body = only(
            [
                r
                for r in deployment.first_run
                if r.api == "cloudfunctions" and r.query.get("functionId") == spec.name
            ]
        ).body
        service, build = body["serviceConfig"], body["buildConfig"]
        assert service["availableMemory"] == spec.memory
        assert service["timeoutSeconds"] == spec.timeout_seconds
        assert service["maxInstanceRequestConcurrency"] == spec.concurrency
        assert service.get("availableCpu") == cpu(spec)
        assert service["ingressSettings"] == "ALLOW_INTERNAL_ONLY"
        assert service["serviceAccountEmail"] == plan.runtime_email
        assert service["environmentVariables"] == plan.environment(spec)
        assert build["entryPoint"] == spec.target
        assert build["runtime"] == plan.python_runtime
        assert build["serviceAccount"] == f"projects/{PROJECT}/serviceAccounts/{BUILDER}"
        if plan.delivery == "push":
            assert "eventTrigger" not in body
        else:
            assert body["eventTrigger"] == {
                "eventType": "google.cloud.pubsub.topic.v1.messagePublished",
                "pubsubTopic": f"projects/{PROJECT}/topics/{spec.topic}",
                "retryPolicy": "RETRY_POLICY_RETRY",
                "serviceAccountEmail": plan.trigger_email,
                "triggerRegion": REGION,
            }
    fetch = plan.topology.step_functions("ingest")["fetch"]
    assert (fetch.memory, fetch.timeout_seconds, fetch.concurrency) == ("2Gi", 540, 4)
    assert deployment.apis.uploads, "no function source was uploaded"


def test_push_subscriptions_authenticate_to_their_function_and_dead_letter_after_its_attempts(
    deployments: dict[str, Deployment],
) -> None:
    for key in ("push-script-no-default-project", "push-cli-other-default-project"):
        deployment = deployments[key]
        plan = deployment.plan
        for spec in plan.functions:
            body = only(
                deployment.apis.sent("pubsub", "PUT", f"/subscriptions/{spec.subscription}$")
            ).body
            uri = f"https://{spec.name}-{PROJECT_NUMBER}.europe-west1.run.app"
            assert body["topic"] == f"projects/{PROJECT}/topics/{spec.topic}"
            assert body["pushConfig"] == {
                "pushEndpoint": f"{uri}/projects/{PROJECT}/topics/{spec.topic}",
                "oidcToken": {"serviceAccountEmail": plan.trigger_email, "audience": uri},
            }
            assert body["ackDeadlineSeconds"] == 600
            assert body["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
            assert body["expirationPolicy"] == {}  # never expires
            if spec.dead_letter:
                assert body["deadLetterPolicy"] == {
                    "deadLetterTopic": f"projects/{PROJECT}/topics/resumable-dead-letter",
                    "maxDeliveryAttempts": plan.delivery_attempts(spec),
                }
            else:
                assert "deadLetterPolicy" not in body
            for update in deployment.apis.sent("pubsub", "PATCH", f"/{spec.subscription}$"):
                changed = update.body["subscription"]
                assert changed.get("deadLetterPolicy") == body.get("deadLetterPolicy")
                assert changed["pushConfig"] == body["pushConfig"]
                assert "deadLetterPolicy" in update.body["updateMask"].split(",")
        fetch = plan.topology.step_functions("ingest")["fetch"]
        assert plan.delivery_attempts(fetch) == 20 + 1 + 3 + 10  # retries, crashes, "retry later"


def test_eventarc_delivery_creates_no_subscription(deployments: dict[str, Deployment]) -> None:
    for key in ("eventarc-script-other-default-project", "eventarc-cli-no-default-project"):
        assert not deployments[key].apis.sent("pubsub", "PUT", "/subscriptions/")


def test_the_bucket_is_private_versioned_and_never_deletes_live_run_objects(
    deployment: Deployment,
) -> None:
    create = only(deployment.apis.sent("storage", "POST", "/b$")).body
    assert create["name"] == deployment.plan.bucket and create["location"] == REGION
    for update in deployment.apis.sent("storage", "PATCH", f"/b/{deployment.plan.bucket}$"):
        assert update.body["lifecycle"] == lifecycle(deployment.plan)
        assert update.body["versioning"] == {"enabled": True}
        assert update.body["iamConfiguration"] == {
            "publicAccessPrevention": "enforced",
            "uniformBucketLevelAccess": {"enabled": True},
        }


def test_firestore_database_ttl_and_index(deployment: Deployment) -> None:
    database = only(deployment.apis.sent("firestore", "POST", "/databases$"))
    assert database.query["databaseId"] == "(default)"
    assert database.body["type"] == "FIRESTORE_NATIVE"
    assert database.body["locationId"] == REGION
    assert database.body["pointInTimeRecoveryEnablement"] == "POINT_IN_TIME_RECOVERY_ENABLED"
    assert database.body["deleteProtectionState"] == "DELETE_PROTECTION_ENABLED"
    field = f"/collectionGroups/resumable_runs/fields/{deployment.plan.ttl_field}$"
    masks = {r.query["updateMask"] for r in deployment.apis.sent("firestore", "PATCH", field)}
    assert masks == {"ttlConfig", "indexConfig"}
    wanted = [
        [{"fieldPath": name, "order": order} for name, order in index]
        for index in COMPOSITE_INDEXES
    ]
    created = [i.body["fields"] for i in deployment.apis.sent("firestore", "POST", "/indexes$")]
    assert created and all(fields in wanted for fields in created)
    assert all(fields in created for fields in wanted)


def test_the_scheduler_publishes_to_the_watchdog_topic_of_the_target_project(
    deployment: Deployment,
) -> None:
    job = only(deployment.apis.sent("cloudscheduler", "POST", "/jobs$")).body
    assert job["name"] == f"projects/{PROJECT}/locations/{REGION}/jobs/resumable-watchdog"
    assert job["schedule"] == "*/2 * * * *" and job["timeZone"] == "Etc/UTC"
    assert job["pubsubTarget"]["topicName"] == f"projects/{PROJECT}/topics/resumable-watchdog"
    for update in deployment.apis.sent("cloudscheduler", "PATCH", "/jobs/resumable-watchdog$"):
        assert update.body["pubsubTarget"]["topicName"] == job["pubsubTarget"]["topicName"]


def test_the_grants_are_exactly_the_plans(deployment: Deployment) -> None:
    plan = deployment.plan
    granted = {
        (resource, binding["role"], member, json.dumps(binding.get("condition")))
        for resource, policy in deployment.apis.policies.items()
        for binding in policy.get("bindings", [])
        for member in binding["members"]
    }
    assert granted == {resolved(plan, b) for b in plan.bindings()}


def resolved(plan: DeploymentPlan, binding: Binding) -> tuple[str, str, str, str]:
    """``binding`` as the fake keeps it: resource name, role, member, condition."""
    resource = {
        "project": f"projects/{PROJECT}",
        "bucket": f"b/{binding.resource}",
        "topic": f"projects/{PROJECT}/topics/{binding.resource}",
        "subscription": f"projects/{PROJECT}/subscriptions/{binding.resource}",
        "service_account": f"projects/{PROJECT}/serviceAccounts/{binding.resource}",
        "function": f"projects/{PROJECT}/locations/{REGION}/services/{binding.resource}",
    }[binding.kind]
    email = {
        "runtime": plan.runtime_email,
        "trigger": plan.trigger_email,
        "pubsub_agent": PUBSUB_AGENT,
    }[binding.principal]
    condition = (
        {"expression": binding.condition, "title": "only-default"} if binding.condition else None
    )
    return resource, binding.role, f"serviceAccount:{email}", json.dumps(condition)


# -- the bootstrap ----------------------------------------------------------------------------


def test_the_bootstrap_runs_twice_and_grants_each_account_only_its_roles(
    deployments: dict[str, Deployment],
) -> None:
    apis, runs = deployments["bootstrap"].apis, deployments["bootstrap"].runs
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    for request in apis.requests:
        assert PROJECT in request.text, request
    setup = Bootstrap(PROJECT, REGION)
    bindings = apis.policies[f"projects/{PROJECT}"]["bindings"]
    roles: dict[str, set[str]] = {}
    for binding in bindings:
        for member in binding["members"]:
            roles.setdefault(member, set()).add(binding["role"])
    custom = f"projects/{PROJECT}/roles/{setup.custom_role}"
    assert roles == {
        f"serviceAccount:{setup.builder_email}": {g.role for g in BUILDER_GRANTS},
        f"serviceAccount:{setup.deployer_email}": {g.role for g in DEPLOYER_GRANTS} | {custom},
    }
    iam_admin = only([b for b in bindings if b["role"] == "roles/resourcemanager.projectIamAdmin"])
    assert "hasOnly(['roles/datastore.user'])" in iam_admin["condition"]["expression"]
    assert not {r for r in roles.values() for r in r} & {"roles/owner", "roles/editor"}
    role = only(apis.sent("iam", "POST", "/roles$")).body
    assert role["role"]["includedPermissions"] == [
        "serviceusage.services.generateServiceIdentity",
        "resourcemanager.projects.get",
    ]
    state = only(apis.sent("storage", "POST", "/b$")).body
    assert state["name"] == setup.state_bucket


def test_the_fork_server_sends_what_the_gcloud_executable_sends(tmp_path: Path) -> None:
    """The shortcut these tests take changes nothing gcloud sends: the same commands, run
    by the installed executable, send the same requests."""
    plan = plan_for("push")
    first_of_kind = {
        tuple(action.command[1:4]): [str(a) for a in action.command]
        for action in reversed(actions(plan, source=tmp_path))
    }
    commands = [
        first_of_kind[kind]
        for kind in [
            ("iam", "service-accounts", "create"),
            ("pubsub", "topics", "create"),
            ("scheduler", "jobs", "create"),
        ]
    ]
    sent = []
    for forked in (True, False):
        with tempfile.TemporaryDirectory() as tmp, GoogleApis() as apis:
            folder = Path(tmp)
            env = environment(folder, apis)
            if forked:
                assert SDK_ROOT is not None
                with GcloudForkServer(SDK_ROOT, folder, env) as gcloud:
                    for command in commands:
                        subprocess.run(command, env=gcloud.env, check=True, capture_output=True)
            else:
                for command in commands:
                    subprocess.run(command, env=env, check=True, capture_output=True)
            sent.append([(r.method, r.api, r.path, r.query, r.body) for r in apis.requests])
    assert sent[0] == sent[1] and sent[0]
