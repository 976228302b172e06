"""Transient Cloud Storage errors: an HTTP proxy in front of fake-gcs-server that fails or
delays a fraction of the requests.

Restarting fake-gcs-server is not a transient error on the local stack: it runs with
``-backend memory`` (``emulators/services.py``), so a restart loses every object — every
run's params and checkpoints —, which no real outage does. The soak therefore points the
function processes' ``STORAGE_EMULATOR_HOST`` at this proxy instead. A fault is one of:

- ``refused``: 503 without forwarding — the service was unavailable, nothing happened;
- ``lost``: forwarded, then 503 — the request took effect but its answer was lost (the
  client retries a conditional write and meets its own precondition; see ``GCSStore``);
- ``slow``: forwarded after a pause of one to two leases — loading or writing a step's
  checkpoint outlasts the lease, which the worker's heartbeat must keep alive.

The storage client retries 503s (reads, and every upload since google-cloud-storage 3),
so the first two reach the engine as latency and as the lost-response path.

Faults are counted per run (the run id is read from the object name in the request), so
that a step given up after repeated faults can be explained.
"""

from __future__ import annotations

import http.client
import random
import re
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Hop-by-hop headers (RFC 9110 §7.6.1) and the length, which the proxy sets itself.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
_RUN = re.compile(r"runs/[^/]+/[^/]+/([^/?&]+)/")


class FaultProxy:
    """Forwards to ``target`` (``http://host:port``); ``rate`` of the requests fail."""

    def __init__(self, target: str, *, rate: float, seed: int, slow_seconds: float) -> None:
        parsed = urllib.parse.urlsplit(target)
        self.target_host = parsed.hostname or "127.0.0.1"
        self.target_port = parsed.port or 80
        self.rate = rate
        self.slow_seconds = slow_seconds
        self.random = random.Random(seed)
        self.faults: Counter[str] = Counter()  # by kind
        self.faults_by_run: Counter[str] = Counter()
        self.requests = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="soak-fault-proxy", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def injected(self) -> int:
        return sum(self.faults.values())

    def decide(self, path: str) -> tuple[str | None, float]:
        """The fault to inject into a request for ``path``, if any (and count it), and the
        pause before forwarding it."""
        with self._lock:
            self.requests += 1
            if self.random.random() >= self.rate:
                return None, 0.0
            kind = self.random.choice(("refused", "lost", "slow"))
            self.faults[kind] += 1
            found = _RUN.search(urllib.parse.unquote(path))
            if found:
                self.faults_by_run[found[1]] += 1
            pause = self.random.uniform(1.0, 2.0) * self.slow_seconds if kind == "slow" else 0.0
            return kind, pause


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client killed mid-request (the soak's doing) resets its connection."""


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    local = threading.local()

    def connection() -> http.client.HTTPConnection:
        if getattr(local, "connection", None) is None:
            local.connection = http.client.HTTPConnection(
                proxy.target_host, proxy.target_port, timeout=60
            )
        conn: http.client.HTTPConnection = local.connection
        return conn

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the storage client expects

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the soak reports faults in its summary."""

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline().strip():  # trailers, up to the blank line
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            headers["Content-Length"] = str(len(body))
            for retry in (False, True):
                conn = connection()
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    return response.status, response.getheaders(), response.read()
                except (http.client.HTTPException, OSError):
                    conn.close()  # a stale keep-alive connection: reconnect once
                    local.connection = None
                    if retry:
                        raise
            raise AssertionError("unreachable")

        def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers:
                if key.lower() not in _HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            body = self._body()
            fault, pause = proxy.decide(self.path)
            if fault == "refused":
                self._answer(503, [], b'{"error": {"code": 503, "message": "soak fault"}}')
                return
            time.sleep(pause)
            try:
                status, headers, answer = self._forward(body)
            except (http.client.HTTPException, OSError):
                status, headers, answer = 502, [], b""
            if fault == "lost":
                status, headers, answer = 503, [], b'{"error": {"code": 503}}'
            self._answer(status, headers, answer)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    return Handler
