"""One function process of the local stack: a functions-framework server, restarted when it dies."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from resumable._log import logger
from resumable.serverless._topology import FunctionSpec


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FunctionProcess:
    """One functions-framework server; :meth:`ensure_running` restarts it if it died."""

    spec: FunctionSpec
    port: int
    env: dict[str, str]
    log_path: Path
    source: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child from here on
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "functions_framework",
                "--target",
                self.spec.target,
                "--source",
                str(self.source),
                "--signature-type",
                "cloudevent",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: kill the server and its workers
        )
        log.close()

    def answers(self) -> bool:
        try:
            urllib.request.urlopen(self.url, timeout=0.5)
        except urllib.error.HTTPError:
            return True  # any HTTP answer means the server is up
        except OSError:
            return False
        return True

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"function {self.spec.name} exited with {self.process.returncode}; "
                    f"see {self.log_path}"
                )
            if self.answers():
                return
            time.sleep(0.1)
        raise RuntimeError(f"function {self.spec.name} did not answer within {timeout:.0f}s")

    def ensure_running(self) -> bool:
        """Restart the server if it died; returns whether it did."""
        if self.process is None or self.process.poll() is None:
            return False
        self.stop()
        self.restarts += 1
        logger.warning(f"function {self.spec.name} died; restarting it (restart #{self.restarts})")
        self.start()
        return True

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        # Workers that outlived their master still belong to the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
