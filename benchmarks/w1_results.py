"""Results of the W1 benchmark: one record per method, the table, the targets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class MethodResult:
    """Medians for one method. Overheads are against ``baseline_s``, floor A measured in the
    same process as the method (the peers run in their own process, so they have their own)."""

    key: str
    label: str
    available: bool = True
    reason: str = ""
    total_s: float | None = None
    baseline_s: float | None = None
    bytes_written: float | None = None
    load_s: float | None = None
    resume_s: float | None = None
    extrapolated: bool = False
    notes: list[str] = field(default_factory=list)
    samples: dict[str, Any] = field(default_factory=dict)

    @property
    def overhead_s(self) -> float | None:
        if self.total_s is None or self.baseline_s is None:
            return None
        return self.total_s - self.baseline_s

    @property
    def ratio(self) -> float | None:
        if self.total_s is None or not self.baseline_s:
            return None
        return self.total_s / self.baseline_s

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["overhead_s"] = self.overhead_s
        data["total_over_a"] = self.ratio
        return data


@dataclass
class Target:
    text: str
    met: bool | None  # None: could not be evaluated
    detail: str


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ratio_of(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def format_table(results: list[MethodResult]) -> str:
    header = (
        "method",
        "total s",
        "overhead s",
        "total/A",
        "bytes written",
        "load latest s",
        "resume@8 s",
    )
    rows: list[tuple[str, ...]] = []
    for r in results:
        mark = "~" if r.extrapolated else ""
        if not r.available:
            rows.append((r.label, f"not available: {r.reason}", "", "", "", "", ""))
            continue
        rows.append(
            (
                r.label,
                mark + _seconds(r.total_s),
                mark + _seconds(r.overhead_s),
                mark + _ratio(r.ratio),
                mark + _bytes(r.bytes_written),
                mark + _seconds(r.load_s),
                mark + _seconds(r.resume_s),
            )
        )
    measured = [header, *(row for row in rows if not row[1].startswith("not available"))]
    widths = [max(len(row[0]) for row in [header, *rows])]
    widths += [max(len(row[i]) for row in measured) for i in range(1, 7)]
    lines = []
    for row in [header, *rows]:
        if row[1].startswith("not available"):
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]}")
            continue
        cells = [f"{row[0]:<{widths[0]}}"] + [
            f"{cell:>{width}}" for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def evaluate_targets(
    by_key: Mapping[str, MethodResult], raw_read_s: float | None
) -> tuple[list[str], list[Target]]:
    """The ratios to print against the floors, and the targets, met or not."""
    ours = by_key.get("resumable")
    ours_overhead = ours.overhead_s if ours else None
    ratios: list[str] = []
    targets: list[Target] = []

    c = by_key.get("C")
    c_ratio = _ratio_of(ours_overhead, c.overhead_s if c else None)
    ratios.append(f"resumable overhead / C overhead      = {_ratio(c_ratio)}")
    targets.append(
        Target(
            "resumable's checkpoint overhead <= 2x floor C's",
            None if c_ratio is None else c_ratio <= 2.0,
            f"{_ratio(c_ratio)} (resumable {_seconds(ours_overhead)} s, "
            f"C {_seconds(c.overhead_s if c else None)} s)",
        )
    )

    b = by_key.get("B")
    b_ratio = _ratio_of(b.overhead_s if b and b.available else None, ours_overhead)
    ratios.append(f"B overhead / resumable overhead      = {_ratio(b_ratio)}")
    targets.append(
        Target(
            ">= 20x less overhead than floor B",
            None if b_ratio is None else b_ratio >= 20.0,
            f"{_ratio(b_ratio)} less"
            + (" (B extrapolated)" if b is not None and b.extrapolated else ""),
        )
    )

    for key in ("dbos", "prefect"):
        peer = by_key.get(key)
        if peer is None:
            continue
        if not peer.available:
            targets.append(Target(f"less overhead than {peer.label}", None, f"peer {peer.reason}"))
            continue
        # Compared with resumable measured beside the peer (same machine load), if it was.
        beside: float | None = peer.samples.get("resumable_overhead_beside")
        ours_then = beside if beside is not None else ours_overhead
        peer_ratio = _ratio_of(peer.overhead_s, ours_then)
        ratios.append(
            f"{peer.label} overhead / resumable overhead = {_ratio(peer_ratio)}"
            + (" (resumable re-measured beside it)" if beside is not None else "")
        )
        met = None
        if peer.overhead_s is not None and ours_then is not None:
            met = ours_then < peer.overhead_s
        targets.append(
            Target(
                f"less overhead than {peer.label}",
                met,
                f"resumable {_seconds(ours_then)} s vs {_seconds(peer.overhead_s)} s "
                f"({_ratio(peer_ratio)})",
            )
        )

    resume_ratio = _ratio_of(ours.resume_s if ours else None, c.resume_s if c else None)
    ratios.append(f"resumable resume@8 / C resume@8      = {_ratio(resume_ratio)}")
    targets.append(
        Target(
            "resumable's resume after a crash in step 8 <= 2x floor C's",
            None if resume_ratio is None else resume_ratio <= 2.0,
            f"{_ratio(resume_ratio)} (resumable {_seconds(ours.resume_s if ours else None)} s, "
            f"C {_seconds(c.resume_s if c else None)} s)",
        )
    )

    load_ratio = _ratio_of(ours.load_s if ours else None, raw_read_s)
    ratios.append(f"resumable load / raw read same bytes = {_ratio(load_ratio)}")
    targets.append(
        Target(
            "loading the latest checkpoint <= 2x a raw read of the same bytes",
            None if load_ratio is None else load_ratio <= 2.0,
            f"{_ratio(load_ratio)} (load {_seconds(ours.load_s if ours else None)} s, "
            f"raw read {_seconds(raw_read_s)} s)",
        )
    )
    return ratios, targets


def format_targets(targets: list[Target]) -> str:
    words = {True: "MET", False: "NOT MET", None: "n/a"}
    return "\n".join(f"  [{words[t.met]:>7}] {t.text}: {t.detail}" for t in targets)
