"""The local stack for development: the emulators, topics, push subscriptions and one
function process per step (``resumable dev up``)."""
