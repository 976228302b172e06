"""Validation of the ids that become parts of object names.

Run, tenant, pipeline and step ids end up in storage paths and Firestore document ids, so
each must be unable to escape its folder: no separators, no dot-only names, a bounded
length and a conservative alphabet.
"""

from __future__ import annotations

import re
import uuid

from resumable.errors import InvalidIdError

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


def chosen_run_id(run_guid: str | None, run_id: str | None = None) -> str:
    """The run id asked for under either alias (``run_guid``, as in the original API, or
    ``run_id``), validated; a new one when neither is given. An empty string is an
    :class:`InvalidIdError`, not a request for a new run.
    """
    if run_guid is not None and run_id is not None and run_guid != run_id:
        raise ValueError("run_guid and run_id are aliases: pass one of them")
    chosen = run_guid if run_guid is not None else run_id
    return new_run_id() if chosen is None else validate_id(chosen, "run id")
