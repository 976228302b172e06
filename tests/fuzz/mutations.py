"""Structure-aware mutations of JSON documents (manifests, segment headers, messages).

A mutation picks a place in the document and replaces, deletes, inserts, retypes or
deepens what is there. Replacement values favour what the decoders look for (the codec's
tags and field names, ids, sizes), so that mutated documents get past the first type
check and reach the code behind it.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

TAGS = [
    "int", "float", "complex", "datetime", "date", "time", "timedelta", "uuid", "decimal",
    "path", "dict", "tuple", "set", "frozenset", "bytes", "bytearray", "ndarray",
    "npscalar", "ext",
]  # fmt: skip
FIELDS = [
    "$r", "v", "x", "bits", "b64", "part", "blob", "dtype", "shape", "order", "items",
    "name", "zone", "offset", "fold", "tzname", "class", "segment", "bytes", "blobs",
    "parts", "outputs", "deleted", "context", "sequence", "completed_steps",
]  # fmt: skip
TEXTS = [
    *TAGS, *FIELDS, "", "nan", "-inf", "7ff8000000000123", "AAAA", "!!", "<i4", "|O",
    ">f8", "<M8[ns]", "|V0", "C", "F", "2026-03-29T02:30:00", "12:00:00+01:00",
    "Europe/Paris", "00000000-0000-0000-0000-000000000000", "sNaN", "1_000", "ff",
    "-0", "PurePosixPath", "WindowsPath", "b3-" + "0" * 64, "../x",
]  # fmt: skip
INTS = [0, 1, -1, 2, 3, 16, 255, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 1 << 40]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(INTS),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(TEXTS),
    st.text(max_size=12),
)


def _tagged(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda tag, fields: {"$r": tag, **fields},
        st.sampled_from(TAGS),
        st.dictionaries(st.sampled_from(FIELDS[1:]), children, max_size=4),
    )


json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)), children, max_size=4
        ),
        _tagged(children),
    ),
    max_leaves=12,
)


def _places(document: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in the document; ``(None, None)`` stands for the root."""
    places: list[tuple[Any, Any]] = [(None, None)]
    stack = [document]
    while stack:
        node = stack.pop()
        keys = (
            range(len(node)) if isinstance(node, list) else node if isinstance(node, dict) else ()
        )
        for key in keys:
            places.append((node, key))
            stack.append(node[key])
    return places


def _retyped(value: Any) -> Any:
    """The same content in a neighbouring JSON type."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return int(value) if value == value and abs(value) < 2**63 else 0
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        return list(value.values())
    return False


def mutate(data: st.DataObject, document: Any, *, max_mutations: int = 3) -> Any:
    """A mutated deep copy of ``document`` (as written, at most 254 levels deep);
    ``data`` draws the mutations."""
    document = copy.deepcopy(document)
    for _ in range(data.draw(st.integers(1, max_mutations), label="mutations")):
        places = _places(document)
        container, key = data.draw(st.sampled_from(places), label="place")
        current = document if container is None else container[key]
        kind = data.draw(
            st.sampled_from(["replace", "delete", "insert", "retype", "deepen", "duplicate"]),
            label="kind",
        )
        if kind == "delete" and container is not None:
            if isinstance(container, list):
                container.pop(key)
            else:
                del container[key]
            continue
        if kind == "insert" and isinstance(current, dict | list):
            value = data.draw(json_values, label="inserted")
            if isinstance(current, list):
                current.insert(data.draw(st.integers(0, len(current))), value)
            else:
                current[data.draw(st.sampled_from(FIELDS), label="field")] = value
            continue
        if kind == "replace":
            new = data.draw(json_values, label="replacement")
        elif kind == "retype":
            new = _retyped(current)
        elif kind == "deepen":
            new = current
            for _ in range(data.draw(st.sampled_from([1, 2, 100, 253, 260, 1100]), label="levels")):
                new = [new]
        else:  # the node twice (shared: the document is serialised before it is read)
            new = [current, current]
        if container is None:
            document = new
        else:
            container[key] = new
    return document
