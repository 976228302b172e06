"""Fail when a module of the library is below its branch-coverage floor.

`make test` runs this after `coverage combine` and `coverage report`: every module of
`shared/resumable` must reach 85 %, the core of the protocol and of the checkpoint format
95 % (CORE below). A module not listed anywhere, a new one included, gets the general
floor; a module that no longer exists is not an error. Prints each module under its floor
with its coverage and floor, and exits 1 when there is one.

    python -m tests.coverage_floor            # reads the combined data (COVERAGE_FILE)
    python -m tests.coverage_floor --json F   # reads a `coverage json` report instead
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

GENERAL = 85.0
CORE_FLOOR = 95.0
# Relative to shared/resumable. The serverless step protocol (the delivery handling, its
# state machine, the run document and its Firestore backend, the control operations, the
# function targets) and the checkpoint format (the codec both ways, the manifest). Named
# one by one: a module added later (transitions/_item.py of map steps, say) starts at the
# general floor until it is listed here.
CORE = (
    "serverless/_worker*.py",
    "serverless/_control.py",
    "serverless/transitions/__init__.py",
    "serverless/transitions/_rules.py",
    "serverless/transitions/_attempt.py",
    "serverless/transitions/_run.py",
    "serverless/entrypoints.py",
    "serverless/_firestore.py",
    "serverless/_run_state.py",
    "checkpoint/_codec.py",
    "checkpoint/_decoder.py",
    "checkpoint/_manifest.py",
)
PACKAGE = "resumable"


def floor_of(module: str) -> float:
    """The floor of a module path relative to the package root (``a/b.py``)."""
    if any(fnmatch.fnmatchcase(module, pattern) for pattern in CORE):
        return CORE_FLOOR
    return GENERAL


def module_name(path: str) -> str | None:
    """``serverless/_worker.py`` for ``…/shared/resumable/serverless/_worker.py``; ``None``
    for a file outside the package."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if PACKAGE not in parts:
        return None
    index = len(parts) - 1 - parts[::-1].index(PACKAGE)
    rest = parts[index + 1 :]
    return "/".join(rest) if rest else None


def shortfalls(report: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    """(module, percent covered, floor) of each module of a `coverage json` report under
    its floor, sorted by module."""
    found = []
    for path, data in report.get("files", {}).items():
        module = module_name(path)
        if module is None:
            continue
        summary = data["summary"]
        if summary.get("num_statements", 0) + summary.get("num_branches", 0) == 0:
            continue
        percent = float(summary["percent_covered"])
        floor = floor_of(module)
        if percent < floor:
            found.append((module, percent, floor))
    return sorted(found)


def unmatched_core(report: Mapping[str, Any]) -> list[str]:
    """Core patterns that match no measured module (renamed or moved: update CORE)."""
    modules = [m for m in map(module_name, report.get("files", {})) if m is not None]
    return [p for p in CORE if not any(fnmatch.fnmatchcase(m, p) for m in modules)]


def _combined_report() -> dict[str, Any]:
    import coverage

    cov = coverage.Coverage()
    cov.load()
    with tempfile.TemporaryDirectory(prefix="coverage-floor-") as folder:
        out = Path(folder) / "coverage.json"
        cov.json_report(outfile=str(out))
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="a `coverage json` report to check")
    args = parser.parse_args(list(argv) if argv is not None else None)
    report = json.loads(args.json.read_text()) if args.json else _combined_report()
    if not any(module_name(p) for p in report.get("files", {})):
        print("coverage floor: no module of the library was measured", file=sys.stderr)
        return 1
    status = 0
    for pattern in unmatched_core(report):
        print(f"coverage floor: core pattern {pattern!r} matches no module", file=sys.stderr)
        status = 1
    below = shortfalls(report)
    if below:
        print(f"coverage floor: {len(below)} module(s) under their floor:", file=sys.stderr)
        for module, percent, floor in below:
            print(f"  {module:<40} {percent:6.2f}% < {floor:.0f}%", file=sys.stderr)
        status = 1
    elif status == 0:
        print(
            f"coverage floor: every module ≥ {GENERAL:.0f}%, the core ≥ {CORE_FLOOR:.0f}%",
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
