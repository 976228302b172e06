"""Deployment of examples/dataprep: the Terraform variables and the gcloud commands name
exactly the topics, subscriptions, functions and grants the code derives from the
pipeline, with the delivery, dead-letter and timeout settings the code expects."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from resumable.cli._app import app
from resumable.definition._loader import load_pipeline
from resumable.deploy import build_bundle, build_plan, check_bundle, tfvars
from resumable.deploy.commands import Action, Lookup, TempFile, run
from resumable.deploy.commands import script as commands_script
from resumable.deploy.gcloud import actions, script
from resumable.deploy.gcloud import lifecycle as gcloud_lifecycle
from resumable.deploy.plan import DeploymentPlan
from resumable.errors import BundleError
from resumable.serverless._settings import Settings
from resumable.serverless._topology import DeliveryPolicy, Topology, build_topology
from resumable.serverless._worker import max_attempts

DATAPREP = "examples.dataprep.pipeline:build"
PROJECT, REGION = "acme-video", "europe-west1"


@pytest.fixture(scope="module")
def plan() -> DeploymentPlan:
    return build_plan([DATAPREP], project=PROJECT, region=REGION)


@pytest.fixture(scope="module")
def expected() -> Topology:
    """What the runtime and the local stack derive from the pipeline."""
    return build_topology([load_pipeline(DATAPREP)], "resumable")


@pytest.fixture(scope="module")
def variables(plan: DeploymentPlan) -> dict[str, Any]:
    return tfvars(plan, source_dir="../build/functions")


def all_functions(variables: dict[str, Any]) -> dict[str, dict[str, Any]]:
    functions = dict(variables["control_functions"])
    for pipeline, body in variables["pipelines"].items():
        for step, function in body["steps"].items():
            functions[f"{pipeline}.{step}"] = function
    return functions


def commands(deploy_actions: list[Action], *prefix: str) -> Iterator[list[str]]:
    """The plain-string arguments of every command starting with ``gcloud *prefix``."""
    for action in deploy_actions:
        for command in (action.command, action.update):
            if command and tuple(command[1 : 1 + len(prefix)]) == prefix:
                yield [a for a in command if isinstance(a, str)]


def flag(args: list[str], name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return values[-1] if values else None


# -- Terraform variables ---------------------------------------------------------------------


def test_tfvars_name_exactly_the_topology_of_dataprep(
    variables: dict[str, Any], expected: Topology
) -> None:
    functions = all_functions(variables)
    assert {f["name"] for f in functions.values()} == {f.name for f in expected.functions}
    assert {f["subscription"] for f in functions.values()} == {
        f.subscription for f in expected.functions
    }
    step_topics = {f["topic"] for f in functions.values() if f["entry_point"] == "run_step"}
    assert step_topics | set(variables["topics"].values()) == set(expected.topics)
    assert variables["topics"] == {
        "start": expected.start_topic,
        "dead_letter": expected.dead_letter_topic,
        "watchdog": expected.watchdog_topic,
    }
    by_name = {f.name: f for f in expected.functions}
    for function in functions.values():
        spec = by_name[function["name"]]
        assert (function["entry_point"], function["topic"]) == (spec.target, spec.topic)
        assert function["push_path"] == f"/projects/{PROJECT}/topics/{spec.topic}"


def test_tfvars_steps_get_the_timeout_memory_and_retry_settings_of_their_definition(
    variables: dict[str, Any],
) -> None:
    definitions = load_pipeline(DATAPREP).spec.steps
    steps = variables["pipelines"]["dataprep"]["steps"]
    assert list(steps) == list(load_pipeline(DATAPREP).spec.order)
    for name, function in steps.items():
        step = definitions[name]
        assert function["timeout_seconds"] == min(int(step.timeout or 540), 540)
        assert function["memory"] == (step.memory or "512Mi")
        assert function["concurrency"] == (step.concurrency or 1)
        assert function["environment"] == {"RESUMABLE_STEP": name}
        assert function["dead_letter"] is True
        assert function["max_delivery_attempts"] == max_attempts(step) + 10
    assert steps["extract_frames"]["timeout_seconds"] == 540
    assert steps["extract_frames"]["memory"] == "2Gi"
    assert steps["split"]["timeout_seconds"] == 60
    policy = DeliveryPolicy()
    assert variables["delivery_policy"] == {
        "ack_deadline_seconds": policy.ack_deadline_seconds,
        "min_backoff_seconds": policy.min_backoff_seconds,
        "max_backoff_seconds": policy.max_backoff_seconds,
    }
    # The dead-letter and watchdog functions never dead-letter their own messages.
    control = variables["control_functions"]
    assert (control["dead_letter"]["dead_letter"], control["watchdog"]["dead_letter"]) == (
        False,
        False,
    )
    assert control["dead_letter"]["max_delivery_attempts"] is None
    assert control["start"]["dead_letter"] is True
    assert control["start"]["max_delivery_attempts"] == policy.max_delivery_attempts


def test_tfvars_environment_configures_the_runtime_as_planned(
    variables: dict[str, Any], plan: DeploymentPlan
) -> None:
    env = variables["environment"]
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setenv("RESUMABLE_STEP", "detect")
        settings = Settings.from_env()
    assert settings.project == PROJECT
    assert settings.storage == f"gs://{variables['bucket']}"
    assert settings.pipelines == (DATAPREP,)
    assert (settings.topic_prefix, settings.collection, settings.database) == (
        "resumable",
        "resumable_runs",
        "(default)",
    )
    assert settings.step == "detect"
    assert settings.run_retention_days == 30
    assert settings == Settings(**{**plan.settings.__dict__, "step": "detect"})


def test_tfvars_firestore_index_and_ttl_are_the_run_stores(variables: dict[str, Any]) -> None:
    from resumable.serverless._firestore import COMPOSITE_INDEXES, EXPIRE_AT

    assert variables["ttl_field"] == EXPIRE_AT
    assert variables["firestore_indexes"] == [
        [{"field_path": f, "order": o} for f, o in index] for index in COMPOSITE_INDEXES
    ]
    assert [f["field_path"] for f in variables["firestore_indexes"][0]] == ["status", "created_at"]


def test_concurrent_step_gets_a_whole_cpu() -> None:
    from resumable.deploy.plan import cpu
    from resumable.serverless._topology import FunctionSpec

    spec = FunctionSpec(name="f", target="run_step", topic="t", subscription="s", concurrency=4)
    assert cpu(spec) == "1"
    assert cpu(FunctionSpec(name="f", target="run_step", topic="t", subscription="s")) is None


# -- gcloud commands -------------------------------------------------------------------------


def test_gcloud_creates_exactly_the_topology(plan: DeploymentPlan, expected: Topology) -> None:
    steps = actions(plan, source="build/functions")
    topics = [args[4] for args in commands(steps, "pubsub", "topics", "create")]
    assert sorted(topics) == sorted(expected.topics)
    deployed = {args[3]: args for args in commands(steps, "functions", "deploy")}
    assert set(deployed) == {f.name for f in expected.functions}
    subscriptions = {args[4]: args for args in commands(steps, "pubsub", "subscriptions", "create")}
    assert set(subscriptions) == {f.subscription for f in expected.functions}
    for spec in expected.functions:
        function = deployed[spec.name]
        assert flag(function, "entry-point") == spec.target
        assert flag(function, "timeout") == f"{spec.timeout_seconds}s"
        assert flag(function, "memory") == spec.memory
        assert flag(function, "concurrency") == str(spec.concurrency)
        assert flag(function, "ingress-settings") == "internal-only"
        assert "--no-allow-unauthenticated" in function and "--trigger-http" in function
        env = flag(function, "set-env-vars") or ""
        delimiter = env[1]
        pairs = dict(p.split("=", 1) for p in env[3:].split(delimiter))
        assert pairs == plan.environment(spec)
        subscription = subscriptions[spec.subscription]
        assert flag(subscription, "topic") == spec.topic
        assert flag(subscription, "push-auth-service-account") == plan.trigger_email


def test_gcloud_subscriptions_have_the_codes_delivery_policy(
    plan: DeploymentPlan, expected: Topology
) -> None:
    policy = DeliveryPolicy()
    steps_of = {s.name: s for s in load_pipeline(DATAPREP).spec.steps.values()}
    steps = actions(plan, source="build/functions")
    for verb in ("create", "update"):
        found = {args[4]: args for args in commands(steps, "pubsub", "subscriptions", verb)}
        assert set(found) == {f.subscription for f in expected.functions}
        for spec in expected.functions:
            args = found[spec.subscription]
            assert flag(args, "ack-deadline") == str(policy.ack_deadline_seconds)
            assert flag(args, "min-retry-delay") == f"{int(policy.min_backoff_seconds)}s"
            assert flag(args, "max-retry-delay") == f"{int(policy.max_backoff_seconds)}s"
            assert flag(args, "expiration-period") == "never"
            if spec.dead_letter:
                assert flag(args, "dead-letter-topic") == expected.dead_letter_topic
                attempts = (
                    max_attempts(steps_of[spec.step]) + policy.retry_later_allowance
                    if spec.step
                    else policy.max_delivery_attempts
                )
                assert flag(args, "max-delivery-attempts") == str(attempts)
            else:
                assert flag(args, "dead-letter-topic") is None


def test_gcloud_push_endpoint_and_audience_are_the_functions_url(plan: DeploymentPlan) -> None:
    steps = actions(plan, source="build/functions")
    action = next(a for a in steps if a.summary.startswith("push subscription resumable-start-"))
    lookups = [a for a in action.command if isinstance(a, Lookup)]
    assert {(lk.before, lk.after) for lk in lookups} == {
        ("--push-endpoint=", f"/projects/{PROJECT}/topics/resumable-start"),
        ("--push-auth-token-audience=", ""),
    }
    assert all("serviceConfig.uri" in " ".join(lk.command) for lk in lookups)


def test_gcloud_grants_exactly_the_plans_bindings(plan: DeploymentPlan) -> None:
    kinds = {
        "projects": "project",
        "storage": "bucket",
        "topics": "topic",
        "subscriptions": "subscription",
        "service-accounts": "service_account",
        "run": "function",
    }
    granted = set()
    for action in actions(plan, source="build/functions"):
        if "add-iam-policy-binding" not in action.command:
            continue
        args = [a for a in action.command if isinstance(a, str)]
        verb = args.index("add-iam-policy-binding")
        kind = kinds[args[verb - 1] if args[verb - 1] in kinds else args[1]]
        member = " ".join(
            f"{a.before}<{' '.join(a.command)}>{a.after}" if isinstance(a, Lookup) else a
            for a in action.command
        )
        principal = (
            "runtime"
            if plan.runtime_email in member
            else "trigger"
            if f"--member=serviceAccount:{plan.trigger_email}" in member
            else "pubsub_agent"
            if "<gcloud beta services identity create --service=pubsub.googleapis.com" in member
            else "?"
        )
        condition = flag(args, "condition")
        granted.add(
            (principal, flag(args, "role"), kind, args[verb + 1].removeprefix("gs://"), condition)
        )
    wanted = {
        (
            b.principal,
            b.role,
            b.kind,
            b.resource,
            f"expression={b.condition},title=only-default"
            if b.condition
            else "None"
            if b.kind == "project"
            else None,
        )
        for b in plan.bindings()
    }
    assert granted == wanted


def test_grants_are_least_privilege(plan: DeploymentPlan, expected: Topology) -> None:
    grants = {(b.principal, b.role, b.kind, b.resource) for b in plan.bindings()}
    runtime = {g for g in grants if g[0] == "runtime"}
    step_topics = {f.topic for f in expected.functions if f.target == "run_step"}
    assert runtime == {
        ("runtime", "roles/storage.objectUser", "bucket", plan.bucket),
        ("runtime", "roles/datastore.user", "project", PROJECT),
        *{("runtime", "roles/pubsub.publisher", "topic", t) for t in step_topics},
    }
    firestore = next(b for b in plan.bindings() if b.role == "roles/datastore.user")
    assert firestore.condition == f'resource.name == "projects/{PROJECT}/databases/(default)"'
    trigger = {g for g in grants if g[0] == "trigger"}
    assert trigger == {
        ("trigger", "roles/run.invoker", "function", f.name) for f in expected.functions
    }
    agent = {(g[1], g[2]) for g in grants if g[0] == "pubsub_agent"}
    assert agent == {
        ("roles/iam.serviceAccountTokenCreator", "service_account"),
        ("roles/pubsub.publisher", "topic"),
        ("roles/pubsub.subscriber", "subscription"),
    }


def test_no_function_is_public(plan: DeploymentPlan) -> None:
    text = script(plan, actions(plan, source="build/functions"))
    assert "allUsers" not in text and "allAuthenticatedUsers" not in text
    assert "--allow-unauthenticated" not in text.replace("--no-allow-unauthenticated", "")


def test_eventarc_delivery_deploys_triggers_with_retry_and_no_subscriptions() -> None:
    plan = build_plan([DATAPREP], project=PROJECT, region=REGION, delivery="eventarc")
    steps = actions(plan, source="build/functions")
    assert not list(commands(steps, "pubsub", "subscriptions", "create"))
    for args in commands(steps, "functions", "deploy"):
        spec = next(f for f in plan.functions if f.name == args[3])
        assert flag(args, "trigger-topic") == spec.topic
        assert flag(args, "trigger-service-account") == plan.trigger_email
        assert "--retry" in args and "--trigger-http" not in args
    assert {b.principal for b in plan.bindings()} == {"runtime", "trigger"}
    assert tfvars(plan, source_dir="x")["delivery"] == "eventarc"


def test_dry_run_script_is_valid_bash(plan: DeploymentPlan) -> None:
    text = script(plan, actions(plan, source="build/functions"))
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    assert text.count('uri_resumable_start="$(gcloud functions describe resumable-start') == 1


# -- running the commands --------------------------------------------------------------------


class FakeGcloud:
    """Answers gcloud invocations: existing resources, lookups, ALREADY_EXISTS."""

    def __init__(self, existing: set[str] = frozenset(), flaky: int = 0) -> None:  # type: ignore[assignment]
        self.existing = existing
        self.flaky = flaky
        self.calls: list[list[str]] = []
        self.files: dict[str, str] = {}

    def __call__(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        for arg in args:
            if arg.startswith("--lifecycle-file="):
                self.files[arg] = Path(arg.split("=", 1)[1]).read_text()
        out, err, code = "", "", 0
        if "identity" in args:
            out = "service-1234@gcp-sa-pubsub.iam.gserviceaccount.com\n"
        elif "describe" in args:
            if "--format=value(serviceConfig.uri)" in args:
                out = f"https://{args[3]}-x.a.run.app\n"
            elif not any(name in args for name in self.existing):
                code, err = 1, "NOT_FOUND"
        elif "composite" in args:
            code, err = 1, "ERROR: (gcloud) ALREADY_EXISTS: index already exists"
        elif "add-iam-policy-binding" in args and self.flaky:
            self.flaky -= 1
            code, err = 1, "Service account does not exist"
        return subprocess.CompletedProcess(args, code, out, err)


def test_run_resolves_lookups_and_skips_what_exists(plan: DeploymentPlan) -> None:
    gcloud = FakeGcloud(existing={"resumable-start", "resumable-start-push"}, flaky=2)
    run(actions(plan, source="b"), runner=gcloud, echo=lambda _: None, sleep=lambda _: None)
    created = [c for c in gcloud.calls if c[1:4] == ["pubsub", "topics", "create"]]
    assert "resumable-start" not in {c[4] for c in created}
    assert len(created) == len(plan.topology.topics) - 1
    sub = next(
        c
        for c in gcloud.calls
        if c[1:5] == ["pubsub", "subscriptions", "create", "resumable-watchdog-push"]
    )
    assert (
        "--push-endpoint=https://resumable-watchdog-x.a.run.app/projects/acme-video/topics/"
        "resumable-watchdog"
    ) in sub
    assert "--push-auth-token-audience=https://resumable-watchdog-x.a.run.app" in sub
    assert any(
        "--member=serviceAccount:service-1234@gcp-sa-pubsub.iam.gserviceaccount.com" in c
        for c in gcloud.calls
    )
    # The start topic's subscription existed: updated, not created.
    start = [c[:5] for c in gcloud.calls if "resumable-start-push" in c[:5]]
    assert ["gcloud", "pubsub", "subscriptions", "update", "resumable-start-push"] in start
    assert ["gcloud", "pubsub", "subscriptions", "create", "resumable-start-push"] not in start
    lifecycle = json.loads(next(iter(gcloud.files.values())))
    assert lifecycle == gcloud_lifecycle(plan)


def test_run_stops_at_the_first_failure(plan: DeploymentPlan) -> None:
    from resumable.errors import DeployError

    def failing(args: list[str]) -> subprocess.CompletedProcess[str]:
        if args[1:3] == ["functions", "deploy"]:
            return subprocess.CompletedProcess(args, 1, "", "PERMISSION_DENIED: no")
        return FakeGcloud()(args)

    with pytest.raises(DeployError, match="PERMISSION_DENIED"):
        run(actions(plan, source="b"), runner=failing, echo=lambda _: None)


def test_script_writes_a_file_argument_to_a_real_file(tmp_path: Path) -> None:
    """gcloud resolves a file argument's real path, so process substitution cannot work."""
    action = Action(
        "bucket",
        ("echo", "update", TempFile("--lifecycle-file", "rules.json", '{"rule": []}')),
    )
    text = commands_script("test", [action]).replace("echo update", "cat")
    text = text.replace('--lifecycle-file="$files"', '"$files"')
    assert "<(" not in text
    result = subprocess.run(["bash", "-c", text], capture_output=True, text=True, check=True)
    assert result.stdout == '{"rule": []}'


# -- bundle ----------------------------------------------------------------------------------


def test_bundle_holds_entry_points_library_pipelines_and_pinned_requirements(
    tmp_path: Path,
) -> None:
    output = tmp_path / "bundle"
    manifest = build_bundle(output, [DATAPREP], extras=["dataprep"])
    assert (output / "main.py").read_text() == Path("functions/main.py").read_text()
    assert (output / "resumable" / "serverless" / "entrypoints.py").is_file()
    assert (output / "examples" / "dataprep" / "pipeline.py").is_file()
    assert not list(output.rglob("__pycache__"))
    requirements = (output / "requirements.txt").read_text().split()
    names = {r.split("==")[0] for r in requirements}
    assert {"functions-framework", "google-cloud-firestore", "google-cloud-pubsub", "av"} <= names
    assert all("==" in r for r in requirements)
    assert manifest["pipelines"][DATAPREP]["name"] == "dataprep"
    check_bundle(output, [DATAPREP])


def test_bundle_of_other_code_is_refused(tmp_path: Path) -> None:
    output = tmp_path / "bundle"
    build_bundle(output, [DATAPREP])
    manifest = json.loads((output / "resumable-bundle.json").read_text())
    manifest["pipelines"][DATAPREP]["fingerprint"] = "0" * 32
    (output / "resumable-bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="another version"):
        check_bundle(output, [DATAPREP])
    with pytest.raises(BundleError, match="holds"):
        check_bundle(output, ["examples/quickstart.py:QuickstartPipeline"])


def test_bundle_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match="not a bundle"):
        build_bundle(tmp_path, [DATAPREP])
    assert (tmp_path / "keep.txt").exists()


def test_bundle_module_in_a_namespace_folder_is_copied_alone(tmp_path: Path) -> None:
    build_bundle(tmp_path / "b", ["examples.quickstart:QuickstartPipeline"], extras=["numpy"])
    assert (tmp_path / "b" / "examples" / "quickstart.py").is_file()
    assert not (tmp_path / "b" / "examples" / "dataprep").exists()


# -- command line ----------------------------------------------------------------------------


def test_cli_tfvars_writes_the_variables_with_the_bundle_relative_to_them(tmp_path: Path) -> None:
    output = tmp_path / "infra" / "terraform.tfvars.json"
    result = CliRunner().invoke(
        app,
        [
            "deploy",
            "tfvars",
            "--pipeline",
            DATAPREP,
            "--project",
            PROJECT,
            "--region",
            REGION,
            "--source",
            str(tmp_path / "build" / "functions"),
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    written = json.loads(output.read_text())
    assert written["source_dir"] == "../build/functions"
    assert written["project_id"] == PROJECT


def test_cli_gcloud_dry_run_prints_the_script() -> None:
    result = CliRunner().invoke(
        app,
        ["deploy", "gcloud", "-p", DATAPREP, "--project", PROJECT, "--region", REGION, "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("#!/usr/bin/env bash")
    assert "gcloud functions deploy resumable-dataprep-detect " in result.output


def test_cli_gcloud_refuses_a_missing_bundle_before_running_anything(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "deploy",
            "gcloud",
            "-p",
            DATAPREP,
            "--project",
            PROJECT,
            "--region",
            REGION,
            "--source",
            str(tmp_path),
            "--yes",
        ],
    )
    assert result.exit_code == 2
    assert "not a function bundle" in result.output


def test_cli_gcloud_asks_before_deploying(tmp_path: Path) -> None:
    build_bundle(tmp_path / "bundle", [DATAPREP])
    args = ["deploy", "gcloud", "-p", DATAPREP, "--project", PROJECT, "--region", REGION]
    result = CliRunner().invoke(app, [*args, "--source", str(tmp_path / "bundle")])
    assert result.exit_code == 2
    assert "pass --yes to deploy 10 functions and 10 topics" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "examples.nothing:build"], "cannot import module"),
        (["-p", DATAPREP, "--project", "X"], "not a Google Cloud project id"),
        (["-p", DATAPREP, "--delivery", "carrier-pigeon"], "--delivery must be one of"),
    ],
)
def test_cli_wrong_input_exits_2_with_the_reason(args: list[str], message: str) -> None:
    base = {"--project": PROJECT, "--region": REGION}
    for name, value in base.items():
        if name not in args:
            args = [*args, name, value]
    result = CliRunner().invoke(app, ["deploy", "tfvars", *args, "--output", "-"])
    assert result.exit_code == 2
    assert message in result.output


def test_the_repositorys_functions_main_is_the_bundles() -> None:
    from pathlib import Path

    from resumable.serverless.entrypoints import MAIN_PY

    assert (Path(__file__).parents[2] / "functions" / "main.py").read_text() == MAIN_PY


# -- the deploy commands' own paths (bundle, tfvars to stdout, bootstrap) --------------------


def test_cli_bundle_builds_the_folder_and_names_its_pipelines(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["deploy", "bundle", "-p", DATAPREP, "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"bundle of dataprep in {out}"
    check_bundle(out, [DATAPREP])  # a bundle the gcloud deployment accepts


def test_cli_bundle_of_a_pipeline_that_does_not_load_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        app, ["deploy", "bundle", "-p", "examples.nothing:build", "--output", str(out)]
    )
    assert result.exit_code == 2
    assert "error:" in result.output and "cannot import module" in result.output
    assert not out.exists()


def test_cli_tfvars_to_stdout_is_the_variables_json() -> None:
    result = CliRunner().invoke(
        app,
        ["deploy", "tfvars", "-p", DATAPREP, "--project", PROJECT, "--region", REGION,
         "--output", "-"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    variables = json.loads(result.stdout)
    assert variables["project_id"] == PROJECT and variables["region"] == REGION
    assert variables["source_dir"] == str(Path("build/functions").resolve())


@pytest.fixture
def gcloud_stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``gcloud`` first on PATH that logs its arguments, prints a value and succeeds;
    or, once ``fail`` exists beside its log, says ``boom`` and exits 1."""
    folder = tmp_path / "stub"
    folder.mkdir()
    gcloud = folder / "gcloud"
    gcloud.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{folder}/calls.log"\n'
        f'if [ -e "{folder}/fail" ]; then echo boom >&2; exit 1; fi\n'
        "echo stub-value\n"
    )
    gcloud.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    return folder


def _calls(stub: Path) -> list[str]:
    log = stub / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


BOOTSTRAP = ["deploy", "bootstrap", "--project", PROJECT, "--region", REGION]


def test_cli_bootstrap_of_a_bad_project_exits_2(gcloud_stub: Path) -> None:
    result = CliRunner().invoke(app, ["deploy", "bootstrap", "--project", "X", "--region", REGION])
    assert result.exit_code == 2 and "not a Google Cloud project id" in result.output
    assert _calls(gcloud_stub) == []


def test_cli_bootstrap_off_a_terminal_needs_yes(gcloud_stub: Path) -> None:
    result = CliRunner().invoke(app, BOOTSTRAP)
    assert result.exit_code == 2
    assert f"not a terminal: pass --yes to set up {PROJECT} for deployments" in result.output
    assert _calls(gcloud_stub) == []


class _Terminal:
    def isatty(self) -> bool:
        return True


def test_cli_bootstrap_on_a_terminal_asks_and_no_runs_nothing(
    gcloud_stub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    from resumable.cli import _deploy as cli_deploy

    monkeypatch.setattr(cli_deploy, "sys", types.SimpleNamespace(stdin=_Terminal()))
    result = CliRunner().invoke(app, BOOTSTRAP, input="n\n")
    assert result.exit_code == 1
    assert f"set up {PROJECT} for deployments with 19 commands? [y/N]" in result.output
    assert "aborted" in result.output.lower()
    assert _calls(gcloud_stub) == []


def test_cli_bootstrap_yes_runs_every_command_and_says_what_is_ready(gcloud_stub: Path) -> None:
    result = CliRunner().invoke(app, [*BOOTSTRAP, "--yes"])
    assert result.exit_code == 0, result.output
    assert f"ready: Cloud Build deploys as resumable-deployer@{PROJECT}" in result.output
    assert f"Terraform state in gs://{PROJECT}-resumable-tfstate" in result.output
    calls = _calls(gcloud_stub)
    assert calls[0].startswith("services enable cloudfunctions.googleapis.com")
    assert all(f"--project={PROJECT}" in call for call in calls)


def test_cli_bootstrap_stops_at_the_first_failing_command_and_exits_1(gcloud_stub: Path) -> None:
    (gcloud_stub / "fail").touch()
    result = CliRunner().invoke(app, [*BOOTSTRAP, "--yes"])
    assert result.exit_code == 1
    assert "error: `gcloud services enable cloudfunctions.googleapis.com" in result.output
    assert "failed (exit 1): boom" in result.output
    assert len(_calls(gcloud_stub)) == 1  # nothing after the failure ran
    assert "ready:" not in result.output


def test_bundle_needs_a_pipeline_and_a_folder_for_output(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="name at least one pipeline"):
        build_bundle(tmp_path / "b", [])
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(BundleError, match="exists and is not a bundle"):
        build_bundle(tmp_path / "a-file", [DATAPREP])
    assert (tmp_path / "a-file").read_text() == "mine"


def test_bundle_rebuilt_in_place_replaces_the_previous_one(tmp_path: Path) -> None:
    out = tmp_path / "b"
    build_bundle(out, [DATAPREP])
    (out / "stale.txt").write_text("from an older build")
    build_bundle(out, [DATAPREP])
    assert not (out / "stale.txt").exists()
    check_bundle(out, [DATAPREP])


def test_bundle_includes_further_files_and_folders_at_their_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    (work / "models" / "weights.json").write_text("[1, 2]")
    (work / "labels.txt").write_text("cat\ndog\n")
    monkeypatch.chdir(work)
    out = tmp_path / "b"
    build_bundle(out, [DATAPREP], include=[Path("models"), Path("labels.txt")])
    assert (out / "models" / "weights.json").read_text() == "[1, 2]"
    assert (out / "labels.txt").read_text() == "cat\ndog\n"


def test_a_rebuild_with_a_wrong_input_leaves_the_previous_bundle_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labels.txt").write_text("cat\n")
    out = tmp_path / "b"
    build_bundle(out, [DATAPREP], include=[Path("labels.txt")])
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    for wrong, message in [
        ({"include": [Path("absent.txt")]}, "absent.txt does not exist"),
        ({"include": [tmp_path.parent / "elsewhere.txt"]}, "outside the current folder"),
        ({"extras": ["gpu"]}, "unknown extra"),
    ]:
        with pytest.raises(BundleError, match=message):
            build_bundle(out, [DATAPREP], **wrong)  # type: ignore[arg-type]
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
        check_bundle(out, [DATAPREP])
    build_bundle(out, [DATAPREP])  # and the corrected command replaces it
    assert not (out / "labels.txt").exists()


def test_bundle_of_a_pipeline_named_by_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    ref = "examples/quickstart.py:QuickstartPipeline"
    manifest = build_bundle(tmp_path / "b", [ref], extras=["numpy"])
    assert (tmp_path / "b" / "examples" / "quickstart.py").is_file()
    assert ref in manifest["pipelines"]


def test_requirements_of_extras_naming_extras_and_of_unknown_extras() -> None:
    from resumable.deploy.bundle import pinned_requirements

    names = {line.split("==")[0].lower() for line in pinned_requirements(["dev"])}
    # dev names numpy, cloud, dataprep, ui and trace: their requirements come along
    assert {"numpy", "google-cloud-pubsub", "av", "starlette", "opentelemetry-sdk"} <= names
    assert {"pytest", "coverage"} <= names
    with pytest.raises(BundleError, match=r"unknown extra\(s\) \['gpu'\]"):
        pinned_requirements(["gpu"])


def test_a_requirement_not_installed_here_keeps_its_declared_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.metadata

    from resumable.deploy import bundle

    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "av":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(bundle.importlib.metadata, "version", version)
    lines = bundle.pinned_requirements(["dataprep"])
    assert "av>=12" in lines
    assert any(line.startswith("numpy==") for line in lines)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pipelines": []}, "name at least one pipeline"),
        ({"delivery": "smoke-signals"}, "delivery must be one of"),
        ({"region": "mars"}, "not a Google Cloud region"),
        ({"build_service_account": "builder@example.com"}, "not a service account email"),
        ({"pipelines": [DATAPREP, DATAPREP]}, "two references name the same pipeline"),
    ],
)
def test_a_plan_of_impossible_settings_is_refused(kwargs: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"pipelines": [DATAPREP], "project": PROJECT, "region": REGION}
    settings.update(kwargs)
    pipelines = settings.pop("pipelines")
    with pytest.raises(ValueError, match=message):
        build_plan(pipelines, **settings)


@pytest.mark.parametrize(
    "prefix", ["resumable", "Video_Jobs", "a", "9lives", "x" * 40, "acme.video-prep-pipelines"]
)
def test_account_and_bucket_names_are_valid_and_distinct_for_any_prefix(prefix: str) -> None:
    from resumable.deploy.plan import account_id, bucket_name

    roles = ["runtime", "trigger", "deployer", "builder"]
    accounts = [account_id(prefix, role) for role in roles]
    for account in accounts:
        assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", account), account
    assert len(set(accounts)) == len(roles)
    buckets = [bucket_name(PROJECT, prefix, p) for p in ("runs", "sources", "tfstate")]
    for bucket in buckets:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", bucket), bucket
    assert len(set(buckets)) == 3
    # prefixes that differ only where names cannot keep the difference get names of their own
    assert account_id("Video_Jobs", "runtime") != account_id("video-jobs", "runtime")
    assert bucket_name(PROJECT, "Video_Jobs", "runs") != bucket_name(PROJECT, "video-jobs", "runs")


def test_a_map_steps_concurrency_is_its_instances_one_item_each() -> None:
    mapped = build_plan(
        ["tests.support.serverless_pipelines:mapped"], project=PROJECT, region=REGION
    )
    steps = tfvars(mapped, source_dir="../build/functions")["pipelines"]["mapped"]["steps"]
    assert (steps["objects"]["concurrency"], steps["objects"]["max_instances"]) == (1, 20)
    assert steps["summary"]["max_instances"] is None  # the deployment's max_instances
    deploys = {
        args[3]: args
        for args in commands(actions(mapped, source="build/functions"), "functions", "deploy")
    }
    objects = next(a for name, a in deploys.items() if name.endswith("mapped-objects"))
    assert (flag(objects, "concurrency"), flag(objects, "max-instances")) == ("1", "20")
    summary = next(a for name, a in deploys.items() if name.endswith("mapped-summary"))
    assert flag(summary, "max-instances") == str(mapped.max_instances)


def test_gcloud_turns_off_the_indexes_of_item_fields_no_query_uses(plan: DeploymentPlan) -> None:
    updates = [
        args
        for args in commands(actions(plan, source="build/functions"), "firestore", "indexes")
        if "--collection-group=resumable_map_items" in args
    ]
    fields = {args[args.index("update") + 1] for args in updates}
    assert fields == set(plan.unindexed_item_fields)
    assert "status" not in fields  # status and the UI query it
    assert all("--disable-indexes" in args for args in updates)
    assert set(tfvars(plan, source_dir="x")["unindexed_item_fields"]) == fields
