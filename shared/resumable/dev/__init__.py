"""The local stack for development: the emulators, topics, push subscriptions and one
function process per step (``resumable dev up``)."""

from resumable.dev._stack import DevStack, down_detached, read_state

__all__ = ["DevStack", "down_detached", "read_state"]
