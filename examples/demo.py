"""The resumable demo: kill a pipeline run with SIGKILL mid-step, then resume it.

1. start the quickstart pipeline with ``resumable run`` in a new process;
2. while its ``detect`` step is running, kill the process with SIGKILL (no cleanup, no
   last checkpoint: what a crash, an OOM kill or a preempted machine does);
3. show what the run's checkpoint holds;
4. resume the run with ``--run-id ID --resume`` in another new process: finished steps
   are skipped, ``detect`` continues from the frames it had saved;
5. compare the final context with an uninterrupted run's: it must be identical.

Run with ``make demo``. Exits non-zero if anything is off.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from quickstart import QuickstartPipeline

ROOT = Path(__file__).resolve().parent.parent
TARGET = "examples/quickstart.py:QuickstartPipeline"
PARAMS = ["--param", "frames=40", "--param", "seconds_per_frame=0.05"]
KILL_AFTER_PROGRESS_SAVES = 2
DEADLINE_SECONDS = 60


class DemoFailed(Exception):
    pass


def main() -> int:
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="resumable-demo-"))
    storage = workdir / "checkpoints"
    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    try:
        print("resumable demo: a pipeline run killed with SIGKILL, then resumed\n")
        print(f"  pipeline  {TARGET}  (synthesize → detect → crop → augment → split)")
        print(f"  storage   {storage}")
        print(f"  run id    {run_id}")
        killed_in = start_and_kill(storage, run_id)
        show_checkpoint(storage, run_id, killed_in)
        result = resume(storage, run_id)
        compare(storage, run_id, result)
    except DemoFailed as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ndemo finished in {time.monotonic() - began:.1f}s")
    return 0


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "resumable.cli", "run", TARGET, *args]


def show_command(command: list[str]) -> None:
    print("\n  $ resumable run " + " ".join(command[4:]))


def heading(text: str) -> None:
    print(f"\n── {text} " + "─" * max(0, 70 - len(text)))


def start_and_kill(storage: Path, run_id: str) -> str:
    heading("1. Start the run, then kill it with SIGKILL in the middle of a step")
    command = cli("--storage", str(storage), "--run-id", run_id, *PARAMS)
    show_command(command)
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    watchdog = threading.Timer(DEADLINE_SECONDS, process.kill)
    watchdog.start()
    saves, running, killed_in = 0, "", ""
    try:
        assert process.stdout is not None
        for line in process.stdout:
            print("  │ " + line.rstrip())
            if " started (attempt" in line:
                running = line.split()[1]
            if running == "detect" and "progress checkpoint" in line:
                saves += 1
            if saves == KILL_AFTER_PROGRESS_SAVES and not killed_in:
                os.kill(process.pid, signal.SIGKILL)
                killed_in = running
                print(f"  ✂ SIGKILL sent to process {process.pid} while step {running!r} runs")
        code = process.wait()
    finally:
        watchdog.cancel()
    if not killed_in:
        raise DemoFailed(f"the run ended (exit {code}) before detect saved progress twice")
    if code != -signal.SIGKILL:
        raise DemoFailed(f"expected the process to die of SIGKILL, got exit code {code}")
    return killed_in


def show_checkpoint(storage: Path, run_id: str, killed_in: str) -> None:
    heading("2. What the checkpoint holds after the kill")
    pipeline = QuickstartPipeline(storage=storage, run_guid=run_id)
    loaded = pipeline.load_checkpoint()
    if loaded is None:
        raise DemoFailed("the killed run left no checkpoint")
    manifest, context = loaded.manifest, loaded.context
    folder = storage / "runs" / manifest.tenant_id / manifest.pipeline_name / run_id
    blobs = list((folder / "blobs").iterdir())
    print(f"  {folder}")
    print(f"    .checkpoint.json   checkpoint #{manifest.sequence}, status {manifest.status!r}")
    print(f"    checkpoints/       {len(list((folder / 'checkpoints').iterdir()))} manifests")
    print(
        f"    blobs/             {len(blobs)} content-addressed blob(s), "
        f"{sum(b.stat().st_size for b in blobs) / 1024:.1f} KB"
    )
    print(f"  completed steps      {', '.join(manifest.completed_steps) or '(none)'}")
    frames_done = len(context.get("detections", []))
    print(f"  {killed_in} progress      {frames_done} of {len(context['frames'])} frames")
    if manifest.completed_steps != ["synthesize"] or frames_done == 0:
        raise DemoFailed("expected synthesize completed and detect's progress saved")


def resume(storage: Path, run_id: str) -> dict[str, Any]:
    heading("3. Resume the run in a new process")
    command = cli("--storage", str(storage), "--run-id", run_id, "--resume", "--keep", "--json")
    show_command(command)
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        for line in process.stderr:  # with --json, progress goes to stderr
            print("  │ " + line.rstrip())
        code = process.wait(timeout=DEADLINE_SECONDS)
        out.seek(0)
        text = out.read()
    try:
        result: dict[str, Any] = json.loads(text)
    except ValueError:
        raise DemoFailed(f"--json did not print one JSON object: {text[:200]!r}") from None
    print(
        f"  result: {result['status']}; ran {', '.join(result['steps_completed'])}; "
        f"skipped {', '.join(result['steps_skipped'])}"
    )
    print(f"  detect attempts: {result['steps']['detect']['attempts']} (1 killed, 1 resumed)")
    if code != 0 or result["status"] != "completed":
        raise DemoFailed(f"the resumed run ended {result['status']!r} (exit {code})")
    if result["steps_skipped"] != ["synthesize"] or "synthesize" in result["steps_completed"]:
        raise DemoFailed("the resumed run did not skip exactly the completed step")
    return result


def compare(storage: Path, run_id: str, result: dict[str, Any]) -> None:
    heading("4. Compare with an uninterrupted run")
    loaded = QuickstartPipeline(storage=storage, run_guid=run_id).load_checkpoint()
    if loaded is None or loaded.manifest.status != "completed":
        raise DemoFailed("the resumed run's final checkpoint (kept by --keep) is missing")
    resumed = loaded.context
    print("  running the same pipeline uninterrupted, in-process (Pipeline.run)...")
    params = {"frames": 40, "seconds_per_frame": 0.05}
    reference = QuickstartPipeline(storage="memory://demo-reference").run(params)["context"]
    summary = resumed["summary"]
    print(f"  final context keys   {', '.join(sorted(resumed))}")
    print(
        f"  dataset              {summary['blobs']} patches → {summary['train_samples']} train"
        f" / {summary['val_samples']} validation samples"
    )
    difference = first_difference(resumed, reference)
    print(f"  identical: {'yes' if difference is None else 'NO'}")
    if difference is not None:
        raise DemoFailed(f"the resumed run's context differs from the reference at {difference}")


def first_difference(a: Any, b: Any, path: str = "context") -> str | None:
    """Where ``a`` and ``b`` differ (type, dtype, shape or value), or ``None``."""
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, np.ndarray):
        same = a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        return None if same else f"{path}: arrays differ"
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a.keys() ^ b.keys())}"
        found = (first_difference(a[k], b[k], f"{path}[{k!r}]") for k in a)
        return next((d for d in found if d is not None), None)
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            return f"{path}: lengths {len(a)} vs {len(b)}"
        found = (
            first_difference(x, y, f"{path}[{i}]")
            for i, (x, y) in enumerate(zip(a, b, strict=True))
        )
        return next((d for d in found if d is not None), None)
    return None if a == b else f"{path}: {a!r} vs {b!r}"


if __name__ == "__main__":
    sys.exit(main())
