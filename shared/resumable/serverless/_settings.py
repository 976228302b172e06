"""Settings of a serverless deployment, read from the environment.

The same variables configure the Cloud Run functions, the local dev stack and the CLI,
so that a client and the functions it talks to agree on names by construction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from resumable._defaults import DEFAULT_COLLECTION, DEFAULT_PREFIX
from resumable._ids import validate_id


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _number(value: float) -> str:
    """``60.0`` → ``"60"``, ``0.5`` → ``"0.5"``: what a person would write."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class Settings:
    """Where a deployment keeps its state and how its workers behave.

    - ``project``: the Google Cloud project (``RESUMABLE_PROJECT``, else
      ``GOOGLE_CLOUD_PROJECT``).
    - ``storage``: checkpoint location, ``gs://bucket/prefix`` (``RESUMABLE_STORAGE``).
    - ``pipelines``: ``MODULE:ATTR`` references of the deployed pipelines
      (``RESUMABLE_PIPELINES``, comma-separated).
    - ``topic_prefix``: prefix of every topic name (``RESUMABLE_TOPIC_PREFIX``).
    - ``collection``: Firestore collection of run documents (``RESUMABLE_COLLECTION``).
    - ``lease_seconds`` / ``heartbeat_seconds``: how long a claim on a step lives without
      a heartbeat, and how often a running step renews it.
    - ``run_retention_days``: how long a finished run's checkpoints are kept (then the
      watchdog deletes them) and its document (a day more, then Firestore's TTL policy
      deletes it) (``RESUMABLE_RUN_RETENTION_DAYS``; 0 keeps them forever).
    - ``deadline_margin_seconds``: how long before its function's timeout a delivery's
      ``should_stop()`` turns true, to leave time to save progress and commit
      (``RESUMABLE_DEADLINE_MARGIN_SECONDS``).

    :meth:`to_env` is the inverse of :meth:`from_env`: the deployment tools configure the
    functions with it.
    """

    project: str
    storage: str
    pipelines: tuple[str, ...] = ()
    topic_prefix: str = DEFAULT_PREFIX
    collection: str = DEFAULT_COLLECTION
    database: str = "(default)"
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 15.0
    watchdog_grace_seconds: float = 120.0
    run_retention_days: float = 30.0
    deadline_margin_seconds: float = 30.0
    step: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        project = (
            os.environ.get("RESUMABLE_PROJECT")
            or os.environ.get("GOOGLE_CLOUD_PROJECT")
            or os.environ.get("GCLOUD_PROJECT")
            or ""
        )
        storage = os.environ.get("RESUMABLE_STORAGE", "")
        pipelines = tuple(
            p.strip() for p in os.environ.get("RESUMABLE_PIPELINES", "").split(",") if p.strip()
        )
        lease = _float("RESUMABLE_LEASE_SECONDS", 60.0)
        prefix = os.environ.get("RESUMABLE_TOPIC_PREFIX", DEFAULT_PREFIX)
        validate_id(prefix, "topic prefix")
        return cls(
            project=project,
            storage=storage,
            pipelines=pipelines,
            topic_prefix=prefix,
            collection=os.environ.get("RESUMABLE_COLLECTION", DEFAULT_COLLECTION),
            database=os.environ.get("RESUMABLE_DATABASE", "(default)"),
            lease_seconds=lease,
            heartbeat_seconds=_float("RESUMABLE_HEARTBEAT_SECONDS", max(lease / 4, 0.2)),
            watchdog_grace_seconds=_float("RESUMABLE_WATCHDOG_GRACE_SECONDS", 2 * lease),
            run_retention_days=_float("RESUMABLE_RUN_RETENTION_DAYS", 30.0),
            deadline_margin_seconds=_float("RESUMABLE_DEADLINE_MARGIN_SECONDS", 30.0),
            step=os.environ.get("RESUMABLE_STEP") or None,
        )

    def to_env(self) -> dict[str, str]:
        """The variables that make :meth:`from_env` return these settings.

        Heartbeat and watchdog grace are left out when they are the values derived from
        the lease, so that a deployment changing only the lease keeps them in proportion.
        """
        env = {
            "RESUMABLE_PROJECT": self.project,
            "RESUMABLE_STORAGE": self.storage,
            "RESUMABLE_PIPELINES": ",".join(self.pipelines),
            "RESUMABLE_TOPIC_PREFIX": self.topic_prefix,
            "RESUMABLE_COLLECTION": self.collection,
            "RESUMABLE_DATABASE": self.database,
            "RESUMABLE_LEASE_SECONDS": _number(self.lease_seconds),
            "RESUMABLE_RUN_RETENTION_DAYS": _number(self.run_retention_days),
        }
        if self.heartbeat_seconds != max(self.lease_seconds / 4, 0.2):
            env["RESUMABLE_HEARTBEAT_SECONDS"] = _number(self.heartbeat_seconds)
        if self.watchdog_grace_seconds != 2 * self.lease_seconds:
            env["RESUMABLE_WATCHDOG_GRACE_SECONDS"] = _number(self.watchdog_grace_seconds)
        if self.deadline_margin_seconds != 30.0:
            env["RESUMABLE_DEADLINE_MARGIN_SECONDS"] = _number(self.deadline_margin_seconds)
        if self.step:
            env["RESUMABLE_STEP"] = self.step
        return env

    @property
    def retention_seconds(self) -> float | None:
        """Seconds a finished run's document is kept; ``None``: forever."""
        return self.run_retention_days * 86400 if self.run_retention_days > 0 else None

    def require(self) -> Settings:
        """Raise a clear error when a setting every serverless component needs is missing."""
        missing = [
            name
            for name, value in (
                ("RESUMABLE_PROJECT", self.project),
                ("RESUMABLE_STORAGE", self.storage),
            )
            if not value
        ]
        if missing:
            raise RuntimeError(
                f"missing setting(s) {', '.join(missing)}: set them in the environment "
                "(resumable dev up prints them for the local stack)"
            )
        return self
