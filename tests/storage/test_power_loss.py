"""A local folder's checkpoints survive a power loss at any point.

:mod:`tests.support.power_loss` models what a folder holds after the power goes off: only
what was fsynced (file bytes at their last fsync, folder entries at their folder's last
fsync). A run on a :class:`~resumable.storage.local.LocalStore` is cut at every one of its
mutating file-system calls in turn — a chain, two parallel branches with progress saves, a
map step whose every finished item is checkpointed —; what survived is rebuilt into a new
folder and a new ``Pipeline`` resumes it there. Each time: the run completes with exactly
the context of an uninterrupted run, no step whose commit was reported
(``checkpoint_saved``) runs again, a step resumes from at least the progress it was told was
saved, and nothing reads as damaged (``strict=True``: a damaged checkpoint would raise).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resumable import CheckpointError, Pipeline, save_progress
from resumable.checkpoint._store import CheckpointStore
from resumable.local import _map
from resumable.local._events import EventKind, RunEvent
from resumable.storage.local import LocalStore
from tests.support.power_loss import PowerCut, PowerLossDisk

RUN_ID = "power"


@dataclass
class Journal:
    """What one process's steps did."""

    calls: list[str] = field(default_factory=list)
    began_at: list[int] = field(default_factory=list)  # the item each ``count`` call began at
    saved: list[int] = field(default_factory=list)  # items in each save reported kept


def _frames(journal: Journal) -> Any:
    def frames(context: dict[str, Any]) -> dict[str, Any]:
        journal.calls.append("frames")
        return {"frames": [np.full((64, 64, 3), i, dtype=np.uint8) for i in range(3)]}

    return frames


def _brighten(journal: Journal) -> Any:
    def brighten(context: dict[str, Any]) -> dict[str, Any]:
        journal.calls.append("brighten")
        context["frames"][1] += 1  # in place, not returned
        return {"brightened": True}

    return brighten


def chain(journal: Journal) -> dict[str, Any]:
    """frames → boxes → brighten → summary, one worker."""

    def boxes(context: dict[str, Any]) -> dict[str, Any]:
        journal.calls.append("boxes")
        return {"boxes": {"n": len(context["frames"]), "first": context["frames"][0][:2, :2]}}

    def summary(context: dict[str, Any]) -> dict[str, Any]:
        journal.calls.append("summary")
        return {"total": sum(int(f.sum()) for f in context["frames"])}

    return {
        "frames": {"function": _frames(journal)},
        "boxes": {"function": boxes, "dependencies": ["frames"]},
        "brighten": {"function": _brighten(journal), "dependencies": ["boxes"]},
        "summary": {"function": summary, "dependencies": ["brighten"]},
    }


def branches(journal: Journal) -> dict[str, Any]:
    """frames, then ``count`` (saving its progress after each item) beside ``brighten``,
    then ``summary``; two workers, so their checkpoints' writes interleave."""

    def count(context: dict[str, Any], save_progress: Any = save_progress) -> dict[str, Any]:
        journal.calls.append("count")
        done = list(context.get("count.items", []))
        journal.began_at.append(len(done))
        while len(done) < 4:
            done.append(int(context["frames"][len(done) % 3].sum()) + len(done))
            if save_progress({"count.items": done}):
                journal.saved.append(len(done))
        return {"count.items": done}

    def summary(context: dict[str, Any]) -> dict[str, Any]:
        journal.calls.append("summary")
        return {"total": sum(int(f.sum()) for f in context["frames"]) + sum(context["count.items"])}

    return {
        "frames": {"function": _frames(journal)},
        "count": {"function": count, "dependencies": ["frames"]},
        "brighten": {"function": _brighten(journal), "dependencies": ["frames"]},
        "summary": {"function": summary, "dependencies": ["count", "brighten"]},
    }


def mapped(journal: Journal) -> dict[str, Any]:
    """frames, a list of numbers, a map step over it (two items at a time, each finished
    item checkpointed: ``BATCH_ITEMS`` is 1 here), then ``summary``."""

    def numbers(context: dict[str, Any]) -> dict[str, Any]:
        journal.calls.append("numbers")
        return {"numbers": list(range(5))}

    def square(item: int, context: Any) -> int:
        journal.calls.append(f"square[{item}]")
        return item * item + int(context["frames"][2][0, 0, 0])

    def summary(context: dict[str, Any]) -> dict[str, Any]:
        journal.calls.append("summary")
        return {"total": sum(context["square"])}

    return {
        "frames": {"function": _frames(journal)},
        "numbers": {"function": numbers, "dependencies": ["frames"]},
        "square": {
            "function": square,
            "map": "numbers",
            "concurrency": 2,
            "dependencies": ["numbers"],
        },
        "summary": {"function": summary, "dependencies": ["square"]},
    }


SCENARIOS = {"chain": (chain, 1), "branches": (branches, 2), "map": (mapped, 1)}


@pytest.fixture(autouse=True)
def _every_item_checkpointed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_map, "BATCH_ITEMS", 1)


def _pipeline(scenario: str, folder: Path, journal: Journal) -> Pipeline:
    definitions, workers = SCENARIOS[scenario]
    return Pipeline(
        "power",
        definitions(journal),
        storage=LocalStore(folder),
        run_id=RUN_ID,
        cleanup_on_success=False,
        fail_on_checkpoint_error=True,
        retry_backoff=0,
        max_workers=workers,
        strict=True,
    )


def _digest(context: dict[str, Any]) -> list[Any]:
    return (
        [
            (key, value.tobytes() if isinstance(value, np.ndarray) else value)
            for key, value in sorted(context.items())
            if key != "frames" and key != "boxes"
        ]
        + [f.tobytes() for f in context["frames"]]
        + [context["boxes"]["first"].tobytes() if "boxes" in context else None]
    )


@dataclass
class Outcome:
    disk: PowerLossDisk
    committed: list[str]  # steps whose commit was reported before the cut
    before: Journal  # the process the power cut
    after: Journal  # the process that resumed
    result: dict[str, Any]


def _cut_and_resume(scenario: str, tmp_path: Path, crash_at: int) -> Outcome:
    """Run until the power cut at call ``crash_at``, rebuild what survived, resume there."""
    live = tmp_path / f"live-{crash_at}"
    live.mkdir()
    disk = PowerLossDisk(live, crash_at)
    committed: list[str] = []

    def on_event(event: RunEvent) -> None:
        if event.kind == EventKind.CHECKPOINT_SAVED and event.checkpoint == "commit":
            committed.append(event.step or "")

    before = Journal()
    with disk.installed(), contextlib.suppress(PowerCut):
        _pipeline(scenario, live, before).run({"seed": 1}, on_event=on_event)
    after = Journal()
    survivor = disk.survivor(tmp_path / f"after-{crash_at}")
    resumed = _pipeline(scenario, survivor, after).run({"seed": 1}, resume_from_checkpoint=True)
    return Outcome(disk, committed, before, after, resumed)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_without_a_power_cut_everything_survives(scenario: str, tmp_path: Path) -> None:
    outcome = _cut_and_resume(scenario, tmp_path, 0)
    assert outcome.disk.calls > 20 and not outcome.disk.dead
    assert sorted(outcome.committed) == sorted(SCENARIOS[scenario][0](Journal()))
    assert outcome.after.calls == [] and outcome.result["status"] == "completed"


def _problems(scenario: str, tmp_path: Path) -> list[str]:
    """Cut the power at every call of a run of ``scenario`` in turn; what went wrong."""
    reference = _pipeline(scenario, tmp_path / "reference", Journal()).run({"seed": 1})
    expected = _digest(reference["context"])
    problems: list[str] = []
    total = 0  # calls of the run without a power cut: the cuts to try
    crash_at = 0
    while crash_at <= total:
        where = f"power cut at call {crash_at} of {total}" if crash_at else "no power cut"
        try:
            outcome = _cut_and_resume(scenario, tmp_path, crash_at)
        except CheckpointError as exc:  # strict: what survived reads as damaged
            problems.append(f"{where}: {type(exc).__name__}: {exc}")
            outcome = None
        if crash_at == 0:
            total = outcome.disk.calls if outcome is not None else 0
        crash_at += 1
        if outcome is None:
            continue
        result = outcome.result
        if result["status"] != "completed":
            problems.append(
                f"{where}: the resumed run ended {result['status']}, {result['errors']}"
            )
            continue
        again = sorted(set(outcome.committed) & set(outcome.after.calls))
        if again:
            problems.append(f"{where}: committed step(s) {again} ran again")
        if outcome.before.saved and "count" not in outcome.committed:
            began = outcome.after.began_at[0] if outcome.after.began_at else None
            if began is None or began < outcome.before.saved[-1]:
                problems.append(
                    f"{where}: count resumed at item {began}, "
                    f"but a save of {outcome.before.saved[-1]} items was reported kept"
                )
        if _digest(result["context"]) != expected:
            problems.append(f"{where}: the final context differs from an uninterrupted run's")
    return problems


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_power_cut_at_any_call_loses_nothing_reported_saved(
    scenario: str, tmp_path: Path
) -> None:
    problems = _problems(scenario, tmp_path)
    assert not problems, "\n".join(problems)


def _no_new_folder_syncs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders created without syncing their parents (mkdir(parents=True) alone)."""

    def make_folder(self: LocalStore, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(LocalStore, "_make_folder", make_folder)


def _no_flush_before_a_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replacing write that does not first make what it refers to durable."""
    write = LocalStore.write

    def unflushed(self: LocalStore, name: str, data: Any, **kwargs: Any) -> int:
        if kwargs.get("if_generation_match") == 0:
            return write(self, name, data, **kwargs)
        monkeypatch.setattr(self, "flush", lambda: None)
        try:
            return write(self, name, data, **kwargs)
        finally:
            monkeypatch.delattr(self, "flush")

    monkeypatch.setattr(LocalStore, "write", unflushed)


def _first_checkpoint_unflushed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first latest copy (created, not replaced) left to the next checkpoint's flush."""
    save = CheckpointStore.save_entries

    def unflushed(self: CheckpointStore, *args: Any, **kwargs: Any) -> Any:
        if self._latest_generation not in (0, None):
            return save(self, *args, **kwargs)
        monkeypatch.setattr(self.store, "flush", lambda: None)
        try:
            return save(self, *args, **kwargs)
        finally:
            monkeypatch.delattr(self.store, "flush")

    monkeypatch.setattr(CheckpointStore, "save_entries", unflushed)


@pytest.mark.parametrize(
    "remove_guard", [_no_new_folder_syncs, _no_flush_before_a_replace, _first_checkpoint_unflushed]
)
def test_the_model_sees_each_durability_guard_removed(
    remove_guard: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each guard of LocalStore's durability, removed on purpose, loses a checkpoint the
    run reported saved: the model is strong enough to see it."""
    remove_guard(monkeypatch)
    assert _problems("chain", tmp_path)
