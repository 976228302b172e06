"""Map steps on the local stack (official emulators, fake-gcs-server, a functions-framework
process per step): a map over a Cloud Storage prefix with failing items and a redrive, and
an item's instance killed mid-item. Item calls are counted in ``items.log`` across
processes (see ``tests/support/serverless_pipelines.py``)."""

from __future__ import annotations

import hashlib
import os
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from typer.testing import CliRunner

from resumable.cli import app
from resumable.dev._stack import DevStack
from resumable.serverless._control import resume_run
from resumable.serverless._engine import Engine
from resumable.serverless._map_status import item_summaries
from tests.support.serverless_pipelines import MAP_BUCKET, MAP_PREFIX

from .test_serverless_faults import finished, publish_start, wait_file, wait_for

pytestmark = [pytest.mark.emulators, pytest.mark.slow]

OBJECTS = 200
BROKEN = [7, 23, 41, 58, 99, 120, 133, 150, 177, 198]


def calls(workdir: Path) -> Counter[str]:
    path = workdir / "items.log"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def upload_objects(project: str) -> dict[str, bytes]:
    client = storage.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    bucket = client.bucket(MAP_BUCKET)
    for blob in client.list_blobs(MAP_BUCKET, prefix=MAP_PREFIX):
        blob.delete()
    contents = {}
    for i in range(OBJECTS):
        name = f"obj-{i:03d}.txt"
        data = f"object {i}\n".encode() * (i + 1)
        bucket.blob(MAP_PREFIX + name).upload_from_string(data)
        contents[name] = data
    bucket.blob(MAP_PREFIX + "README.md").upload_from_string(b"not an item: the glob is *.txt")
    return contents


def test_a_map_over_a_prefix_lists_failed_items_and_resume_reruns_exactly_those(
    stack: DevStack, engine: Engine, tmp_path: Path
) -> None:
    contents = upload_objects(stack.project)
    names = sorted(contents)
    broken = {names[i] for i in BROKEN}
    for name in broken:
        (tmp_path / f"broken-{name}").touch()
    run_id = f"map-{uuid.uuid4().hex[:8]}"
    publish_start(stack, "mapped", {"workdir": str(tmp_path)}, run_id)
    state = wait_for(engine, run_id, "mapped", finished, timeout=240)

    assert state.status == "error", state.error
    assert calls(tmp_path) == Counter(names)  # every item ran once
    summary = item_summaries(engine, state)["objects"]
    assert (summary.total, summary.completed, summary.failed) == (OBJECTS, OBJECTS - 10, 10)
    assert [f.index for f in summary.failed_items] == BROKEN
    assert {str(f.item).rsplit("/", 1)[1] for f in summary.failed_items} == broken
    assert all("is broken" in f.error for f in summary.failed_items)
    error = state.steps["objects"].error or ""
    assert "10 of 200 items failed, more than the 0 tolerated" in error
    assert all(f"#{i} " in error for i in BROKEN)

    # `resumable status` lists them too, with their errors.
    env = {**os.environ, "RESUMABLE_PIPELINES": "tests.support.serverless_pipelines:mapped"}
    shown = CliRunner().invoke(app, ["status", run_id, "--pipeline", "mapped", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    items = orjson.loads(shown.stdout)["steps"]["objects"]["items"]
    assert items["failed"] == 10 and [f["index"] for f in items["failed_items"]] == BROKEN

    # The run document stayed small: no item in it.
    size_before_join = len(orjson.dumps(state.model_dump()))
    assert size_before_join < 8000

    for name in broken:  # the cause fixed
        (tmp_path / f"broken-{name}").unlink()
    before = calls(tmp_path)
    resume_run(engine, state)
    state = wait_for(engine, run_id, "mapped", finished, timeout=240)
    assert state.status == "completed", state.error
    assert calls(tmp_path) - before == Counter(broken)  # exactly the 10, once each
    assert state.steps["objects"].commits == 1
    assert state.steps["objects"].items == {"total": OBJECTS, "completed": OBJECTS, "failed": 0}
    spec = engine.registry.get("mapped").spec
    final = engine.files(state).final_context(state, spec)
    assert [r["name"] for r in final["objects"]] == names  # in item order
    for result in final["objects"]:
        data = contents[result["name"]]
        assert result == {
            "name": result["name"],
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    assert final["objects_failed"] == []
    assert final["summary"] == sum(len(d) for d in contents.values())
    assert abs(len(orjson.dumps(state.model_dump())) - size_before_join) < 2000


def test_an_item_instance_killed_mid_item_reruns_that_item_only(
    stack: DevStack, engine: Engine, tmp_path: Path
) -> None:
    run_id = f"mapkill-{uuid.uuid4().hex[:8]}"
    items = list(range(8))
    params: dict[str, Any] = {"workdir": str(tmp_path), "items": items, "victim": 5}
    publish_start(stack, "mapkill", params, run_id)
    wait_file(tmp_path / "started-victim", timeout=120)

    def others_completed(state: Any) -> bool:
        summary = item_summaries(engine, state).get("work")
        return summary is not None and summary.completed == len(items) - 1

    # Every other item finished first (not only started), so the kill lands on the victim
    # alone, however slow the machine.
    deadline_state = wait_for(engine, run_id, "mapkill", others_completed, timeout=180)
    assert not deadline_state.finished
    process = stack.step_process("mapkill", "work")
    assert process.pid is not None
    os.killpg(process.pid, signal.SIGKILL)
    state = wait_for(engine, run_id, "mapkill", finished, timeout=180)
    assert state.status == "completed", state.error
    counted = calls(tmp_path)
    assert counted["5"] == 2  # the killed item ran again, once
    assert all(counted[str(i)] == 1 for i in items if i != 5)  # no other item did
    final = engine.files(state).final_context(state, engine.registry.get("mapkill").spec)
    assert final["work"] == [i * 10 for i in items]
