"""A folder of clips → one dataset per clip, with a map step (``examples.dataprep.folder:build``).

```
list_clips → process_clips (map: one item per clip) → summarize
```

Input context: ``clips`` — a folder, ``file://`` URL or ``gs://BUCKET/PREFIX/`` holding the
videos, with an optional glob (default ``*.mp4``), e.g. ``gs://b/videos/2026-*.mp4`` —,
``output`` (a folder or URL: where the datasets go) and optionally any parameter of
:class:`~examples.dataprep.clip.Params`.

- **list_clips** lists the clips once: ``clip_urls`` (their URLs, sorted). A resumed run
  processes the same clips, even if the folder changed since.
- **process_clips** maps :func:`process_one` over them, ``concurrency`` 4 at once (serverless: 4
  instances), 1 retry each, up to 10 % of the clips may fail (a clip with no decodable
  frame, say) and are listed in ``process_clips_failed``. Each item decodes its clip, runs every
  stage of the single-clip pipeline in memory (:func:`~examples.dataprep.clip.process_clip`)
  and writes the clip's dataset to ``datasets/{clip name}/``, exactly as the single-clip
  pipeline would; its result is a small summary. A killed instance re-runs only the clip
  it was processing.
- **summarize**: ``summary`` — ``datasets`` (how many), ``files`` (images in all),
  ``warnings`` (clip → its dataset's warnings, for the clips that have some).
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

from resumable import NonRetryableError, Pipeline
from resumable.storage import open_store

from .clip import Params, process_clip
from .pipeline import factory, write_clip_dataset
from .video import local_video

PIPELINE_NAME = "dataprep_folder"
DEFAULT_GLOB = "*.mp4"


def split_folder(clips: str) -> tuple[str, str, str]:
    """``(store URL, prefix to list, glob over names under it)`` of a ``clips`` value."""
    if "://" not in clips:
        clips = "file://" + str(Path(clips).resolve())
    scheme, _, rest = clips.partition("://")
    if scheme == "gs":
        bucket, _, path = rest.partition("/")
        root = f"gs://{bucket}"
    elif scheme == "file":
        root, path = "file:///", rest.lstrip("/")
    else:
        raise NonRetryableError(f"'clips' is a folder, file:// or gs:// URL, got {clips!r}")
    name = path.rsplit("/", 1)[-1]
    if any(c in name for c in "*?["):
        return root, path[: len(path) - len(name)], name
    return root, (path.rstrip("/") + "/") if path else "", DEFAULT_GLOB


def list_clips(context: dict[str, Any]) -> dict[str, Any]:
    clips = context.get("clips")
    if not isinstance(clips, str) or not clips:
        raise NonRetryableError("the context needs 'clips': a folder or gs:// prefix of videos")
    root, prefix, pattern = split_folder(clips)
    base = root if root.endswith("/") else root + "/"
    names = sorted(
        n
        for n in open_store(root).list(prefix)
        if "/" not in n[len(prefix) :] and fnmatch.fnmatchcase(n[len(prefix) :], pattern)
    )
    if not names:
        raise NonRetryableError(f"no clips match {pattern!r} under {clips!r}")
    return {"clip_urls": [base + n for n in names]}


def clip_guid(url: str) -> str:
    """The dataset's name for a clip: its file name without the extension, made safe."""
    stem = url.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stem).lstrip("._-")[:100] or "clip"


def process_one(url: str, context: Any) -> dict[str, Any]:
    """One clip, start to end: its dataset written, a summary returned."""
    params = Params.from_context(context)
    try:
        path = local_video(url.removeprefix("file://") if url.startswith("file://") else url)
    except (FileNotFoundError, ValueError) as exc:
        raise NonRetryableError(str(exc)) from None
    output = context.get("output")
    if not output:
        raise NonRetryableError("the context needs 'output': where the datasets go")
    try:
        processed = process_clip(path, params)
    except Exception as exc:
        if type(exc).__module__.startswith("av"):  # PyAV: a damaged or unsupported video
            raise NonRetryableError(f"cannot decode {url}: {exc}") from exc
        raise
    written = write_clip_dataset(open_store(output), clip_guid(url), processed, params)
    return {
        "clip": url,
        "dataset": written["dataset"]["url"],
        "files": written["dataset"]["file_count"],
        "warnings": written["dataset_warnings"],
    }


def summarize(context: dict[str, Any]) -> dict[str, Any]:
    done = [r for r in context["process_clips"] if r is not None]
    summary = {
        "datasets": len(done),
        "files": sum(r["files"] for r in done),
        "warnings": {r["clip"]: r["warnings"] for r in done if r["warnings"]},
    }
    return {"summary": summary}


STEPS: dict[str, Any] = {
    "list_clips": {"function": list_clips, "description": "list the clips once"},
    "process_clips": {
        "function": process_one,
        "dependencies": ["list_clips"],
        "map": "clip_urls",
        "concurrency": 4,
        "retries": 1,
        "tolerated_failures": "10%",
        "timeout": 540,
        "memory": "2Gi",
        "description": "one clip → its dataset",
    },
    "summarize": {"function": summarize, "dependencies": ["process_clips"]},
}


build = factory(
    lambda **settings: Pipeline(PIPELINE_NAME, STEPS, **settings),
    "The folder pipeline (the ``MODULE:ATTR`` factory for the CLI and deployments).",
)
