"""Where resumable's time goes on W1: wall time per library function, per run and per load.

    .venv/bin/python benchmarks/w1_profile.py [--reps N] [--cprofile]

Wraps a few internal functions of ``resumable`` with timers (so it follows the library's
internals and may need updating when they change), runs W1 ``--reps`` times and loads the
latest checkpoint as many times, and prints milliseconds per run / per load. Timers nest:
a line includes the lines indented below it. ``--cprofile`` prints cProfile's top
functions as well (cProfile inflates Python-heavy code, the timers do not).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from w1_floors import RawIncrementalCheckpointer
from w1_resumable import latest_checkpoint_files, make_pipeline
from w1_workload import W1Config, initial_context, make_steps, run_steps

import resumable.checkpoint._blobs as blobs_module
import resumable.checkpoint._reuse as reuse_module
import resumable.checkpoint._store as checkpoint_module
import resumable.local._run_context as run_context_module
import resumable.local._runner as runner_module
import resumable.storage.local as local_module

TOTALS: defaultdict[str, float] = defaultdict(float)
CALLS: defaultdict[str, int] = defaultdict(int)

# (owner, attribute, label), printed in this order; the indentation shows nesting.
WRITE_TIMERS: list[tuple[Any, str, str]] = [
    (run_context_module.RunContext, "_encode", "RunContext._encode (a step's commit)"),
    (reuse_module.EntryCache, "start", "  EntryCache.start (walk the witnesses)"),
    (reuse_module.EntryCache, "finish", "  EntryCache.finish (wait for their hashes)"),
    (blobs_module.BlobStore, "wait", "  BlobStore.wait (for background writes)"),
    (checkpoint_module.CheckpointStore, "save_entries", "CheckpointStore.save_entries"),
    (blobs_module.BlobStore, "put", "    BlobStore.put"),
    (blobs_module, "fingerprint_of", "      fingerprint_of (xxh3)"),
    (blobs_module, "address_of", "      address_of (blake3)"),
    (blobs_module.BlobStore, "_compress", "      BlobStore._compress"),
    (None, "", "      LocalStore.write (blobs)"),
    (checkpoint_module, "dump_manifest", "  dump_manifest"),
    (None, "", "  LocalStore.write (manifests)"),
    (runner_module.InProcessRun, "_finish", "InProcessRun._finish (final checkpoint)"),
    (None, "", "(all writes) os.fsync, files + directories"),
    (None, "", "(all writes) directory fsync"),
]
LOAD_TIMERS: list[tuple[Any, str, str]] = [
    (checkpoint_module.CheckpointStore, "load_latest", "CheckpointStore.load_latest"),
    (checkpoint_module, "parse_manifest", "  parse_manifest"),
    (checkpoint_module, "decode_context", "  decode_context"),
    (blobs_module.BlobStore, "get", "    BlobStore.get"),
    (local_module.LocalStore, "read_buffer", "      LocalStore.read_buffer"),
    (blobs_module, "address_of", "      address_of (blake3 verify)"),
    (blobs_module, "fingerprint_of", "      fingerprint_of (xxh3)"),
]


def _timer(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TOTALS[label] += time.perf_counter() - began
            CALLS[label] += 1

    return timed


def _install(timers: list[tuple[Any, str, str]]) -> Callable[[], None]:
    timers = [t for t in timers if t[0] is not None]  # the others are set up elsewhere
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in timers]
    for owner, name, label in timers:
        setattr(owner, name, _timer(label, getattr(owner, name)))

    def restore() -> None:
        for owner, name, original in originals:
            setattr(owner, name, original)

    return restore


def _install_store_timers() -> Callable[[], None]:
    """LocalStore.write split into blobs and manifests; file and directory fsyncs."""
    write = local_module.LocalStore.write
    fsync_dir = local_module.LocalStore._fsync_dir
    fsync = os.fsync

    def timed_write(self: Any, name: str, data: Any, **kwargs: Any) -> int:
        kind = "blobs" if "/blobs/" in name else "manifests"
        label = f"{'      ' if kind == 'blobs' else '  '}LocalStore.write ({kind})"
        return int(_timer(label, write)(self, name, data, **kwargs))

    store = local_module.LocalStore
    setattr(store, "write", timed_write)  # noqa: B010
    setattr(store, "_fsync_dir", staticmethod(_timer("(all writes) directory fsync", fsync_dir)))  # noqa: B010
    setattr(os, "fsync", _timer("(all writes) os.fsync, files + directories", fsync))  # noqa: B010

    def restore() -> None:
        setattr(store, "write", write)  # noqa: B010
        setattr(store, "_fsync_dir", staticmethod(fsync_dir))  # noqa: B010
        setattr(os, "fsync", fsync)  # noqa: B010

    return restore


def _report(title: str, unit: str, count: int, wall: list[float], order: list[str]) -> None:
    print(f"{title}: median {statistics.median(wall) * 1000:.1f} ms; per {unit}:")
    for label in order:
        if label in TOTALS:
            total, calls = TOTALS[label] * 1000 / count, CALLS[label] / count
            print(f"  {label:<52} {total:8.1f} ms  {calls:6.0f} calls")
    TOTALS.clear()
    CALLS.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    config = W1Config()
    scratch = Path(__file__).resolve().parent / ".bench-tmp"
    scratch.mkdir(exist_ok=True)
    storage = Path(tempfile.mkdtemp(prefix="w1-profile-", dir=scratch))
    profiler = cProfile.Profile() if args.cprofile else None
    try:
        make_pipeline(config, storage, "warm-up").run(initial_context(config))
        plain, floor_c = [], []
        for rep in range(args.reps):
            gc.collect()
            began = time.perf_counter()
            run_steps(config)
            plain.append(time.perf_counter() - began)
            writer = RawIncrementalCheckpointer(storage / f"c-{rep}")
            gc.collect()
            began = time.perf_counter()
            context = initial_context(config)
            for _name, step in make_steps(config):
                updates = step(context)
                context.update(updates)
                writer.after_step(context, updates)
            floor_c.append(time.perf_counter() - began)
        print(f"A (steps alone): median {statistics.median(plain) * 1000:.1f} ms")
        print(f"C (raw incremental): median {statistics.median(floor_c) * 1000:.1f} ms")

        restore = [_install(WRITE_TIMERS), _install_store_timers()]
        wall = []
        for rep in range(args.reps):
            pipeline = make_pipeline(config, storage, f"run-{rep}")
            gc.collect()
            if profiler:
                profiler.enable()
            began = time.perf_counter()
            pipeline.run(initial_context(config))
            wall.append(time.perf_counter() - began)
            if profiler:
                profiler.disable()
        for undo in restore:
            undo()
        _report("resumable run", "run", args.reps, wall, [t[2] for t in WRITE_TIMERS])

        run_id = f"run-{args.reps - 1}"
        files = latest_checkpoint_files(storage, run_id)
        for _ in range(2):  # warm the page cache
            make_pipeline(config, storage, run_id).load_checkpoint()
        raw = []
        for _ in range(args.reps):
            gc.collect()
            began = time.perf_counter()
            kept = [path.read_bytes() for path in files]
            raw.append(time.perf_counter() - began)
            del kept
        print(f"raw read of the same files: median {statistics.median(raw) * 1000:.1f} ms")
        restore = [_install(LOAD_TIMERS)]
        wall = []
        for _ in range(args.reps):
            gc.collect()
            began = time.perf_counter()
            loaded = make_pipeline(config, storage, run_id).load_checkpoint()
            wall.append(time.perf_counter() - began)
            del loaded
        for undo in restore:
            undo()
        _report("Pipeline.load_checkpoint()", "load", args.reps, wall, [t[2] for t in LOAD_TIMERS])
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    finally:
        shutil.rmtree(storage, ignore_errors=True)


if __name__ == "__main__":
    main()
