"""Errors the launcher raises. All derive from `LocalCloudError`."""

from __future__ import annotations


class LocalCloudError(RuntimeError):
    """The local cloud could not start, reset or stop as asked."""


class PortInUse(LocalCloudError):
    """A port given for an emulator is taken by another process."""


class EmulatorStartError(LocalCloudError):
    """An emulator exited during startup or did not answer in time; the message holds the
    end of its log. Whatever had started is stopped again before this is raised."""
