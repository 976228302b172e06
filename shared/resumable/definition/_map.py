"""Map steps: a step's function called once per item of a list in the context, or per
object under a Cloud Storage (or local) prefix.

.. code-block:: python

    "process": {
        "function": process_clip,        # process_clip(item, context) -> the item's result
        "map": "clips",                  # a context key holding a list, or
                                         # "gs://bucket/prefix/" (+ a glob: "gs://b/v/*.mp4")
        "concurrency": 20,               # items at once
        "retries": 2,                    # per item
        "tolerated_failures": 10,        # an int, or a percentage like "5%"
    }

The step's output is ``{STEP: [result per item, in item order]}`` (``None`` for an item
that failed within the tolerance) and ``{STEP + "_failed": [{"index", "item", "error"}]}``.
With ``"map_output": "count"`` the results are not gathered (items that write their own
outputs): ``{STEP: {"items": n, "completed": k}}``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from resumable.errors import NonRetryableError, PipelineDefinitionError

MapOutput = Literal["results", "count"]

CONTINUE_IN_ITEM = (
    "a map item cannot return Continue(): its progress is its result (split long items "
    "into more items, or raise the step's timeout)"
)
_GLOB = "*?["


@dataclass(frozen=True)
class MapSpec:
    """How a step maps its function over items."""

    source: str  # a context key, or a gs:// / file:// URL (a prefix, maybe with a glob)
    tolerated: int | None = 0  # failed items a step may have and still complete
    tolerated_share: float | None = None  # or a share of them (0.05 for "5%")
    output: MapOutput = "results"

    @property
    def from_storage(self) -> bool:
        return "://" in self.source

    def tolerance(self, items: int) -> int:
        """How many of ``items`` may fail, the step still completing."""
        if self.tolerated_share is not None:
            return math.floor(items * self.tolerated_share)
        return self.tolerated or 0

    def listing(self) -> tuple[str, str, str]:
        """``(store URL, prefix to list, glob over object names)``: the objects under the
        source's folder part that match it (``*`` matches across ``/`` too); a source
        without a glob is a prefix, everything under it."""
        scheme, _, rest = self.source.partition("://")
        if scheme == "gs":
            bucket, _, path = rest.partition("/")
            root = f"gs://{bucket}"
        else:  # file:///abs/folder/...
            root, path = "file:///", rest.lstrip("/")
        first = next((i for i, c in enumerate(path) if c in _GLOB), None)
        if first is None:
            return root, path, path + "*"
        return root, path[: path.rfind("/", 0, first) + 1], path


def parse_map(where: str, definition: Mapping[str, Any]) -> MapSpec | None:
    """The map options of a step definition, validated (``None``: not a map step)."""
    source = definition.get("map")
    tolerated = definition.get("tolerated_failures", 0)
    output = definition.get("map_output", "results")
    if source is None:
        extra = [k for k in ("tolerated_failures", "map_output") if k in definition]
        if extra:
            raise PipelineDefinitionError(f"{where}: {extra} apply to map steps only")
        return None
    if not isinstance(source, str) or not source:
        raise PipelineDefinitionError(
            f"{where}: 'map' must name a context key or a gs:// prefix, got {source!r}"
        )
    if "://" in source and not source.startswith(("gs://", "file://")):
        raise PipelineDefinitionError(f"{where}: 'map' URLs are gs:// or file://, got {source!r}")
    if output not in ("results", "count"):
        raise PipelineDefinitionError(f"{where}: 'map_output' is 'results' or 'count'")
    if isinstance(tolerated, str) and tolerated.endswith("%"):
        try:
            share = float(tolerated[:-1]) / 100
        except ValueError:
            share = -1.0
        if not 0 <= share <= 1:
            raise PipelineDefinitionError(
                f"{where}: 'tolerated_failures' {tolerated!r} is not a percentage"
            )
        return MapSpec(source, None, share, output)
    if not isinstance(tolerated, int) or isinstance(tolerated, bool) or tolerated < 0:
        raise PipelineDefinitionError(
            f"{where}: 'tolerated_failures' must be an integer >= 0 or a percentage like '5%'"
        )
    return MapSpec(source, tolerated, None, output)


def items_from_context(spec: MapSpec, step: str, context: Mapping[str, Any]) -> list[Any]:
    """The items of a map over a context key."""
    if spec.source not in context:
        raise NonRetryableError(
            f"map step {step!r} maps over context key {spec.source!r}, which its input lacks"
        )
    items = context[spec.source]
    if not isinstance(items, list | tuple):
        raise NonRetryableError(
            f"map step {step!r} maps over context key {spec.source!r}, which holds a "
            f"{type(items).__name__}, not a list"
        )
    return list(items)


def items_from_storage(spec: MapSpec, names: Sequence[str]) -> list[str]:
    """The items of a map over a prefix: the URLs of the ``names`` listed under it that
    match its glob, sorted."""
    root, _prefix, pattern = spec.listing()
    base = root if root.endswith("/") else root + "/"
    return [base + n for n in sorted(names) if fnmatch.fnmatchcase(n, pattern)]


def list_items(spec: MapSpec, step: str, context: Mapping[str, Any]) -> list[Any]:
    """The items of map step ``step``: its context key's list, or the objects under its
    prefix (listed now)."""
    if not spec.from_storage:
        return items_from_context(spec, step, context)
    from resumable.storage import open_store

    root, prefix, _pattern = spec.listing()
    return items_from_storage(spec, list(open_store(root).list(prefix)))


def map_output(
    spec: MapSpec,
    step: str,
    items: Sequence[Any],
    results: Mapping[int, Any],
    failed: Mapping[int, str],
    failed_total: int | None = None,
) -> dict[str, Any]:
    """The output of map step ``step`` once every item finished (both engines): raises
    :class:`NonRetryableError` listing the failures when more failed than tolerated.
    ``failed_total``: how many failed, when ``failed`` holds only some of them."""
    failures = [{"index": i, "item": items[i], "error": failed[i]} for i in sorted(failed)]
    allowed = spec.tolerance(len(items))
    total_failed = len(failures) if failed_total is None else failed_total
    if total_failed > allowed:
        shown = ", ".join(f"#{f['index']} ({f['error']})" for f in failures[:10])
        raise NonRetryableError(
            f"map step {step!r}: {total_failed} of {len(items)} items failed, more than "
            f"the {allowed} tolerated: {shown}"
            + (" ..." if total_failed > 10 else "")
            + "; fix the cause and resume the run: only the failed items run again"
        )
    if spec.output == "count":
        value: Any = {"items": len(items), "completed": len(results)}
    else:
        value = [results.get(i) for i in range(len(items))]
    return {step: value, f"{step}_failed": failures}
