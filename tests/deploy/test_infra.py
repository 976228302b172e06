"""infra/ and cloudbuild.yaml, offline: the HCL is formatted and parses, checkov finds
nothing beyond the reasoned skip list, the Terraform variables match what
``resumable deploy tfvars`` writes, its grants are the plan's, and every Cloud Build
step runs something that exists in the repository."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from resumable.deploy import build_plan, tfvars
from resumable.deploy.gcloud import lifecycle as gcloud_lifecycle
from resumable.deploy.tfvars import function_vars

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DATAPREP = "examples.dataprep.pipeline:build"
CHECKOV = "checkov==3.3.30"
CHECKOV_VENV = ROOT / ".venv-checkov"


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps HCL's quotes on keys and strings; drop them."""
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse(path: Path) -> dict[str, Any]:
    with path.open() as f:
        return dict(_unquote(hcl2.load(f)))


def tf_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*.tf") if ".terraform" not in p.parts)


def resources(kind_suffix: str = "") -> Iterator[tuple[str, str, dict[str, Any], Path]]:
    """(type, name, body, file) of every resource whose type ends with ``kind_suffix``."""
    for path in tf_files():
        for block in parse(path).get("resource", []):
            for kind, named in block.items():
                if kind.endswith(kind_suffix):
                    for name, body in named.items():
                        yield kind, name, body, path


def variables(path: Path) -> dict[str, dict[str, Any]]:
    return {k: v for block in parse(path).get("variable", []) for k, v in block.items()}


def object_attributes(type_expression: str) -> set[str]:
    """Attribute names of the innermost object type in a variable's type expression."""
    inner = type_expression[type_expression.rindex("object({") :]
    return set(re.findall(r"(\w+)\s*=", inner))


@pytest.fixture(scope="module")
def dataprep_tfvars() -> dict[str, Any]:
    plan = build_plan([DATAPREP], project="acme-video", region="europe-west1")
    variables = tfvars(plan, source_dir="../build/functions")
    first = next(iter(variables["control_functions"].values()))
    assert set(first) == set(function_vars(plan, plan.functions[0]))
    return variables


# -- the HCL -----------------------------------------------------------------------------


def test_terraform_files_are_formatted() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed (infra/ci/install-test-tools.sh installs it)")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(INFRA)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}"


def test_every_terraform_file_parses() -> None:
    files = tf_files()
    assert {p.relative_to(INFRA).parts[0] for p in files} >= {"main.tf", "modules"}
    for path in files:
        assert isinstance(parse(path), dict), path


def test_root_module_and_pipeline_module_exist() -> None:
    calls = {
        name: body["source"]
        for path in tf_files()
        for block in parse(path).get("module", [])
        for name, body in block.items()
    }
    assert calls == {
        "control_function": "./modules/function",
        "pipeline": "./modules/pipeline",
        "step": "../function",
    }


def test_tfvars_set_exactly_the_variables_the_root_module_declares(
    dataprep_tfvars: dict[str, Any],
) -> None:
    declared = variables(INFRA / "variables.tf")
    required = {name for name, body in declared.items() if "default" not in body}
    assert required <= set(dataprep_tfvars), "variables tfvars leaves unset"
    assert set(dataprep_tfvars) <= set(declared), "tfvars sets undeclared variables"


def test_function_objects_have_the_attributes_every_module_expects(
    dataprep_tfvars: dict[str, Any],
) -> None:
    written = set(next(iter(dataprep_tfvars["control_functions"].values())))
    expected_by = {
        "root control_functions": variables(INFRA / "variables.tf")["control_functions"]["type"],
        "root pipelines": variables(INFRA / "variables.tf")["pipelines"]["type"],
        "modules/pipeline steps": variables(INFRA / "modules/pipeline/variables.tf")["steps"][
            "type"
        ],
        "modules/function function": variables(INFRA / "modules/function/variables.tf")["function"][
            "type"
        ],
    }
    for where, type_expression in expected_by.items():
        assert object_attributes(type_expression) == written, where


def test_modules_take_the_deployment_object_the_root_module_builds() -> None:
    locals_ = {k: v for block in parse(INFRA / "main.tf")["locals"] for k, v in block.items()}
    built = set(locals_["deployment"])
    for module in ("function", "pipeline"):
        declared = variables(INFRA / "modules" / module / "variables.tf")["deployment"]["type"]
        top_level = set(re.findall(r"(\w+)\s*=", declared)) - {
            "ack_deadline_seconds",
            "min_backoff_seconds",
            "max_backoff_seconds",
            "max_delivery_attempts",
        }
        assert top_level == built, module


# -- what the HCL provisions -------------------------------------------------------------------


_KINDS = {
    "google_project_iam_member": "project",
    "google_storage_bucket_iam_member": "bucket",
    "google_pubsub_topic_iam_member": "topic",
    "google_pubsub_subscription_iam_member": "subscription",
    "google_service_account_iam_member": "service_account",
    "google_cloud_run_service_iam_member": "function",
}


def _principal(member: str) -> str:
    if "runtime" in member:
        return "runtime"
    if "trigger" in member:
        return "trigger"
    if "pubsub_agent" in member:
        return "pubsub_agent"
    raise AssertionError(f"unknown member {member}")


def test_terraform_grants_are_the_plans_bindings() -> None:
    plan = build_plan([DATAPREP], project="acme-video", region="europe-west1")
    granted = {
        (_principal(body["member"]), body["role"], _KINDS[kind])
        for kind, _, body, _ in resources("_iam_member")
    }
    assert granted == {(b.principal, b.role, b.kind) for b in plan.bindings()}
    firestore = next(b for _, _, b, _ in resources("google_project_iam_member"))
    assert "databases/${var.database}" in firestore["condition"][0]["expression"]


def test_no_authoritative_iam_and_no_public_access() -> None:
    members = [body["member"] for *_, body, _ in resources("_iam_member")]
    assert not [m for m in members if "allUsers" in m or "allAuthenticatedUsers" in m]
    assert not [k for k, *_ in resources("_iam_binding")]
    assert not [k for k, *_ in resources("_iam_policy")]
    for _, _, body, _ in resources("google_storage_bucket"):
        assert body["uniform_bucket_level_access"] is True
        assert body["public_access_prevention"] == "enforced"
    (function,) = [b for _, _, b, _ in resources("google_cloudfunctions2_function")]
    assert function["service_config"][0]["ingress_settings"] == "ALLOW_INTERNAL_ONLY"


def test_function_settings_come_from_the_function_object() -> None:
    (function,) = [b for _, _, b, _ in resources("google_cloudfunctions2_function")]
    service = function["service_config"][0]
    assert service["available_memory"] == "${var.function.memory}"
    assert service["timeout_seconds"] == "${var.function.timeout_seconds}"
    assert service["max_instance_request_concurrency"] == "${var.function.concurrency}"
    assert service["service_account_email"] == "${var.deployment.runtime_service_account}"
    trigger = function["dynamic"][0]["event_trigger"]["content"][0]
    assert trigger["event_type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert trigger["retry_policy"] == "RETRY_POLICY_RETRY"
    assert trigger["service_account_email"] == "${var.deployment.trigger_service_account}"


def test_push_subscription_has_the_delivery_policy_and_dead_letter() -> None:
    (subscription,) = [b for _, _, b, _ in resources("google_pubsub_subscription")]
    policy = "var.deployment.delivery_policy"
    assert subscription["name"] == "${var.function.subscription}"
    assert subscription["ack_deadline_seconds"] == f"${{{policy}.ack_deadline_seconds}}"
    retry = subscription["retry_policy"][0]
    assert retry["minimum_backoff"] == f"${{{policy}.min_backoff_seconds}}s"
    assert retry["maximum_backoff"] == f"${{{policy}.max_backoff_seconds}}s"
    assert subscription["expiration_policy"][0]["ttl"] == ""
    dead_letter = subscription["dynamic"][0]["dead_letter_policy"]["content"][0]
    # Per function: a step's attempts follow its retries.
    assert dead_letter["max_delivery_attempts"] == "${var.function.max_delivery_attempts}"
    oidc = subscription["push_config"][0]["oidc_token"][0]
    assert oidc["service_account_email"] == "${var.deployment.trigger_service_account}"


def test_bucket_never_deletes_live_run_objects_and_firestore_has_ttl_and_indexes() -> None:
    """A run resumed after weeks still needs its params and blobs: no rule deletes a live
    object by age; the rules are those `resumable deploy gcloud` sets."""
    buckets = {name: body for _, name, body, _ in resources("google_storage_bucket")}
    plan = build_plan([DATAPREP], project="acme-video", region="europe-west1")
    rules = [
        (rule["action"][0]["type"], rule["condition"][0])
        for rule in buckets["runs"]["lifecycle_rule"]
    ]
    assert "dynamic" not in buckets["runs"]
    assert rules == [
        ("Delete", {"days_since_noncurrent_time": "${var.noncurrent_retention_days}"}),
        ("AbortIncompleteMultipartUpload", {"age": 1}),
    ]
    assert [r["action"]["type"] for r in gcloud_lifecycle(plan)["rule"]] == [
        "Delete",
        "AbortIncompleteMultipartUpload",
    ]
    assert gcloud_lifecycle(plan)["rule"][0]["condition"]["isLive"] is False
    fields = {name: b for _, name, b, _ in resources("google_firestore_field")}
    assert set(fields) == {"expire_at", "map_items"}
    assert (
        fields["expire_at"]["field"] == "${var.ttl_field}" and "ttl_config" in fields["expire_at"]
    )
    items = fields["map_items"]  # no indexes on item fields no query uses
    assert items["for_each"] == "${toset(var.unindexed_item_fields)}"
    assert items["collection"] == "${var.map_items_collection}" and "index_config" in items
    assert [k for k, *_ in resources("google_firestore_index")]
    (job,) = [b for _, _, b, _ in resources("google_cloud_scheduler_job")]
    assert "watchdog" in job["pubsub_target"][0]["topic_name"]


# -- checkov -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def checkov() -> Path:
    """checkov in its own virtual environment (it pins libraries the project's venv must
    not get), created once and reused."""
    binary = CHECKOV_VENV / "bin" / "checkov"
    stamp = CHECKOV_VENV / f".installed-{CHECKOV}"
    if not stamp.exists():
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", str(CHECKOV_VENV)],
                check=True,
                capture_output=True,
                timeout=300,
            )
            subprocess.run(
                [str(CHECKOV_VENV / "bin" / "pip"), "install", "--quiet", CHECKOV],
                check=True,
                capture_output=True,
                text=True,
                timeout=1200,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            pytest.skip(f"could not install {CHECKOV} into {CHECKOV_VENV}: {detail[-500:]}")
        stamp.touch()
    return binary


@pytest.mark.slow
def test_checkov_fails_only_the_reasoned_skips(checkov: Path) -> None:
    skips = yaml.safe_load((INFRA / "checkov-skips.yaml").read_text())
    for check, entry in skips.items():
        assert len(entry.get("reason", "").split()) >= 10, f"{check} needs a reason"
    result = subprocess.run(
        [
            str(checkov),
            "-d",
            str(INFRA),
            "--framework",
            "terraform",
            "--output=json",
            "--skip-download",
            "--quiet",
            "--compact",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = {
        (c["check_id"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]
    }
    passed = sum(r["summary"]["passed"] for r in reports)
    assert passed > 10, "checkov checked almost nothing"
    unexpected = {(check, where) for check, where in failed if check not in skips}
    assert not unexpected, f"checkov failures not in infra/checkov-skips.yaml: {unexpected}"
    stale = set(skips) - {check for check, _ in failed}
    assert not stale, f"skips that no longer fail, remove them: {stale}"


# -- cloudbuild.yaml -------------------------------------------------------------------------

# What each builder image provides; anything else a step runs must be in the repository.
_IMAGE_TOOLS = {
    "python:3.11": {"make", "bash", "python3"},
    "hashicorp/terraform": {"terraform", "sh"},
    "gcr.io/google.com/cloudsdktool/cloud-sdk": {"gcloud", "bash"},
}
_SHELL_WORDS = {"if", "then", "else", "fi", "echo", "exit", "[", "test", "true"}


def _commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell script (enough for cloudbuild.yaml's one-liners)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    command: list[str] = []
    for token in lexer:
        if token in (";", "&&", "||", "|"):
            if command:
                yield command
            command = []
        else:
            command.append(token)
    if command:
        yield command


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.MULTILINE))


def _console_scripts() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project.get("scripts", {}))


def _check_command(words: list[str], tools: set[str], step_dir: Path, made: set[Path]) -> None:
    program = words[0]
    if program in _SHELL_WORDS:
        return
    if program == "make":
        targets = [w for w in words[1:] if not w.startswith("-")]
        assert set(targets) <= _makefile_targets(), f"no Makefile target {targets}"
    elif program.startswith(".venv/bin/"):
        name = program.removeprefix(".venv/bin/")
        assert name in {"python", "pip"} | _console_scripts(), f"{program} is not installed"
    elif "/" in program:
        assert (step_dir / program).is_file(), f"{program} is not in the repository"
    else:
        assert program in tools, f"{program} is not in the step's image"
    if program in {"bash", "sh"} and len(words) > 1 and words[1] != "-c":
        script = (step_dir / words[1]).resolve()
        assert script.is_file() or script in made, f"{words[1]} is neither in the repo nor made"
    for i, word in enumerate(words[:-1]):
        if word == ">":
            made.add((step_dir / words[i + 1]).resolve())


def test_every_cloud_build_step_runs_something_that_exists() -> None:
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    made: set[Path] = set()
    for step in build["steps"]:
        image = step["name"]
        tools = next(t for prefix, t in _IMAGE_TOOLS.items() if image.startswith(prefix))
        step_dir = ROOT / step.get("dir", ".")
        entrypoint, args = step["entrypoint"], [str(a) for a in step.get("args", [])]
        if entrypoint in {"bash", "sh"} and args[:1] == ["-c"]:
            for words in _commands(args[1]):
                _check_command(words, tools, step_dir, made)
        else:
            _check_command([entrypoint, *args], tools, step_dir, made)


def test_cloud_build_tests_with_the_readmes_test_command_and_deploys_either_way() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    steps = {s["id"]: s for s in build["steps"]}
    test_commands = re.split(r"\s*&&\s*", steps["test"]["args"][1])
    assert [c for c in test_commands if c.startswith("make")] == ["make test"]
    assert list(steps)[:3] == ["install", "lint", "test"]
    substitutions = build["substitutions"]
    assert {"_PROJECT", "_REGION", "_DEPLOY_WITH"} <= set(substitutions)
    assert substitutions["_DEPLOY_WITH"] in {"terraform", "gcloud"}
    text = (ROOT / "cloudbuild.yaml").read_text()
    assert '"${_DEPLOY_WITH}" != terraform' in text and '"${_DEPLOY_WITH}" != gcloud' in text
    used = set(re.findall(r"\$\{(_[A-Z_]+)\}", text))
    assert used <= set(substitutions), f"undefined substitutions {used - set(substitutions)}"


def test_every_cloud_build_image_is_pinned_to_a_full_version() -> None:
    """A floating or minor-only tag changes what a build runs, and some images publish
    full-version tags only (hashicorp/terraform has 1.9.8, no 1.9)."""
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    for step in build["steps"]:
        image = step["name"]
        name, _, tag = image.rpartition(":")
        pinned = "@sha256:" in image or re.fullmatch(r"\d+\.\d+\.\d+(-[a-z0-9]+)*", tag)
        assert name and pinned, f"step {step['id']}: {image} is not pinned to a full version"


def test_cloud_build_deploys_as_the_bootstrapped_accounts() -> None:
    from resumable.deploy.bootstrap import Bootstrap

    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    setup = Bootstrap("PROJECT", "europe-west1")
    deployer = setup.deployer_email.replace("PROJECT", "${PROJECT_ID}")
    assert build["serviceAccount"] == f"projects/${{PROJECT_ID}}/serviceAccounts/{deployer}"
    builder = setup.builder_email.replace("PROJECT", "${PROJECT_ID}")
    assert build["substitutions"]["_BUILD_ACCOUNT"] == builder
    steps = {s["id"]: s for s in build["steps"]}
    assert "--build-service-account=${_BUILD_ACCOUNT}" in steps["tfvars"]["args"]
    assert "--build-service-account=${_BUILD_ACCOUNT}" in steps["gcloud-script"]["args"][1]
    # A user-specified build account needs its logs in Cloud Logging.
    assert build["options"]["logging"] == "CLOUD_LOGGING_ONLY"


def _install_check(gcloud_version: str) -> subprocess.CompletedProcess[str]:
    """The version check of install-test-tools.sh alone (it runs before anything is
    installed), with ``gcloud_version`` pinned."""
    text = (INFRA / "ci" / "install-test-tools.sh").read_text()
    check = text[: text.index("export DEBIAN_FRONTEND")]
    check = re.sub(r"(?m)^GCLOUD_VERSION=.*$", f"GCLOUD_VERSION={gcloud_version}", check)
    return subprocess.run(["bash", "-c", check], capture_output=True, text=True, check=False)


def test_test_tools_pin_a_cli_whose_emulators_run_on_the_java_installed() -> None:
    text = (INFRA / "ci" / "install-test-tools.sh").read_text()
    assert '"google-cloud-cli=${GCLOUD_VERSION}-0"' in text
    assert '"google-cloud-cli-firestore-emulator=${GCLOUD_VERSION}-0"' in text
    assert '"openjdk-${JAVA_MAJOR}-jre-headless"' in text
    assert _install_check("528.0.0").returncode == 0
    refused = _install_check("530.0.0")
    assert refused.returncode == 1
    assert "530.0.0's Firestore emulator needs Java 21" in refused.stderr


def test_the_readme_lists_every_role_the_bootstrap_grants() -> None:
    from resumable.deploy.bootstrap import BUILDER_GRANTS, DEPLOYER_GRANTS, Bootstrap

    readme = (INFRA / "README.md").read_text()
    section = readme[readme.index("### 1. Bootstrap") : readme.index("### 2. Bundle")]
    for grant in (*DEPLOYER_GRANTS, *BUILDER_GRANTS):
        assert f"| `{grant.role}`" in section, f"infra/README.md does not list {grant.role}"
    assert f"custom role `{Bootstrap('p-roject', 'europe-west1').custom_role}`" in section
    listed = set(re.findall(r"^\| `(roles/[\w.]+)`", section, re.MULTILINE))
    assert listed == {g.role for g in (*DEPLOYER_GRANTS, *BUILDER_GRANTS)}
