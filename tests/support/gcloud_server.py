"""Runs inside the Google Cloud CLI's own Python (see gcloud_forkserver.py); stdlib only.

Usage: ``python3 gcloud_server.py SDK_ROOT SOCKET``. Imports the CLI once, then for each
connection on ``SOCKET`` receives an invocation (argv, working directory, environment,
and the caller's stdin/stdout/stderr as file descriptors), forks, and runs in the child
exactly what ``bin/gcloud`` runs: ``lib/gcloud.py``'s ``main()``, on the caller's streams.
It answers with the child's exit code.

A child reports the modules its command imported, and the server imports them too, so
that the next command of the kind finds them loaded: a command's imports are most of
its cost, and a deployment runs the same few commands many times.
"""

import contextlib
import importlib
import json
import os
import socket
import sys

sdk_root, socket_path = sys.argv[1:3]
sys.path.insert(0, os.path.join(sdk_root, "lib"))

import gcloud  # noqa: E402  lib/gcloud.py: puts the CLI's libraries on sys.path

sys.path = gcloud.reorder_sys_path(sys.path)
gcloud._fix_google_module()
import googlecloudsdk.gcloud_main  # noqa: E402

googlecloudsdk.gcloud_main.CreateCLI([])
# What bin/gcloud exports to the CLI on top of its caller's environment.
WRAPPER_ENV = {
    name: os.environ[name]
    for name in (
        "CLOUDSDK_ROOT_DIR",
        "CLOUDSDK_PYTHON_SITEPACKAGES",
        "CLOUDSDK_ENCODING",
        "PYTHONIOENCODING",
    )
    if name in os.environ
}


def run_in_child(request: dict, fds: list, report: int) -> None:
    """Run the invocation as bin/gcloud would; never returns."""
    loaded = set(sys.modules)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({**request["env"], **WRAPPER_ENV})
    os.environ.pop("PYTHONHOME", None)
    sys.argv = [gcloud.__file__, *request["argv"]]
    code = 0
    try:
        gcloud.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    sys.stdout.flush()
    sys.stderr.flush()
    with os.fdopen(report, "w") as modules:
        modules.write("\n".join(sorted(set(sys.modules) - loaded)))
    os._exit(code)


def learn(modules: str) -> None:
    for name in modules.split():
        # A module only its command could import stays the child's.
        with contextlib.suppress(Exception):
            importlib.import_module(name)


server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
server.bind(socket_path)
server.listen()
print("ready", flush=True)
while True:
    connection, _ = server.accept()
    with connection:
        message, fds, _flags, _address = socket.recv_fds(connection, 1 << 20, 3)
        report_read, report_write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        child = os.fork()
        if child == 0:
            server.close()
            os.close(report_read)
            run_in_child(json.loads(message), fds, report_write)
        os.close(report_write)
        for fd in fds:
            os.close(fd)
        with os.fdopen(report_read) as report:
            modules = report.read()
        _, status = os.waitpid(child, 0)
        connection.send(str(os.waitstatus_to_exitcode(status)).encode())
    learn(modules)
