"""The function source folder that gcloud or Terraform uploads.

A bundle holds everything the functions import, and nothing of the machine it was built
on:

- ``main.py``: the entry points (``start_run``, ``run_step``, ``dead_letter``,
  ``watchdog``), the same file the local stack serves;
- ``resumable/``: the library's source;
- the pipelines' modules, at the paths their ``MODULE:ATTR`` references name, so the
  references work unchanged from the bundle's folder (the functions' working directory);
- ``requirements.txt``: the library's third-party dependencies (its ``cloud`` extra,
  plus the extras asked for), pinned to the versions installed here — the versions the
  tests ran against;
- ``resumable-bundle.json``: which pipelines, with their fingerprints, so a deploy can
  refuse a bundle built from other code.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from resumable import __version__
from resumable.definition._loader import load_pipeline
from resumable.errors import BundleError
from resumable.serverless.entrypoints import MAIN_PY

MANIFEST = "resumable-bundle.json"
BASE_EXTRAS = ("cloud",)
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


def build_bundle(
    output: Path,
    pipelines: Sequence[str],
    *,
    extras: Sequence[str] = (),
    requirements: Sequence[str] = (),
    include: Sequence[Path] = (),
) -> dict[str, Any]:
    """Build the bundle for ``pipelines`` in ``output`` (replacing its contents).

    ``extras`` are the library's optional dependency groups the pipelines need (e.g.
    ``dataprep``); ``requirements`` further pip requirement lines; ``include`` further
    files or folders, copied at the same path relative to the current directory.
    Returns the manifest.
    """
    if not pipelines:
        raise BundleError("name at least one pipeline (--pipeline MODULE:ATTR)")
    loaded = {ref: load_pipeline(ref) for ref in pipelines}
    # Every input is checked before the previous bundle is replaced: a typo in an
    # --include or --extra leaves it as it was.
    copies = [_module_files(ref) for ref in pipelines]
    copies += [(path, _relative(path)) for path in include]
    for source, _ in copies:
        if not source.exists():
            raise BundleError(f"{source} does not exist")
    lines = [*pinned_requirements([*BASE_EXTRAS, *extras]), *requirements]
    if output.exists():
        if not output.is_dir() or (any(output.iterdir()) and not (output / MANIFEST).exists()):
            raise BundleError(f"{output} exists and is not a bundle: name an empty or new folder")
        shutil.rmtree(output)
    output.mkdir(parents=True)
    (output / "main.py").write_text(MAIN_PY)
    library = Path(importlib.import_module("resumable").__file__ or "").parent
    shutil.copytree(library, output / "resumable", ignore=_IGNORED)
    for source, relative in copies:
        _copy(source, output / relative)
    (output / "requirements.txt").write_text("\n".join(lines) + "\n")
    manifest = {
        "resumable_version": __version__,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "pipelines": {
            ref: {"name": p.pipeline_name, "fingerprint": p.spec.fingerprint}
            for ref, p in loaded.items()
        },
    }
    (output / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check_bundle(source: Path, pipelines: Sequence[str]) -> None:
    """Raise :class:`BundleError` unless ``source`` is a bundle of exactly ``pipelines``,
    built from their current code (same step-graph fingerprints)."""
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except FileNotFoundError:
        raise BundleError(
            f"{source} is not a function bundle: build it with resumable deploy bundle"
        ) from None
    built = manifest.get("pipelines", {})
    if sorted(built) != sorted(pipelines):
        raise BundleError(
            f"the bundle in {source} holds {sorted(built)}, not {sorted(pipelines)}: rebuild it"
        )
    for ref in pipelines:
        fingerprint = load_pipeline(ref).spec.fingerprint
        if built[ref]["fingerprint"] != fingerprint:
            raise BundleError(
                f"the bundle in {source} has another version of {ref} (fingerprint "
                f"{built[ref]['fingerprint']}, the code has {fingerprint}): rebuild it"
            )


def pinned_requirements(extras: Iterable[str]) -> list[str]:
    """The library's dependencies (base plus ``extras``), each pinned to the installed
    version when it is installed; an unknown extra raises :class:`BundleError`."""
    try:
        declared = [_parse(text) for text in importlib.metadata.requires("resumable") or []]
        known = set(importlib.metadata.metadata("resumable").get_all("Provides-Extra") or [])
    except importlib.metadata.PackageNotFoundError:
        raise BundleError(
            "the resumable distribution is not installed (pip install -e .)"
        ) from None
    wanted = set(extras)
    if unknown := wanted - known:
        raise BundleError(f"unknown extra(s) {sorted(unknown)}: the library has {sorted(known)}")
    # An extra may name others (resumable[numpy,cloud]): grow the set to a fixed point.
    while (
        grown := {
            e
            for name, named, _, extra in declared
            if name == "resumable" and extra in wanted
            for e in named
        }
        - wanted
    ):
        wanted |= grown
    lines = {
        name.lower(): _pin(name, specifier)
        for name, _, specifier, extra in declared
        if name != "resumable" and (extra is None or extra in wanted)
    }
    return sorted(lines.values())


_REQUIREMENT = re.compile(
    r"\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?\s*(?P<spec>[^;]*)"
    r"(?:;\s*extra\s*==\s*[\"'](?P<extra>[^\"']+)[\"']\s*)?$"
)


def _parse(text: str) -> tuple[str, set[str], str, str | None]:
    """``'numpy>=1.24; extra == "numpy"'`` → ``("numpy", set(), ">=1.24", "numpy")``."""
    match = _REQUIREMENT.fullmatch(text)
    if match is None:
        raise BundleError(f"cannot read the library's requirement {text!r}")
    extras = {e.strip() for e in (match["extras"] or "").split(",") if e.strip()}
    return match["name"], extras, match["spec"].strip(), match["extra"]


def _pin(name: str, specifier: str) -> str:
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{name}{specifier}"


def _module_files(ref: str) -> tuple[Path, Path]:
    """(source, path in the bundle) of what importing ``ref``'s module needs: its
    outermost regular package (whose ``__init__`` may import any of it), or the module
    alone when it sits in namespace folders only."""
    module_ref = ref.rpartition(":")[0]
    if module_ref.endswith(".py") or "/" in module_ref:
        return Path(module_ref), _relative(Path(module_ref))
    parts = module_ref.split(".")
    for depth in range(1, len(parts) + 1):
        package = sys.modules[".".join(parts[:depth])]
        is_package = hasattr(package, "__path__")
        if package.__file__ is not None and is_package:  # a regular package
            return Path(package.__file__).parent, Path(*parts[:depth])
        if not is_package:  # a module in namespace folders
            return Path(package.__file__ or ""), Path(*parts[:-1], f"{parts[-1]}.py")
    raise BundleError(f"{module_ref} is a namespace package: name a module in it")


def _relative(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        raise BundleError(
            f"{path} is outside the current folder: the bundle keeps paths relative to it"
        ) from None


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, ignore=_IGNORED, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)
