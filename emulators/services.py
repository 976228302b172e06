"""The three servers of the local cloud: how each one starts and how to tell it is ready."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from emulators.defaults import LOCALHOST
from emulators.localhttp import http_status
from emulators.prereqs import Toolchain

# gcloud must never wait for an answer (it would prompt to install a missing component)
# nor go online to look for updates: the local cloud runs offline.
_GCLOUD_ENV = {
    "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
    "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
    "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
}


@dataclass(frozen=True)
class Service:
    """One server of the local cloud.

    `ready_log` is the line the server logs once it listens (None: no such line);
    `ready_path` an HTTP path that answers 200 once it serves requests. `signature` is text
    in the command line of each of its processes, used to recognise leftovers. `wrapped`:
    started through gcloud, which runs the Java server as its child.
    """

    name: str
    ready_log: str | None
    ready_path: str
    signature: str
    wrapped: bool

    def ready_url(self, port: int, project: str) -> str:
        """The URL polled for readiness."""
        return f"http://{LOCALHOST}:{port}{self.ready_path.format(project=project)}"

    def answers(self, port: int, project: str) -> bool:
        """Whether the server answers a real request with 200."""
        return http_status(self.ready_url(port, project)) == 200


# The Pub/Sub emulator serves REST next to gRPC on one port; listing topics is a real call.
PUBSUB = Service(
    name="pubsub",
    ready_log="Server started, listening on",
    ready_path="/v1/projects/{project}/topics",
    signature="pubsub",
    wrapped=True,
)
# The Firestore emulator answers "Ok" on / over HTTP/1.1 on its gRPC port.
FIRESTORE = Service(
    name="firestore",
    ready_log="Dev App Server is now running",
    ready_path="/",
    signature="firestore",
    wrapped=True,
)
STORAGE = Service(
    name="storage",
    ready_log=None,
    ready_path="/storage/v1/b",
    signature="fake-gcs-server",
    wrapped=False,
)

SERVICES = (PUBSUB, FIRESTORE, STORAGE)


def command(
    service: Service, tools: Toolchain, *, port: int, project: str, data_dir: Path
) -> list[str]:
    """The command line that starts `service` on 127.0.0.1:`port`."""
    host_port = f"--host-port={LOCALHOST}:{port}"
    if service is PUBSUB:
        # gcloud writes env.yaml into the data dir: one per run, so runs do not share it.
        return [
            str(tools.gcloud),
            "beta",
            "emulators",
            "pubsub",
            "start",
            host_port,
            f"--project={project}",
            f"--data-dir={data_dir}",
            "--quiet",
        ]
    if service is FIRESTORE:
        return [str(tools.gcloud), "emulators", "firestore", "start", host_port, "--quiet"]
    url = f"http://{LOCALHOST}:{port}"
    return [
        str(tools.fake_gcs_server),
        "-scheme",
        "http",
        "-backend",
        "memory",
        "-host",
        LOCALHOST,
        "-port",
        str(port),
        # Upload Location headers and public URLs must point back at this server.
        "-external-url",
        url,
        "-public-host",
        f"{LOCALHOST}:{port}",
    ]


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the servers: the caller's, with gcloud made non-interactive."""
    env = dict(os.environ if base is None else base)
    env.update(_GCLOUD_ENV)
    return env
