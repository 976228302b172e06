"""Command line for the local cloud.

    python -m emulators start [--free-ports | --pubsub-port N ...] [--json]
        Start the three servers, print the export lines (or one JSON object) once they
        answer, and run in the foreground until Ctrl-C, SIGTERM or SIGHUP; then stop them all.
    python -m emulators env       Export lines of the running local cloud: eval "$(...)"
                                  (--defaults: those of docker-compose.yml)
    python -m emulators status    Running local clouds of this user (--json)
    python -m emulators stop      Stop the `start` commands running; reap leftovers of killed runs
    python -m emulators check     Check prerequisites (gcloud, emulator components, Java)
    python -m emulators cycles -n 20   Start and stop 20 times; fail on any leftover

Exit codes: 0 ok, 1 failure, 2 a prerequisite is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from emulators.defaults import (
    DEFAULT_FIRESTORE_PORT,
    DEFAULT_PROJECT,
    DEFAULT_PUBSUB_PORT,
    DEFAULT_STORAGE_PORT,
)
from emulators.errors import LocalCloudError
from emulators.launcher import LOCAL_CLOUD_KIND, LocalCloud
from emulators.prereqs import MissingPrerequisite, check_prerequisites
from emulators.registry import Registry, RunRecord

EXIT_FAILURE = 1
EXIT_MISSING_PREREQUISITE = 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result: int = args.handler(args)
        return result
    except MissingPrerequisite as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_MISSING_PREREQUISITE
    except LocalCloudError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE


def _start(args: argparse.Namespace) -> int:
    def port(given: int | None, default: int) -> int | None:
        if args.free_ports:
            return None
        chosen = default if given is None else given
        return chosen or None  # 0 means "any free port"

    cloud = LocalCloud(
        project=args.project,
        pubsub_port=port(args.pubsub_port, DEFAULT_PUBSUB_PORT),
        firestore_port=port(args.firestore_port, DEFAULT_FIRESTORE_PORT),
        storage_port=port(args.storage_port, DEFAULT_STORAGE_PORT),
        log_dir=args.log_dir,
        started_by="cli",
    )
    started = time.monotonic()
    # A shell starts background jobs with SIGINT ignored; a foreground server must still
    # stop on Ctrl-C or `kill -INT`.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with cloud:
            if args.json:
                print(json.dumps(_describe(cloud)), flush=True)
            else:
                print("\n".join(cloud.export_lines()), flush=True)
            print(
                f"local cloud ready in {time.monotonic() - started:.1f} s; logs in "
                f"{cloud.log_dir}; Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            return _watch(cloud)
    except KeyboardInterrupt:
        print("local cloud stopped", file=sys.stderr)
        return 0


def _watch(cloud: LocalCloud) -> int:
    """Block until interrupted; fail if a server dies on its own meanwhile."""
    while True:
        time.sleep(0.5)
        for name, pgid in cloud.process_groups.items():
            if not _group_alive(pgid):
                print(f"error: the {name} emulator stopped on its own", file=sys.stderr)
                return EXIT_FAILURE


def _group_alive(pgid: int) -> bool:
    from emulators.processes import group_members

    return bool(group_members(pgid))


def _env(args: argparse.Namespace) -> int:
    if args.defaults:
        env = _defaults_cloud().env
    elif runs := _local_clouds():
        env = runs[-1].info["env"]
    else:
        print(
            "error: no local cloud is running (start one: make emulators; for "
            "docker-compose.yml use --defaults)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    print("\n".join(f"export {name}={value}" for name, value in env.items()))
    return 0


def _defaults_cloud() -> LocalCloud:
    """The addresses the CLI and docker-compose.yml use by default (nothing started)."""
    return LocalCloud(
        DEFAULT_PROJECT, DEFAULT_PUBSUB_PORT, DEFAULT_FIRESTORE_PORT, DEFAULT_STORAGE_PORT
    )


def _local_clouds() -> list[RunRecord]:
    """Running local clouds (the registry also lists other processes, e.g. test servers)."""
    return [r for r in Registry().live_runs() if r.info.get("kind") == LOCAL_CLOUD_KIND]


def _status(args: argparse.Namespace) -> int:
    runs = _local_clouds()
    if args.json:
        print(json.dumps([_record_json(r) for r in runs]))
    elif not runs:
        print("no local cloud is running")
    for run in [] if args.json else runs:
        env = run.info.get("env", {})
        hosts = ", ".join(f"{k}={v}" for k, v in env.items() if k.endswith("_HOST"))
        owner = f"pid {run.owner_pid}, {run.info.get('started_by')}"
        print(f"{run.run_id} ({owner}): {hosts}; logs {run.info.get('log_dir')}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    """Stop the foreground `start` commands; reap leftovers of killed runs. Local clouds
    owned by other programs (pytest, the dev stack) are theirs to stop: only listed."""
    registry = Registry()
    clouds = _local_clouds()
    runs = [r for r in clouds if r.info.get("started_by") == "cli"]
    for other in clouds:
        if other not in runs:
            print(f"left running: {other.run_id}, owned by pid {other.owner_pid}")
    for run in runs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(run.owner_pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and any(r.owner_alive() for r in runs):
        time.sleep(0.1)
    reaped = registry.reap_stale()
    left = [r for r in runs if r.owner_alive()]
    print(f"stopped {len(runs) - len(left)} local cloud(s), reaped {len(reaped)} leftover(s)")
    if left:
        print(f"error: still running: {[r.owner_pid for r in left]}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _cycles(args: argparse.Namespace) -> int:
    import statistics
    import tempfile

    from emulators.cycles import run_cycle

    results = []
    with tempfile.TemporaryDirectory(prefix="emulator-cycles-") as logs:
        for i in range(args.count):
            cycle = run_cycle(Path(logs) / str(i))
            results.append(cycle)
            left = "clean" if cycle.clean else f"LEFT {cycle.leaked_processes} {cycle.bound_ports}"
            print(f"cycle {i + 1}: start {cycle.start_s:.2f} s, stop {cycle.stop_s:.2f} s, {left}")
    starts, stops = [c.start_s for c in results], [c.stop_s for c in results]
    dirty = sum(not c.clean for c in results)
    print(f"{len(results)} cycles, {dirty} with leftovers")
    print(f"start: median {statistics.median(starts):.2f} s, max {max(starts):.2f} s")
    print(f"stop: median {statistics.median(stops):.2f} s, max {max(stops):.2f} s")
    return EXIT_FAILURE if dirty else 0


def _check(args: argparse.Namespace) -> int:
    tools = check_prerequisites()
    print(f"gcloud: {tools.gcloud} (SDK in {tools.sdk_root})")
    print(f"java: {tools.java} (version {tools.java_version})")
    print(f"fake-gcs-server: {tools.fake_gcs_server}")
    return 0


def _describe(cloud: LocalCloud) -> dict[str, object]:
    return {
        "project": cloud.project,
        "env": cloud.env,
        "log_dir": str(cloud.log_dir),
        "pid": os.getpid(),
        "process_groups": cloud.process_groups,
    }


def _record_json(run: RunRecord) -> dict[str, object]:
    return {"run_id": run.run_id, "owner_pid": run.owner_pid, **run.info}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emulators",
        description="Pub/Sub and Firestore emulators and fake-gcs-server, on this machine.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    start = commands.add_parser("start", help="run the local cloud in the foreground")
    start.add_argument("--project", default=DEFAULT_PROJECT)
    for name, default in (
        ("pubsub", DEFAULT_PUBSUB_PORT),
        ("firestore", DEFAULT_FIRESTORE_PORT),
        ("storage", DEFAULT_STORAGE_PORT),
    ):
        start.add_argument(
            f"--{name}-port", type=int, metavar="N", help=f"default {default}; 0: any free port"
        )
    start.add_argument("--free-ports", action="store_true", help="pick free ports for all")
    start.add_argument("--log-dir", type=Path, help="default .emulators/logs/<run id>")
    start.add_argument("--json", action="store_true", help="print one JSON object when ready")
    start.set_defaults(handler=_start)

    env = commands.add_parser("env", help="print export lines of the running local cloud")
    env.add_argument(
        "--defaults",
        action="store_true",
        help="the default addresses instead (those of docker-compose.yml)",
    )
    env.set_defaults(handler=_env)

    status = commands.add_parser("status", help="list running local clouds")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)

    stop = commands.add_parser("stop", help="stop running local clouds")
    stop.add_argument("--timeout", type=float, default=20.0)
    stop.set_defaults(handler=_stop)

    cycles = commands.add_parser("cycles", help="start and stop N times, checking for leftovers")
    cycles.add_argument("-n", "--count", type=int, default=20)
    cycles.set_defaults(handler=_cycles)

    check = commands.add_parser("check", help="check prerequisites")
    check.set_defaults(handler=_check)
    return parser


if __name__ == "__main__":
    sys.exit(main())
