"""Validation of the ids that become parts of object names.

Run, tenant, pipeline and step ids end up in storage paths and Firestore document ids, so
each must be unable to escape its folder: no separators, no dot-only names, a bounded
length and a conservative alphabet.
"""

from __future__ import annotations

import re
import uuid

from .errors import InvalidIdError

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a safe id, else raise :class:`InvalidIdError` saying why."""
    if not isinstance(value, str):
        raise InvalidIdError(f"{what} must be a string, got {type(value).__name__}")
    if not _ID_PATTERN.fullmatch(value) or ".." in value or value.startswith("__"):
        raise InvalidIdError(
            f"{what} {value!r} is not a safe id: use 1-128 characters from letters, digits, "
            "'.', '_' and '-', starting with a letter or digit, without '..'"
        )
    return value


def new_run_id() -> str:
    """A fresh random run id (a UUID4 string, like the original's ``run_guid``)."""
    return str(uuid.uuid4())
