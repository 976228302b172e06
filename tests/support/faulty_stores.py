"""Object stores that fail on purpose (unit tests of what a storage hiccup leaves)."""

from __future__ import annotations

from resumable.storage import MemoryStore


class DeleteFailsOnce(MemoryStore):
    """A bucket whose first prefix deletion fails half way (a storage hiccup)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def delete_prefix(self, prefix: str) -> int:
        if self.failures:
            self.failures -= 1
            raise OSError("503 backend error")
        return super().delete_prefix(prefix)
