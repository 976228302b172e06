"""Benchmark W1 (bench-workloads.md) in-process on local folder storage.

Prints resumable's figures beside floor A (no checkpoint), floor B (naive full JSON,
measured on W1 scaled down and extrapolated linearly), floor C (raw incremental writes)
and the peers DBOS Transact and Prefect 3 (separate venv, subprocesses), then the ratios
and the targets, met or not.

    .venv/bin/python benchmarks/w1_inprocess.py            # full: ~10 minutes
    .venv/bin/python benchmarks/w1_inprocess.py --quick    # A, C, resumable; ~1 minute
    .venv/bin/python benchmarks/w1_inprocess.py --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import median, parse_result, write_syscall_bytes
from w1_checkpoints import witness_passes
from w1_floors import (
    B_DURABILITY,
    C_DURABILITY,
    NaiveJsonCheckpointer,
    RawIncrementalCheckpointer,
    load_naive_json,
    load_raw_incremental,
)
from w1_peers import (
    DEFAULT_VENV,
    RESUMED_STEPS,
    PeerUnavailableError,
    ensure_peers_venv,
    measure_peer,
)
from w1_results import (
    MethodResult,
    evaluate_targets,
    format_table,
    format_targets,
)
from w1_resumable import TRUST_ENV, make_pipeline
from w1_workload import (
    CRASH_EXIT_CODE,
    CRASH_STEP,
    Context,
    W1Config,
    array_bytes,
    context_digest,
    initial_context,
    make_steps,
    run_steps,
)

import resumable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_TMP = HERE / ".bench-tmp"

Checkpointer = Callable[[Context, Context], None]  # (context, the step's updates)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    began = time.perf_counter()
    value = function()
    return time.perf_counter() - began, value


def run_with(config: W1Config, after_step: Checkpointer, steps: range | None = None) -> Context:
    """W1's steps, calling ``after_step`` after each (a floor's checkpoint)."""
    context = initial_context(config)
    chosen = make_steps(config)
    for index, (_name, step) in enumerate(chosen):
        if steps is not None and index not in steps:
            continue
        updates = step(context)
        context.update(updates)
        after_step(context, updates)
    return context


def resume_with(
    config: W1Config, context: Context, after_step: Checkpointer, first: int
) -> Context:
    """Run the steps from index ``first`` on, on a loaded context."""
    for _name, step in make_steps(config)[first:]:
        updates = step(context)
        context.update(updates)
        after_step(context, updates)
    return context


# -- A, C and resumable: interleaved repetitions ------------------------------------------


def time_resumable_now(
    config: W1Config, workdir: Path, reps: int, tag: str
) -> tuple[list[float], list[float]]:
    """A and resumable, interleaved, now: (A totals, resumable totals).

    The machine's load drifts over minutes, so a peer is compared with resumable runs
    made just before and just after it, not with those at the start of the benchmark.
    """
    plain, ours = [], []
    for rep in range(reps):
        plain.append(timed(partial(run_steps, config))[0])
        pipeline = make_pipeline(config, workdir / "resumable-beside", f"{tag}-{rep}")
        ours.append(timed(partial(pipeline.run, initial_context(config)))[0])
    return plain, ours


def measure_fast_methods(
    config: W1Config, workdir: Path, reps: int, load_reps: int, reference: str
) -> tuple[dict[str, MethodResult], float, dict[str, Any]]:
    """A, C and resumable, repetitions interleaved so that drift hits all three alike.

    Returns the results, the raw-read time of resumable's latest checkpoint, and details.
    """
    samples: dict[str, dict[str, list[float]]] = {
        k: {"total": [], "bytes": [], "wchar": []} for k in ("A", "C", "resumable")
    }
    for rep in range(reps):
        seconds, _ = timed(partial(run_steps, config))
        samples["A"]["total"].append(seconds)

        folder = workdir / "c" / f"run-{rep}"
        writer = RawIncrementalCheckpointer(folder)
        before = write_syscall_bytes()
        seconds, context = timed(partial(run_with, config, writer.after_step))
        samples["C"]["total"].append(seconds)
        samples["C"]["bytes"].append(writer.bytes_written)
        samples["C"]["wchar"].append(write_syscall_bytes() - before)
        if rep == 0 and context_digest(context) != reference:
            raise RuntimeError("floor C changed the context")

        pipeline = make_pipeline(config, workdir / "resumable", f"bench-{rep}")
        before = write_syscall_bytes()
        seconds, result = timed(partial(pipeline.run, initial_context(config)))
        if result["status"] != "completed":
            raise RuntimeError(f"resumable run failed: {result['errors']}")
        samples["resumable"]["total"].append(seconds)
        samples["resumable"]["bytes"].append(pipeline.storage.stats.bytes_written)
        samples["resumable"]["wchar"].append(write_syscall_bytes() - before)
        del context, result
        log(
            f"  rep {rep + 1}/{reps}: A {samples['A']['total'][-1]:.3f} s, "
            f"C {samples['C']['total'][-1]:.3f} s, "
            f"resumable {samples['resumable']['total'][-1]:.3f} s"
        )

    a_total = median(samples["A"]["total"])
    results = {
        "A": MethodResult("A", "A  no checkpoint", total_s=a_total, baseline_s=a_total),
        "C": MethodResult(
            "C",
            "C  raw incremental",
            total_s=median(samples["C"]["total"]),
            baseline_s=a_total,
            bytes_written=median(samples["C"]["bytes"]),
        ),
        "resumable": MethodResult(
            "resumable",
            "resumable",
            total_s=median(samples["resumable"]["total"]),
            baseline_s=a_total,
            bytes_written=median(samples["resumable"]["bytes"]),
        ),
    }
    for key, values in samples.items():
        results[key].samples.update(values)
    for key, values in samples.items():
        totals = values["total"]
        results[key].notes.append(
            f"spread of the {reps} runs: min {min(totals):.3f} s, max {max(totals):.3f} s"
        )
    results["A"].bytes_written = 0
    results["A"].resume_s = a_total
    results["A"].notes.append("resume = re-running all 10 steps (nothing was kept)")
    results["C"].notes.append(f"durability: {C_DURABILITY}")
    results["C"].notes.append("one file per changed top-level key: raw array bytes + JSON")
    results["resumable"].notes.append(
        "durability: LocalStore durable=True (temp file, fsync, rename, directory fsync); "
        "bytes written = storage.stats.bytes_written; cleanup_on_success=False"
    )

    # Loads, in a fresh process as after a crash: resumable's latest checkpoint, a raw read
    # of the same files (manifest + referenced blobs), and floor C's files.
    last = reps - 1
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "w1_resumable.py"),
            "load",
            "--storage",
            str(workdir / "resumable"),
            "--run-id",
            f"bench-{last}",
            "--c-folder",
            str(workdir / "c" / f"run-{last}"),
            "--reps",
            str(load_reps),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    loads = parse_result(done.stdout)
    if done.returncode != 0 or loads is None:
        raise RuntimeError(f"load measurement failed: {done.stderr[-800:]}")
    if loads["digest"] != reference:
        raise RuntimeError("resumable's latest checkpoint does not load the run's context")
    results["C"].load_s = median(loads["load_c"])
    results["resumable"].load_s = median(loads["load"])
    raw_read_s = median(loads["raw_read"])
    results["resumable"].samples.update({"load": loads["load"], "raw_read": loads["raw_read"]})
    results["C"].samples["load"] = loads["load_c"]
    results["resumable"].notes.append(
        f"load = Pipeline.load_checkpoint(), warm, in a fresh process; raw read of the same "
        f"{loads['files']} files ({loads['bytes'] / 1e6:.1f} MB: manifest + referenced blobs) "
        f"= {raw_read_s:.4f} s"
    )
    raw_bytes, files = loads["bytes"], loads["files"]
    return results, raw_read_s, {"raw_read_bytes": raw_bytes, "raw_read_files": files}


# -- resume after a crash in step 8 --------------------------------------------------------


def measure_resumable_resume(workdir: Path, reps: int, reference: str) -> list[float]:
    """Crash a run in step 8 with os._exit in a subprocess, then time the resume in another."""
    driver = HERE / "w1_resumable.py"
    storage = workdir / "resumable-crash"
    seconds: list[float] = []
    for rep in range(reps):
        args = ["--storage", str(storage), "--run-id", f"crash-{rep}"]
        crashed = subprocess.run(
            [sys.executable, str(driver), "crash", *args], capture_output=True, text=True
        )
        if crashed.returncode != CRASH_EXIT_CODE:
            raise RuntimeError(f"crash run exited {crashed.returncode}: {crashed.stderr[-500:]}")
        resumed = subprocess.run(
            [sys.executable, str(driver), "resume", *args], capture_output=True, text=True
        )
        result = parse_result(resumed.stdout)
        if resumed.returncode != 0 or result is None:
            raise RuntimeError(f"resume exited {resumed.returncode}: {resumed.stderr[-500:]}")
        if result["steps_run"] != RESUMED_STEPS or result["digest"] != reference:
            raise RuntimeError(f"resume did not continue correctly: {result}")
        seconds.append(float(result["seconds"]))
    return seconds


def measure_c_resume(
    config: W1Config, workdir: Path, reps: int, reference: str
) -> tuple[list[float], list[float]]:
    """Floor C: steps 1-7 checkpointed, then load every key file and run steps 8-10 —
    in a fresh process, as resumable's resume is timed (the first list), and in this
    warm process right after the writes (the second, the figure before 2026-12-01)."""
    first = [name for name, _ in make_steps(config)].index(CRASH_STEP)
    fresh: list[float] = []
    warm: list[float] = []
    for rep in range(reps):
        for kind in ("fresh", "warm"):
            folder = workdir / "c-crash" / f"run-{rep}-{kind}"
            writer = RawIncrementalCheckpointer(folder)
            run_with(config, writer.after_step, steps=range(first))
            if kind == "fresh":
                resumed = subprocess.run(
                    [sys.executable, str(HERE / "w1_c_resume.py"), "--folder", str(folder)],
                    capture_output=True,
                    text=True,
                )
                result = parse_result(resumed.stdout)
                if resumed.returncode != 0 or result is None:
                    raise RuntimeError(f"C resume exited {resumed.returncode}: {resumed.stderr}")
                took, digest = float(result["seconds"]), result["digest"]
            else:

                def resume(folder: Path) -> Context:
                    context = {**initial_context(config), **load_raw_incremental(folder)}
                    resumer = RawIncrementalCheckpointer(folder)
                    return resume_with(config, context, resumer.after_step, first)

                took, context = timed(partial(resume, folder))
                digest = context_digest(context)
            if digest != reference:
                raise RuntimeError("floor C resumed to a different context")
            (fresh if kind == "fresh" else warm).append(took)
    return fresh, warm


# -- B, scaled down ----------------------------------------------------------------------


def measure_b(
    full: W1Config, denominator: int, workdir: Path, reps: int, a_full: float
) -> MethodResult:
    """Floor B on W1 scaled to 1/denominator, extrapolated linearly to full W1."""
    scaled = W1Config.scaled(denominator)
    factor = array_bytes(run_steps(full)) / array_bytes(run_steps(scaled))
    first = [name for name, _ in make_steps(scaled)].index(CRASH_STEP)
    plain, totals, written, loads, resumes = [], [], [], [], []
    for rep in range(reps):
        plain.append(timed(partial(run_steps, scaled))[0])
        writer = NaiveJsonCheckpointer(workdir / "b" / f"run-{rep}.json")
        took, _ = timed(partial(run_with, scaled, writer.after_step))
        totals.append(took)
        written.append(writer.bytes_written)
        loads.append(timed(partial(load_naive_json, writer.path))[0])

        crashed = NaiveJsonCheckpointer(workdir / "b" / f"crash-{rep}.json")
        run_with(scaled, crashed.after_step, steps=range(first))

        def resume(checkpointer: NaiveJsonCheckpointer) -> Context:
            context = load_naive_json(checkpointer.path)
            return resume_with(scaled, context, checkpointer.after_step, first)

        resumes.append(timed(partial(resume, crashed))[0])
        log(f"  B rep {rep + 1}/{reps}: {took:.1f} s at scale 1/{denominator}")
    overhead = (median(totals) - median(plain)) * factor
    result = MethodResult(
        "B",
        "B  naive full JSON",
        total_s=a_full + overhead,
        baseline_s=a_full,
        bytes_written=median(written) * factor,
        load_s=median(loads) * factor,
        resume_s=median(resumes) * factor,
        extrapolated=True,
        samples={
            "scale": scaled.scale_label,
            "factor": factor,
            "scaled_total": totals,
            "scaled_plain": plain,
            "scaled_bytes": written,
            "scaled_load": loads,
            "scaled_resume": resumes,
        },
    )
    result.notes.append(
        f"~ = EXTRAPOLATED: measured at scale {scaled.scale_label} ({scaled.describe()}), "
        f"then x{factor:.2f} (ratio of array bytes) linearly; measured: total "
        f"{median(totals):.2f} s (A there {median(plain):.3f} s), "
        f"{median(written) / 1e6:.0f} MB written"
    )
    result.notes.append(f"durability: {B_DURABILITY}; load = json.loads (arrays stay lists)")
    return result


# -- the run -----------------------------------------------------------------------------


def versions() -> dict[str, str]:
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "python": platform.python_version(),
        "numpy": version("numpy"),
        "resumable": f"{resumable.__version__}" + (f" (git {commit})" if commit else ""),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
    }


def filesystem_of(path: Path) -> str:
    best = ("?", "?", "")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            if str(path).startswith(mount) and len(mount) >= len(best[2]):
                best = (device, kind, mount)
    except OSError:
        pass
    return f"{best[0]} ({best[1]}, mounted at {best[2]})"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions; skip B, peers")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--reps", type=int, help="repetitions of A, C, resumable (default 7)")
    parser.add_argument("--b-scale", type=int, default=10, help="run B at 1/N scale (10)")
    parser.add_argument("--b-reps", type=int, default=3)
    parser.add_argument("--peer-reps", type=int, default=3)
    parser.add_argument(
        "--resume-reps",
        type=int,
        help="crash/resume cycles of C and resumable (default 9, 3 with --quick; a resume's "
        "fsyncs wait for whatever else the file system is committing, so single resumes "
        "spread 1-4x); the peers' follow --peer-reps",
    )
    parser.add_argument("--skip-b", action="store_true")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument(
        "--peers-venv",
        type=Path,
        default=Path(os.environ.get("W1_PEERS_VENV", DEFAULT_VENV)),
        help="venv for the peers, created if missing (default benchmarks/.peers-venv)",
    )
    parser.add_argument(
        "--tmp-dir",
        type=Path,
        default=DEFAULT_TMP,
        help="where runs write; use a real disk, not tmpfs (default benchmarks/.bench-tmp)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the runs' files")
    parser.add_argument(
        "--trust-returned-keys",
        action="store_true",
        help="resumable with detect_in_place_changes=False (keys a step did not return or "
        "rebind keep their previous encoding)",
    )
    args = parser.parse_args()
    args.reps = args.reps or (3 if args.quick else 7)
    args.resume_reps = args.resume_reps or (3 if args.quick else 9)
    args.load_reps = 5 if args.quick else 9
    if args.quick:
        args.skip_b = args.skip_peers = True
    if min(args.reps, args.b_reps, args.peer_reps, args.resume_reps) < 3:
        parser.error("every repetition count must be at least 3 (the figures are medians)")
    return args


def main() -> None:
    args = parse_args()
    if args.trust_returned_keys:
        os.environ[TRUST_ENV] = "1"
    config = W1Config()
    args.tmp_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="w1-", dir=args.tmp_dir))
    info = versions()
    reference_context = run_steps(config)
    reference = context_digest(reference_context)
    context_mb = array_bytes(reference_context) / 1e6
    del reference_context
    try:
        log(f"W1 in-process, {args.reps} repetitions, work folder {workdir}")
        log("A, C, resumable ...")
        results, raw_read_s, load_info = measure_fast_methods(
            config, workdir, args.reps, args.load_reps, reference
        )
        log("crash in step 8 and resume: C, resumable ...")
        c_fresh, c_warm = measure_c_resume(config, workdir, args.resume_reps, reference)
        results["C"].resume_s = median(c_fresh)
        results["C"].samples["resume"] = c_fresh
        results["C"].samples["resume_warm"] = c_warm
        results["C"].notes.append(
            f"resume = load + steps 8-10 in a new process, as resumable's "
            f"(in this warm process right after the writes: {median(c_warm):.3f} s)"
        )
        resumable_resumes = measure_resumable_resume(workdir, args.resume_reps, reference)
        results["resumable"].resume_s = median(resumable_resumes)
        results["resumable"].samples["resume"] = resumable_resumes
        results["resumable"].notes.append(
            "resume = Pipeline.run(resume_from_checkpoint=True) in a new process after "
            "os._exit in step 8 (process start and imports not timed)"
        )
        ordered = [results["A"]]
        a_full = results["A"].total_s or 0.0
        why = "skipped (--quick)" if args.quick else None
        if args.skip_b:
            ordered.append(
                MethodResult("B", "B  naive full JSON", False, why or "skipped (--skip-b)")
            )
        else:
            log(f"B at scale 1/{args.b_scale} (slow) ...")
            ordered.append(measure_b(config, args.b_scale, workdir, args.b_reps, a_full))
        ordered += [results["C"], results["resumable"]]
        if args.skip_peers:
            for key, label in (("dbos", "DBOS Transact (SQLite)"), ("prefect", "Prefect 3")):
                ordered.append(MethodResult(key, label, False, why or "skipped (--skip-peers)"))
        else:
            try:
                python = ensure_peers_venv(args.peers_venv, log)
            except PeerUnavailableError as exc:
                python = None
                reason = str(exc)
            for key in ("dbos", "prefect"):
                if python is None:
                    label = {"dbos": "DBOS Transact (SQLite)", "prefect": "Prefect 3"}[key]
                    ordered.append(MethodResult(key, label, False, reason))
                    continue
                log(f"{key} (subprocesses of {args.peers_venv}) ...")
                plain, ours = time_resumable_now(config, workdir, args.reps, f"{key}-before")
                peer = measure_peer(
                    key,
                    python,
                    workdir,
                    reps=args.peer_reps,
                    load_reps=args.load_reps,
                    resume_reps=args.peer_reps,
                    reference_digest=reference,
                )
                after = time_resumable_now(config, workdir, args.reps, f"{key}-after")
                plain, ours = plain + after[0], ours + after[1]
                beside = median(ours) - median(plain)
                peer.samples["resumable_beside"] = {"plain": plain, "total": ours}
                peer.samples["resumable_overhead_beside"] = beside
                if peer.available:
                    peer.notes.append(
                        f"compared with resumable re-measured just before and after it "
                        f"({len(ours)} runs): overhead {beside:.3f} s"
                    )
                ordered.append(peer)
        by_key = {r.key: r for r in ordered}
        ratios, targets = evaluate_targets(by_key, raw_read_s)
        witness_s = sum(witness_passes(config))
        ratios.append(exactness_floor_ratio(results, witness_s))
        report(args, config, info, context_mb, workdir, ordered, ratios, targets)
        if args.json:
            document = {
                "workload": "W1",
                "config": config.describe(),
                "context_array_mb": context_mb,
                "versions": info
                | {k: v for r in ordered for k, v in r.samples.get("versions", {}).items()},
                "repetitions": {
                    "fast": args.reps,
                    "b": args.b_reps,
                    "peers": args.peer_reps,
                    "resume": args.resume_reps,
                    "load": args.load_reps,
                },
                "storage": filesystem_of(workdir),
                "raw_read_seconds": raw_read_s,
                "witness_passes_seconds": witness_s,
                **load_info,
                "methods": [r.to_json() for r in ordered],
                "ratios": ratios,
                "targets": [{"target": t.text, "met": t.met, "detail": t.detail} for t in targets],
            }
            args.json.write_text(json.dumps(document, indent=2) + "\n")
            log(f"results written to {args.json}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def exactness_floor_ratio(results: dict[str, MethodResult], witness_s: float) -> str:
    """resumable's overhead against C's plus what exactness alone costs: the witness pass
    (walk + XXH3 of every writeable array, ``w1_checkpoints.py``) on each step's context,
    warm. Information for reading the C target, not a target."""
    c_overhead = results["C"].overhead_s
    ours = results["resumable"].overhead_s
    if c_overhead is None or ours is None:
        return "resumable overhead / (C overhead + exact witness passes) = n/a"
    floor = c_overhead + witness_s
    return (
        f"resumable overhead / (C overhead + exact witness passes) = {ours / floor:.2f}x "
        f"(witness passes {witness_s * 1000:.0f} ms warm; information, not a target)"
    )


def report(
    args: argparse.Namespace,
    config: W1Config,
    info: dict[str, str],
    context_mb: float,
    workdir: Path,
    ordered: list[MethodResult],
    ratios: list[str],
    targets: list[Any],
) -> None:
    peer_versions = {k: v for r in ordered for k, v in r.samples.get("versions", {}).items()}
    print(f"W1 in-process: {config.describe()}; {context_mb:.1f} MB of array data")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in {**info, **peer_versions}.items()))
    print(f"storage: {filesystem_of(workdir)}")
    print(
        f"medians of {args.reps} runs (A, C, resumable; interleaved), "
        f"{args.b_reps} (B), {args.peer_reps} (peers), {args.resume_reps} crash/resume cycles, "
        f"{args.load_reps} warm loads"
    )
    print()
    print(format_table(ordered))
    print()
    for r in ordered:
        for note in r.notes:
            print(f"  {r.label.split()[0] if len(r.key) == 1 else r.label}: {note}")
    print()
    print("ratios:")
    for line in ratios:
        print(f"  {line}")
    print()
    print("targets:")
    print(format_targets(targets))


if __name__ == "__main__":
    main()
