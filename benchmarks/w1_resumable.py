"""resumable on W1: the pipeline, and the crash/resume driver run in subprocesses.

As a script, with the project's venv::

    python benchmarks/w1_resumable.py crash  --storage DIR --run-id ID   # dies in step 8
    python benchmarks/w1_resumable.py resume --storage DIR --run-id ID   # prints a result line

``crash`` runs W1 until step 8 (``write_manifest``) kills the process with ``os._exit``,
so nothing after the checkpoint of step 7 is flushed or cleaned up. ``resume`` times
``Pipeline.run(resume_from_checkpoint=True)`` until the run completes. ``load`` times
``Pipeline.load_checkpoint()`` against a raw read of the same files, in a fresh process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import emit_result
from w1_floors import load_raw_incremental
from w1_workload import (
    CRASH_ENV,
    CRASH_STEP,
    Context,
    Step,
    W1Config,
    context_digest,
    crash_if_requested,
    initial_context,
    make_steps,
)

from resumable import Pipeline

PIPELINE_NAME = "w1"
TENANT = "default"


def _crashable(name: str, step: Step) -> Step:
    def run(context: Context) -> Context:
        crash_if_requested(name)
        return step(context)

    run.__name__ = name
    return run


def make_pipeline(config: W1Config, storage: Path, run_id: str) -> Pipeline:
    """W1 as a resumable pipeline; the run is kept after success (for load timings)."""
    definitions = {
        name: {"function": _crashable(name, step), "description": f"W1 step {name}"}
        for name, step in make_steps(config)
    }
    return Pipeline(
        PIPELINE_NAME,
        definitions,
        storage=str(storage),
        run_guid=run_id,
        cleanup_on_success=False,
        fail_on_checkpoint_error=True,
        # --trust-returned-keys (via the environment, so the crash/resume subprocesses see it)
        detect_in_place_changes=os.environ.get(TRUST_ENV) != "1",
    )


TRUST_ENV = "W1_TRUST_RETURNED_KEYS"


def run_folder(storage: Path, run_id: str) -> Path:
    return storage / "runs" / TENANT / PIPELINE_NAME / run_id


def latest_checkpoint_files(storage: Path, run_id: str) -> list[Path]:
    """The latest manifest and every blob it references, as plain file paths."""
    folder = run_folder(storage, run_id)
    manifest = json.loads((folder / ".checkpoint.json").read_bytes())
    names: set[str] = set()
    pending: list[Any] = list(manifest["context"].values())
    while pending:  # segments, listed blobs, and blobs referenced by inline values
        node = pending.pop()
        if isinstance(node, dict):
            for key in ("segment", "blob"):
                if isinstance(node.get(key), str):
                    names.add(node[key])
            names.update(b for b in node.get("blobs", []) if isinstance(b, str))
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return [folder / ".checkpoint.json", *(folder / "blobs" / n for n in sorted(names))]


def measure_loads(storage: Path, run_id: str, c_folder: Path | None, reps: int) -> dict[str, Any]:
    """Warm loads of the latest checkpoint, alternated with a raw read of the same files.

    Runs in a fresh process, as a resume does. Each timed call keeps what it read until
    the timer stops (a load returns arrays that live in the buffers it read). One untimed
    pass first, so that both find the files in the page cache.
    """
    config = W1Config()
    files = latest_checkpoint_files(storage, run_id)

    def raw_read() -> list[bytes]:
        return [path.read_bytes() for path in files]

    def load() -> Any:
        return make_pipeline(config, storage, run_id).load_checkpoint()

    def load_c() -> Any:
        assert c_folder is not None
        return load_raw_incremental(c_folder)

    loaded = load()
    if loaded is None:
        raise RuntimeError(f"run {run_id} has no checkpoint")
    digest = context_digest(loaded.context)
    raw_bytes = sum(len(data) for data in raw_read())
    del loaded
    timings: dict[str, list[float]] = {"load": [], "raw_read": [], "load_c": []}
    for _ in range(reps):
        for name, function in (("load", load), ("raw_read", raw_read), ("load_c", load_c)):
            if name == "load_c" and c_folder is None:
                continue
            gc.collect()
            began = time.perf_counter()
            kept = function()
            timings[name].append(time.perf_counter() - began)
            del kept
    return {**timings, "digest": digest, "files": len(files), "bytes": raw_bytes}


def _check_completed(result: dict[str, Any]) -> None:
    if result["status"] != "completed":
        raise RuntimeError(f"resumable run ended {result['status']}: {result['errors']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["crash", "resume", "load"])
    parser.add_argument("--storage", type=Path, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--c-folder", type=Path, help="load: also time floor C's files")
    parser.add_argument("--reps", type=int, default=9, help="load: timed repetitions")
    args = parser.parse_args()
    config = W1Config()
    if args.mode == "load":
        emit_result(measure_loads(args.storage, args.run_id, args.c_folder, args.reps))
        return
    if args.mode == "crash":
        os.environ[CRASH_ENV] = CRASH_STEP
        make_pipeline(config, args.storage, args.run_id).run(initial_context(config))
        raise SystemExit("W1 did not crash in step 8")
    pipeline = make_pipeline(config, args.storage, args.run_id)
    began = time.perf_counter()
    result = pipeline.run(resume_from_checkpoint=True)
    seconds = time.perf_counter() - began
    _check_completed(result)
    emit_result(
        {
            "seconds": seconds,
            "steps_run": result["steps_completed"],
            "steps_skipped": result["steps_skipped"],
            "digest": context_digest(result["context"]),
        }
    )


if __name__ == "__main__":
    main()
