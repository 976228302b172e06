"""What one step changed in the context, as checkpoint entries.

A step's input is the composition of the run's initial context and the deltas of its
ancestors, in graph order; its output is the delta between that input and the context it
left. Both runners store deltas: the serverless one as one manifest per step attempt
(``step_outputs``), the in-process one inside its checkpoint manifests (``run_context``).
Comparing entries rather than values is exact and cheap: entries are content-addressed,
so equal values have equal entries, whatever their type — compared as the JSON they are
stored as (:func:`same_entry`), not with Python's ``==``, which holds ``1 == 1.0 == True``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from resumable.checkpoint._segments import Entry


class Delta(BaseModel):
    """Keys a step set (to these entries) and keys it removed."""

    model_config = ConfigDict(extra="allow")

    outputs: dict[str, Entry] = Field(default_factory=dict)
    deleted: list[str] = Field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        """Every key the delta touches, sorted."""
        return sorted([*self.outputs, *self.deleted])


def same_entry(a: Entry | None, b: Entry | None) -> bool:
    """Whether two entries store the same value. ``==`` alone would not do: it holds
    ``1 == 1.0 == True`` and ``0.0 == -0.0``, values the stored JSON tells apart (a step
    that turns a 1 into ``True`` changed the context)."""
    if a is b:
        return True
    if a is None or b is None or a != b:
        return False
    return orjson.dumps(a) == orjson.dumps(b)


def diff(before: Mapping[str, Entry], after: Mapping[str, Entry]) -> Delta:
    """The delta that turns ``before`` into ``after``."""
    return Delta(
        outputs={k: e for k, e in after.items() if not same_entry(before.get(k), e)},
        deleted=sorted(k for k in before if k not in after),
    )


def apply(entries: dict[str, Entry], delta: Delta | Any) -> None:
    """Apply ``delta`` (or anything with ``outputs`` and ``deleted``) to ``entries``."""
    entries.update(delta.outputs)
    for key in delta.deleted:
        entries.pop(key, None)


def compose(base: Mapping[str, Entry], deltas: Iterable[Delta]) -> dict[str, Entry]:
    """``base`` with each delta applied in turn."""
    entries = dict(base)
    for delta in deltas:
        apply(entries, delta)
    return entries
