"""A deployment's settings from the environment (serverless._settings): what the
deployment tools write (``to_env``) reads back the same, and a wrong value says which
variable it is."""

from __future__ import annotations

import os

import pytest

from resumable.serverless._settings import Settings

VARIABLES = [
    "RESUMABLE_PROJECT",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "RESUMABLE_STORAGE",
    "RESUMABLE_PIPELINES",
    "RESUMABLE_TOPIC_PREFIX",
    "RESUMABLE_COLLECTION",
    "RESUMABLE_DATABASE",
    "RESUMABLE_LEASE_SECONDS",
    "RESUMABLE_HEARTBEAT_SECONDS",
    "RESUMABLE_WATCHDOG_GRACE_SECONDS",
    "RESUMABLE_RUN_RETENTION_DAYS",
    "RESUMABLE_DEADLINE_MARGIN_SECONDS",
    "RESUMABLE_STEP",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "settings",
    [
        Settings(project="p", storage="gs://b/r"),
        Settings(project="p", storage="gs://b/r", pipelines=("a:b", "c:d"), lease_seconds=12.5),
        Settings(
            project="p",
            storage="gs://b/r",
            topic_prefix="video",
            collection="runs",
            database="db-1",
            lease_seconds=20,
            heartbeat_seconds=3,
            watchdog_grace_seconds=90,
            run_retention_days=0,
            deadline_margin_seconds=45,
            step="detect",
        ),
    ],
)
def test_what_to_env_writes_from_env_reads_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env() == settings


def test_values_derived_from_the_lease_are_left_out_so_they_follow_it() -> None:
    derived = Settings(
        project="p", storage="s", lease_seconds=40, heartbeat_seconds=10, watchdog_grace_seconds=80
    )
    env = derived.to_env()
    assert env["RESUMABLE_LEASE_SECONDS"] == "40"
    assert not {"RESUMABLE_HEARTBEAT_SECONDS", "RESUMABLE_WATCHDOG_GRACE_SECONDS"} & set(env)
    assert "RESUMABLE_DEADLINE_MARGIN_SECONDS" not in env and "RESUMABLE_STEP" not in env


def test_the_project_falls_back_to_googles_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GCLOUD_PROJECT", "from-gcloud")
    assert Settings.from_env().project == "from-gcloud"
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "from-google")
    assert Settings.from_env().project == "from-google"


def test_retention_zero_keeps_documents_forever() -> None:
    assert Settings(project="p", storage="s", run_retention_days=0).retention_seconds is None
    assert Settings(project="p", storage="s", run_retention_days=2).retention_seconds == 172800


def test_a_value_that_is_not_a_number_names_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESUMABLE_LEASE_SECONDS", "1m")
    with pytest.raises(ValueError, match="RESUMABLE_LEASE_SECONDS='1m' is not a number"):
        Settings.from_env()


def test_missing_settings_are_named() -> None:
    with pytest.raises(RuntimeError, match="RESUMABLE_PROJECT, RESUMABLE_STORAGE"):
        Settings.from_env().require()
    assert os.environ.get("RESUMABLE_PROJECT") is None
