"""The installed Google Cloud CLI, started once and forked per command.

Each gcloud command spends about a second starting Python and importing the CLI before it
parses a flag. :class:`GcloudForkServer` starts the CLI's own Python once, with the
environment ``bin/gcloud`` would give it, imports the CLI (``gcloud_server.py``), and
forks it per command to run ``lib/gcloud.py``'s ``main()`` — what ``bin/gcloud`` runs —
with the command's arguments, environment, working directory and standard streams. The
parser, the requests and the exit codes are the CLI's own; only its start-up is shared.

It puts a ``gcloud`` executable first on ``PATH`` (:meth:`GcloudForkServer.env`) that
hands each invocation to the server, so scripts and ``subprocess`` calls run unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

_CLIENT = """#!{python} -S
# Hands this gcloud invocation, with its standard streams, to the fork server.
import json, os, socket, sys

with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as server:
    server.connect({socket!r})
    request = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}
    socket.send_fds(server, [json.dumps(request).encode()], [0, 1, 2])
    sys.exit(int(server.recv(16) or b"1"))
"""


def installed_gcloud() -> Path | None:
    """The SDK root of the ``gcloud`` on PATH, if there is one."""
    gcloud = shutil.which("gcloud")
    return Path(gcloud).resolve().parent.parent if gcloud else None


class GcloudForkServer:
    """The CLI of ``sdk_root`` behind a ``gcloud`` in ``folder/bin``, serving commands
    with environment ``env`` while used as a context manager."""

    def __init__(self, sdk_root: Path, folder: Path, env: dict[str, str]) -> None:
        self.sdk_root = sdk_root
        self.bin = folder / "bin"
        self.socket = folder / "gcloud.sock"
        self.log = folder / "gcloud-server.log"
        self._env = env
        self._process: subprocess.Popen[str] | None = None

    @property
    def env(self) -> dict[str, str]:
        """``env`` with this ``gcloud`` first on ``PATH``."""
        return {**self._env, "PATH": f"{self.bin}{os.pathsep}{self._env['PATH']}"}

    def __enter__(self) -> GcloudForkServer:
        self.bin.mkdir(parents=True, exist_ok=True)
        client = self.bin / "gcloud"
        client.write_text(_CLIENT.format(python=sys.executable, socket=str(self.socket)))
        client.chmod(0o755)
        with self.log.open("w") as log:
            self._process = subprocess.Popen(
                [self._python(), str(Path(__file__).with_name("gcloud_server.py")),
                 str(self.sdk_root), str(self.socket)],
                env=self._wrapper_env(),
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )  # fmt: skip
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "ready":
            self.__exit__()
            raise RuntimeError(f"the gcloud fork server did not start: {self.log.read_text()}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)

    def _python(self) -> str:
        """The interpreter ``bin/gcloud`` picks: CLOUDSDK_PYTHON, else the bundled one."""
        bundled = self.sdk_root / "platform" / "bundledpythonunix" / "bin" / "python3"
        return self._env.get("CLOUDSDK_PYTHON") or (str(bundled) if bundled.exists() else "python3")

    def _wrapper_env(self) -> dict[str, str]:
        """The environment ``bin/gcloud`` exports before starting the CLI."""
        env = {k: v for k, v in self.env.items() if k != "PYTHONHOME"}
        bundled = "bundledpythonunix" in self._python()
        env.update(
            CLOUDSDK_ROOT_DIR=str(self.sdk_root),
            CLOUDSDK_ENCODING="UTF-8",
            PYTHONIOENCODING="UTF-8",
            **({"CLOUDSDK_PYTHON_SITEPACKAGES": "1"} if bundled else {}),
        )
        return env
