"""A local stand-in for the Google Cloud APIs the deployment scripts call, for the real
gcloud to talk to.

gcloud reaches it through ``CLOUDSDK_API_ENDPOINT_OVERRIDES_<API>`` (:attr:`GoogleApis.env`),
one path prefix per API. It keeps what it was asked to create — reading something never
created answers 404, so a script's ``describe || create`` creates, and creating it again
answers 409 ALREADY_EXISTS — answers long-running operations as already done, accepts
function source uploads, and records every request (:class:`Request`) for tests to assert
on. Its answers are the smallest bodies gcloud accepts; it validates nothing itself
(gcloud's parser and the tests do).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# The APIs the scripts call, by the name of their gcloud endpoint override.
APIS = (
    "cloudbuild",
    "cloudfunctions",
    "cloudresourcemanager",
    "cloudscheduler",
    "eventarc",
    "firestore",
    "iam",
    "pubsub",
    "run",
    "serviceusage",
    "storage",
)
PROJECT_NUMBER = "123456789012"
_FUNCTION_TYPE = "type.googleapis.com/google.cloud.functions.v2.Function"


@dataclass(frozen=True)
class Request:
    """One request gcloud sent: ``path`` without the API's prefix, the JSON body or None."""

    method: str
    api: str
    path: str
    query: dict[str, str]
    body: Any

    @property
    def text(self) -> str:
        """Everything the request names, for searching: path, query and body."""
        return f"{self.path} {json.dumps(self.query)} {json.dumps(self.body)}"


class ApiError(Exception):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.answer = {"error": {"code": code, "status": status, "message": message}}
        self.code = code


class GoogleApis:
    """The fake, serving on a free local port while used as a context manager."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.uploads: dict[str, bytes] = {}
        self._resources: dict[str, dict[str, Any]] = {}
        self._policies: dict[str, dict[str, Any]] = {}
        self._operations: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GoogleApis:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def env(self) -> dict[str, str]:
        """The endpoint overrides that send gcloud here."""
        overrides = {api: f"{self.url}/{api}/" for api in APIS}
        overrides["storage"] += "storage/v1/"  # its override includes the version
        return {f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api.upper()}": u for api, u in overrides.items()}

    @property
    def policies(self) -> dict[str, dict[str, Any]]:
        """The IAM policy of each resource that has one, by resource name."""
        return dict(self._policies)

    def sent(self, api: str, method: str, pattern: str = "") -> list[Request]:
        """The requests of ``method`` to ``api`` whose path matches ``pattern``."""
        return [
            r
            for r in self.requests
            if (r.api, r.method) == (api, method) and re.search(pattern, r.path)
        ]

    # -- answering ------------------------------------------------------------------------

    def answer(self, method: str, url: str, body: Any) -> tuple[int, Any]:
        parts = urlsplit(url)
        api, _, path = parts.path.lstrip("/").partition("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append(Request(method, api, "/" + path, query, body))
            try:
                return 200, self._answer(method, api, "/" + path, query, body or {})
            except ApiError as error:
                return error.code, error.answer

    def _answer(self, method: str, api: str, path: str, query: dict[str, str], body: Any) -> Any:
        name = re.sub(r"^/(v\d\w*|storage/v1)/", "", path)
        iam = re.fullmatch(r"(.+?)(:getIamPolicy|:setIamPolicy|/iam)", name)
        if iam:
            resource, verb = iam.groups()
            if verb == ":setIamPolicy" or (verb == "/iam" and method == "PUT"):
                self._policies[resource] = body.get("policy", body)
            return self._policies.get(resource, {"etag": "BwAAAA=="})
        if re.search(r"(^|/)operations/", name):
            return self._operations[name]
        handler = getattr(self, f"_{api}", None)
        answer = handler(method, name, query, body) if handler else None
        return self._rest(method, name, body) if answer is None else answer

    def _rest(self, method: str, name: str, body: Any) -> Any:
        """Plain REST on ``name``: GET reads, PUT creates, PATCH merges."""
        if method == "GET":
            return self._get(name)
        if method == "PATCH":
            return self._update(name, body.get("subscription") or body.get("job") or body)
        return self._create(name, body)

    def _get(self, name: str) -> dict[str, Any]:
        if name not in self._resources:
            raise ApiError(404, "NOT_FOUND", f"{name} not found")
        return self._resources[name]

    def _create(self, name: str, resource: dict[str, Any]) -> dict[str, Any]:
        if name in self._resources:
            raise ApiError(409, "ALREADY_EXISTS", f"{name} already exists")
        self._resources[name] = {**resource, "name": name}
        return self._resources[name]

    def _update(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        self._resources[name] = _merge(self._get(name), changes)
        return self._resources[name]

    def _operation(self, parent: str, response: Any) -> dict[str, Any]:
        """A long-running operation that is done already, as polling it says too."""
        name = f"{parent}/operations/operation-{next(self._ids)}".lstrip("/")
        operation = {"name": name, "done": True, "metadata": {}, "response": response}
        self._operations[name] = operation
        return operation

    # -- per API, what plain REST does not cover ------------------------------------------

    def _cloudbuild(self, method: str, name: str, query: dict[str, str], body: Any) -> Any:
        if name.endswith("/defaultServiceAccount"):  # what functions build as by default
            account = f"{PROJECT_NUMBER}-compute@developer.gserviceaccount.com"
            return {"name": name, "serviceAccountEmail": f"projects/-/serviceAccounts/{account}"}
        return None

    def _cloudfunctions(self, method: str, name: str, query: dict[str, str], body: Any) -> Any:
        location = "/".join(name.split("/")[:4])
        if name.endswith("/runtimes"):
            runtimes = [f"python3{minor}" for minor in range(9, 14)]
            return {"runtimes": [{"name": r, "environment": "GEN_2"} for r in runtimes]}
        if name.endswith(":generateUploadUrl"):
            upload = f"upload-{next(self._ids)}"
            return {
                "uploadUrl": f"{self.url}/upload/{upload}",
                "storageSource": {"bucket": "gcf-v2-uploads", "object": f"{upload}.zip"},
            }
        if method == "POST" and name.endswith("/functions"):
            function_id = query["functionId"]
            uri = f"https://{function_id}-{PROJECT_NUMBER}.europe-west1.run.app"
            service = {"uri": uri, "service": f"{location}/services/{function_id}"}
            created = self._create(
                f"{name}/{function_id}",
                _merge(body, {"state": "ACTIVE", "serviceConfig": service}),
            )
            return self._operation(location, {**created, "@type": _FUNCTION_TYPE})
        if method == "PATCH":
            updated = self._update(name, body)
            return self._operation(location, {**updated, "@type": _FUNCTION_TYPE})
        return None

    def _cloudresourcemanager(
        self, method: str, name: str, query: dict[str, str], body: Any
    ) -> Any:
        project = re.fullmatch(r"projects/([^/:]+)", name)
        if method == "GET" and project:
            return {"projectId": project[1], "projectNumber": PROJECT_NUMBER, "name": name}
        return None

    def _cloudscheduler(self, method: str, name: str, query: dict[str, str], body: Any) -> Any:
        if method == "POST" and name.endswith("/jobs"):
            return self._create(body["name"], body)
        return None

    def _firestore(self, method: str, name: str, query: dict[str, str], body: Any) -> Any:
        if method == "POST" and name.endswith("/databases"):
            database = f"{name}/{query['databaseId']}"
            return self._operation(database, self._create(database, body))
        if method == "POST" and name.endswith("/indexes"):  # an index is named by its fields
            fields = hashlib.sha256(json.dumps(body["fields"]).encode()).hexdigest()[:8]
            database = name.split("/collectionGroups/")[0]
            return self._operation(database, self._create(f"{name}/{fields}", body))
        if method == "PATCH" and "/fields/" in name:
            database = name.split("/collectionGroups/")[0]
            self._resources.setdefault(name, {"name": name})
            return self._operation(database, self._update(name, body))
        return None

    def _iam(self, method: str, name: str, query: dict[str, str], body: Any) -> Any:
        if method == "POST" and name.endswith("/serviceAccounts"):
            project = name.split("/")[1]
            email = f"{body['accountId']}@{project}.iam.gserviceaccount.com"
            account = {**body.get("serviceAccount", {}), "email": email, "projectId": project}
            return self._create(f"projects/-/serviceAccounts/{email}", account)
        if method == "GET" and "/serviceAccounts/" in name:  # any project's form: by email
            return self._get("projects/-/serviceAccounts/" + name.rsplit("/", 1)[1])
        if method == "POST" and name.endswith("/roles"):
            return self._create(f"{name}/{body['roleId']}", body.get("role", {}))
        return None

    def _serviceusage(self, method: str, name: str, query: dict[str, str], body: Any) -> Any:
        if name.endswith(":generateServiceIdentity"):
            service = name.rsplit("/", 1)[1].split(".")[0]
            email = f"service-{PROJECT_NUMBER}@gcp-sa-{service}.iam.gserviceaccount.com"
            return self._operation("", {"email": email, "uniqueId": "1"})
        if name.endswith(":batchEnable"):
            return self._operation("", {})
        if method == "GET" and "/services/" in name:
            return {"name": name, "state": "ENABLED"}
        return None

    def _storage(self, method: str, name: str, query: dict[str, str], body: Any) -> Any:
        if method == "POST" and name == "b":
            return self._create(f"b/{body['name']}", body)
        return None


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes``, nested objects merged."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _handler(apis: GoogleApis) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path.startswith("/upload/"):  # a function's source archive
                apis.uploads[self.path] = raw
                status, answer = 200, {}
            else:
                status, answer = apis.answer(self.command, self.path, json.loads(raw or "null"))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the requests are recorded instead."""

    return Handler
