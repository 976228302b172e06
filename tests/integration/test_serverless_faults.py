"""One test per fault, on the local stack (official emulators, fake-gcs-server, one
functions-framework process per step): each ends with the run in the right final state
and every step's output committed exactly once, counted in the run document's commit
counters and in the checkpoint manifests written to Cloud Storage."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

from resumable.dev._functions import FunctionProcess
from resumable.dev._stack import DevStack
from resumable.serverless._control import get_run
from resumable.serverless._engine import Engine
from resumable.serverless._messages import StepMessage, encode
from resumable.serverless._publisher import MemoryPublisher
from resumable.serverless._run_state import RunState
from resumable.serverless._settings import Settings
from resumable.serverless._worker import handle_step

pytestmark = [pytest.mark.emulators, pytest.mark.slow]


def publish_start(stack: DevStack, pipeline: str, params: dict[str, Any], run_id: str) -> None:
    """Start a run the way users do: the official client publishes to the start topic."""
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(stack.project, f"{stack.prefix}-start")
    body = {"pipeline": pipeline, "params": params, "run_id": run_id}
    publisher.publish(topic, orjson.dumps(body)).result(timeout=30)


def wait_for(
    engine: Engine, run_id: str, pipeline: str, done: Any, timeout: float = 90
) -> RunState:
    deadline = time.monotonic() + timeout
    state: RunState | None = None
    while time.monotonic() < deadline:
        try:
            state = get_run(engine, run_id, pipeline=pipeline)
        except Exception:
            state = None
        if state is not None and done(state):
            return state
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not get there in {timeout}s; last state: {state}")


def finished(state: RunState) -> bool:
    return state.finished


def wait_file(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def wait_lease_expired(engine: Engine, run_id: str, pipeline: str, step: str) -> None:
    """Until the step's lease, held by a worker that does not renew it, has run out."""
    lease = wait_for(engine, run_id, pipeline, lambda s: s.steps[step].lease_expires is not None)
    expires = lease.steps[step].lease_expires or 0
    while time.time() <= expires:
        time.sleep(max(0.05, expires - time.time()))


def commits(state: RunState) -> dict[str, int]:
    return {name: step.commits for name, step in state.steps.items()}


def manifests(engine: Engine, state: RunState) -> Counter[str]:
    """Output manifests written per step (mid-step progress saves excluded)."""
    names = engine.store.list(engine.files(state).prefix + "steps/")
    return Counter(n.split("/steps/")[1].split("/")[0] for n in names if "progress" not in n)


def calls(workdir: Path) -> Counter[str]:
    return Counter((workdir / "calls.log").read_text().split())


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def new_run() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_a_run_started_with_the_official_client_completes(
    stack: DevStack, engine: Engine, workdir: Path
) -> None:
    run_id = new_run()
    publish_start(stack, "faulty", {"workdir": str(workdir)}, run_id)
    state = wait_for(engine, run_id, "faulty", finished)
    assert state.status == "completed"
    assert commits(state) == {"a": 1, "b": 1, "c": 1}
    assert manifests(engine, state) == {"a": 1, "b": 1, "c": 1}
    assert calls(workdir) == {"a": 1, "b": 1, "c": 1}


def test_sigkill_of_a_step_function_mid_step_resumes_and_commits_once(
    stack: DevStack, engine: Engine, workdir: Path
) -> None:
    run_id = new_run()
    publish_start(
        stack, "faulty", {"workdir": str(workdir), "faults": {"b": {"hang_first": True}}}, run_id
    )
    wait_file(workdir / "started-b")
    process = stack.step_process("faulty", "b")
    assert process.pid is not None
    os.killpg(process.pid, signal.SIGKILL)
    state = wait_for(engine, run_id, "faulty", finished)
    assert state.status == "completed"
    assert process.restarts >= 1  # the stack started a new instance, as Cloud Run would
    assert calls(workdir) == {"a": 1, "b": 2, "c": 1}
    assert commits(state) == {"a": 1, "b": 1, "c": 1}
    assert manifests(engine, state) == {"a": 1, "b": 1, "c": 1}  # the killed attempt wrote none
    assert state.steps["b"].attempt == 2


def test_a_crash_after_the_checkpoint_write_and_before_the_commit(
    stack: DevStack, engine: Engine, workdir: Path, fault_dir: Path
) -> None:
    run_id = new_run()
    (fault_dir / f"crash-before-commit-{run_id}-b").touch()
    publish_start(stack, "faulty", {"workdir": str(workdir)}, run_id)
    state = wait_for(engine, run_id, "faulty", finished)
    assert state.status == "completed"
    assert commits(state) == {"a": 1, "b": 1, "c": 1}
    assert manifests(engine, state) == {"a": 1, "b": 2, "c": 1}  # one orphan, never committed
    assert state.steps["b"].manifest and state.steps["b"].manifest.endswith("attempt-0002.json")


def test_a_crash_after_the_commit_and_before_the_publish(
    stack: DevStack, engine: Engine, workdir: Path, fault_dir: Path
) -> None:
    run_id = new_run()
    (fault_dir / f"crash-before-publish-{run_id}-a").touch()
    publish_start(stack, "faulty", {"workdir": str(workdir)}, run_id)
    state = wait_for(engine, run_id, "faulty", finished)
    assert state.status == "completed"
    assert calls(workdir) == {"a": 1, "b": 1, "c": 1}  # the redelivery re-published b only
    assert commits(state) == {"a": 1, "b": 1, "c": 1}
    assert manifests(engine, state) == {"a": 1, "b": 1, "c": 1}


def test_the_same_step_message_delivered_5_times_concurrently(
    stack: DevStack, engine: Engine, workdir: Path
) -> None:
    run_id = new_run()
    publish_start(
        stack, "faulty", {"workdir": str(workdir), "faults": {"b": {"sleep": 1.0}}}, run_id
    )
    wait_file(workdir / "started-a")
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(stack.project, f"{stack.prefix}-faulty-b")
    duplicate = encode(StepMessage(pipeline="faulty", run_id=run_id, step="b"))
    futures = [publisher.publish(topic, duplicate) for _ in range(5)]
    for future in futures:
        future.result(timeout=30)
    state = wait_for(engine, run_id, "faulty", finished)
    assert state.status == "completed"
    assert calls(workdir)["b"] == 1
    assert commits(state) == {"a": 1, "b": 1, "c": 1}
    assert manifests(engine, state) == {"a": 1, "b": 1, "c": 1}


def test_a_stale_worker_finishing_after_another_took_over_is_refused(
    stack: DevStack, workdir: Path
) -> None:
    """Two workers on the real Firestore emulator and Cloud Storage: the first stalls with
    no heartbeat past its lease, the second takes over and commits, the first's commit is
    refused."""
    settings = Settings.from_env()
    slow = Settings(**{**vars(settings), "lease_seconds": 1.0, "heartbeat_seconds": 600.0})
    stale_worker = Engine.from_settings(slow)
    fresh_worker = Engine.from_settings(slow)
    # Messages stay out of the deployed functions: these two workers are the only ones.
    stale_worker.publisher = fresh_worker.publisher = MemoryPublisher()
    run_id = new_run()
    from resumable.serverless._control import start_run
    from resumable.serverless._messages import StartMessage

    release = workdir / "release"
    start_run(
        stale_worker,
        StartMessage(
            pipeline="exhaust",
            params={"workdir": str(workdir), "faults": {"x": {"wait_first_for": str(release)}}},
            run_id=run_id,
        ),
    )
    message = StepMessage(pipeline="exhaust", run_id=run_id, step="x")
    outcomes: list[Any] = []
    thread = threading.Thread(target=lambda: outcomes.append(handle_step(stale_worker, message)))
    thread.start()
    wait_file(workdir / "started-x")
    wait_lease_expired(fresh_worker, run_id, "exhaust", "x")  # no heartbeat renews it
    taken_over = handle_step(fresh_worker, message)
    release.touch()
    thread.join(timeout=60)
    assert taken_over.ack and taken_over.reason.startswith("committed")
    assert outcomes[0].reason == "stale attempt"
    state = get_run(fresh_worker, run_id, pipeline="exhaust")
    assert state.status == "completed"
    assert state.steps["x"].commits == 1 and state.steps["x"].attempt == 2
    assert state.steps["x"].manifest and state.steps["x"].manifest.endswith("attempt-0002.json")


def test_a_step_raising_a_retryable_error_twice_then_succeeding(
    stack: DevStack, engine: Engine, workdir: Path
) -> None:
    run_id = new_run()
    publish_start(
        stack,
        "faulty",
        {"workdir": str(workdir), "faults": {"b": {"retryable_failures": 2}}},
        run_id,
    )
    state = wait_for(engine, run_id, "faulty", finished)
    assert state.status == "completed"
    assert calls(workdir) == {"a": 1, "b": 3, "c": 1}
    assert state.steps["b"].failures == 2 and state.steps["b"].attempt == 3
    assert commits(state) == {"a": 1, "b": 1, "c": 1}
    assert manifests(engine, state) == {"a": 1, "b": 1, "c": 1}


def test_a_step_raising_a_non_retryable_error_fails_the_run(
    stack: DevStack, engine: Engine, workdir: Path
) -> None:
    run_id = new_run()
    publish_start(
        stack, "faulty", {"workdir": str(workdir), "faults": {"b": {"nonretryable": True}}}, run_id
    )
    state = wait_for(engine, run_id, "faulty", finished)
    assert state.status == "error"
    assert "the input is invalid" in (state.error or "")
    assert state.steps["b"].status == "error" and state.steps["b"].attempt == 1
    assert state.steps["c"].status == "not_started"
    assert commits(state) == {"a": 1, "b": 0, "c": 0}
    assert manifests(engine, state) == {"a": 1}


def test_a_message_that_exhausts_its_delivery_attempts_is_dead_lettered(
    stack: DevStack, engine: Engine, workdir: Path, fault_dir: Path
) -> None:
    run_id = new_run()
    (fault_dir / f"unavailable-{run_id}-x").touch()
    publish_start(stack, "exhaust", {"workdir": str(workdir)}, run_id)
    state = wait_for(engine, run_id, "exhaust", finished, timeout=120)
    assert state.status == "error"
    # The max delivery attempts of x's subscription: its 4 attempts (no retries, plus the
    # crash allowance) and the stack's 1 "retry later" answer.
    assert "exhausted its delivery attempts (5 deliveries)" in (state.error or "")
    assert not (workdir / "calls.log").exists()
    assert commits(state) == {"x": 0}


def test_a_diamond_runs_both_branches_in_parallel_and_joins_once(
    stack: DevStack, engine: Engine, workdir: Path
) -> None:
    run_id = new_run()
    # Each branch finishes only once the other has started: they must overlap.
    faults = {
        "left": {"wait_for": str(workdir / "started-right")},
        "right": {"wait_for": str(workdir / "started-left")},
    }
    params = {"workdir": str(workdir), "faults": faults}
    publish_start(stack, "diamond", params, run_id)
    state = wait_for(engine, run_id, "diamond", finished)
    assert state.status == "completed"
    left, right = state.steps["left"], state.steps["right"]
    assert left.started_at and right.started_at and left.finished_at and right.finished_at
    assert left.started_at < right.finished_at and right.started_at < left.finished_at  # overlap
    assert calls(workdir) == {"root": 1, "left": 1, "right": 1, "join": 1}
    assert commits(state) == {"root": 1, "left": 1, "right": 1, "join": 1}


class FunctionLog:
    """What a function process logged from now on (its log file is shared by the session)."""

    def __init__(self, process: FunctionProcess) -> None:
        self.path = process.log_path
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def messages(self) -> list[str]:
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            lines = log.read().decode(errors="replace").splitlines()
        # Structured JSON lines, and plain ones logged before cloud logging is set up.
        return [
            str(orjson.loads(line).get("message", "")) if line[:1] == "{" else line
            for line in lines
        ]


def test_bad_messages_are_acked_with_their_reason_recorded_on_a_known_run(
    stack: DevStack, engine: Engine, workdir: Path
) -> None:
    run_id = new_run()
    release = workdir / "release"
    params = {"workdir": str(workdir), "faults": {"b": {"wait_for": str(release)}}}
    publish_start(stack, "faulty", params, run_id)
    wait_file(workdir / "started-b")
    [start_function] = [p for p in stack.functions.values() if p.spec.target == "start_run"]
    start_log = FunctionLog(start_function)
    step_log = FunctionLog(stack.step_process("faulty", "c"))
    publisher = pubsub_v1.PublisherClient()
    start_topic = publisher.topic_path(stack.project, f"{stack.prefix}-start")
    step_topic = publisher.topic_path(stack.project, f"{stack.prefix}-faulty-c")
    garbage = [
        (start_topic, b"not json"),
        (start_topic, orjson.dumps({"pipeline": "faulty", "run_id": run_id})),  # no params
        (start_topic, orjson.dumps({"pipeline": "faulty", "params": {}, "run_id": "../x"})),
        (step_topic, b"\xff\xfe"),
        (step_topic, orjson.dumps({"pipeline": "faulty", "run_id": run_id, "step": "zzz"})),
    ]
    for topic, data in garbage:
        publisher.publish(topic, data).result(timeout=30)

    # Every rejection is logged with its reason; those naming the run are recorded on it,
    # while it is running: a stray message cannot fail a healthy run.
    rejected = {
        "bad start message, acked: the start message is not JSON": start_log,
        "bad start message, acked: invalid start message: params: Field required": start_log,
        "bad start message, acked: invalid start message: run_id: Value error, run id '../x' "
        "is not a safe id": start_log,
        "bad step message, acked: the step message is not JSON": step_log,
        "bad step message, acked: pipeline 'faulty' has no step 'zzz'": step_log,
    }

    def logged(reason: str, log: FunctionLog) -> list[str]:
        return [m for m in log.messages() if reason in m]

    wait_for(engine, run_id, "faulty", lambda s: len(s.rejected_messages) == 2)
    deadline = time.monotonic() + 60
    while not all(logged(reason, log) for reason, log in rejected.items()):
        assert time.monotonic() < deadline, (start_log.messages(), step_log.messages())
        time.sleep(0.2)
    assert get_run(engine, run_id, pipeline="faulty").status == "running"
    release.touch()
    state = wait_for(engine, run_id, "faulty", finished)

    assert state.status == "completed"
    assert commits(state) == {"a": 1, "b": 1, "c": 1}
    reasons = sorted(state.rejected_messages)
    assert "params: Field required" in reasons[0]
    assert "pipeline 'faulty' has no step 'zzz'" in reasons[1]
    # Acked: answered 2xx once, never redelivered (a redelivery would be logged again).
    for reason, log in rejected.items():
        assert len(logged(reason, log)) == 1, (reason, log.messages())
