"""Emptying a running local cloud, so one set of emulators serves a whole test session.

Uses the official clients pointed at explicit endpoints (not the *_EMULATOR_HOST
variables), so a reset works whatever the process environment says.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from emulators.localhttp import http_status

if TYPE_CHECKING:
    from google.cloud import storage  # type: ignore[attr-defined,unused-ignore]


class ResetError(RuntimeError):
    """An emulator refused to be emptied; the next test would see stale state."""


class Resetter:
    """Deletes everything in one project: Firestore documents, Pub/Sub subscriptions,
    snapshots and topics, and every Cloud Storage bucket with its objects.

    Guarantee: when `reset()` returns, the project holds no documents, topics,
    subscriptions or buckets, and no push subscription of it delivers any more.
    Clients are created on first use and reused.
    """

    def __init__(
        self, *, project: str, pubsub_host: str, firestore_host: str, storage_url: str
    ) -> None:
        self.project = project
        self.pubsub_host = pubsub_host
        self.firestore_host = firestore_host
        self.storage_url = storage_url
        self._publisher: Any = None
        self._subscriber: Any = None
        self._storage: storage.Client | None = None

    def reset(self) -> None:
        """Empty all three emulators (Pub/Sub first, so pushes stop before anything else)."""
        self.reset_pubsub()
        self.reset_firestore()
        self.reset_storage()

    def reset_firestore(self) -> None:
        """Delete every document of the project, with the emulator's documented endpoint."""
        url = (
            f"http://{self.firestore_host}/emulator/v1/projects/{self.project}"
            "/databases/(default)/documents"
        )
        status = http_status(url, method="DELETE", timeout=30.0)
        if status != 200:
            raise ResetError(f"Firestore emulator reset {url} answered {status}")

    def reset_pubsub(self) -> None:
        """Delete the project's subscriptions, snapshots and topics."""
        publisher, subscriber = self._pubsub_clients()
        project_path = f"projects/{self.project}"
        for sub in subscriber.list_subscriptions(request={"project": project_path}):
            _ignore_not_found(subscriber.delete_subscription, {"subscription": sub.name})
        for snap in subscriber.list_snapshots(request={"project": project_path}):
            _ignore_not_found(subscriber.delete_snapshot, {"snapshot": snap.name})
        for topic in publisher.list_topics(request={"project": project_path}):
            _ignore_not_found(publisher.delete_topic, {"topic": topic.name})

    def reset_storage(self) -> None:
        """Delete every bucket and its objects."""
        client = self._storage_client()
        for bucket in client.list_buckets():
            # Listing then deleting can race an upload still in flight from the last test;
            # a second round settles it.
            for attempt in range(3):
                blobs = list(client.list_blobs(bucket.name, versions=True))
                for blob in blobs:
                    _ignore_not_found(blob.delete)
                try:
                    bucket.delete()
                    break
                except Exception as error:
                    if attempt == 2 or not _is_conflict(error):
                        raise ResetError(f"could not delete bucket {bucket.name}") from error
                    time.sleep(0.1)

    def close(self) -> None:
        """Close the clients' connections."""
        for client in (self._publisher, self._subscriber):
            if client is not None:
                client.transport.close()
        if self._storage is not None:
            self._storage.close()
        self._publisher = self._subscriber = self._storage = None

    def _pubsub_clients(self) -> tuple[Any, Any]:
        if self._publisher is None:
            import grpc
            from google.pubsub_v1 import PublisherClient, SubscriberClient
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
            from google.pubsub_v1.services.subscriber.transports import (
                SubscriberGrpcTransport,
            )

            self._publisher = PublisherClient(
                transport=PublisherGrpcTransport(channel=grpc.insecure_channel(self.pubsub_host))
            )
            self._subscriber = SubscriberClient(
                transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(self.pubsub_host))
            )
        return self._publisher, self._subscriber

    def _storage_client(self) -> storage.Client:
        if self._storage is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage  # type: ignore[attr-defined,unused-ignore]

            self._storage = storage.Client(
                project=self.project,
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": self.storage_url},
            )
        return self._storage


def _ignore_not_found(call: Any, request: Any = None) -> None:
    from google.api_core.exceptions import NotFound

    # Deleted meanwhile (e.g. by the test's own cleanup): the goal is met.
    with contextlib.suppress(NotFound):
        call() if request is None else call(request=request)


def _is_conflict(error: Exception) -> bool:
    from google.api_core.exceptions import Conflict

    return isinstance(error, Conflict)
