"""The defaults every layer shares, named once."""

DEFAULT_TENANT = "default"
"""The tenant of a run that names none (``runs/default/...``)."""

DEFAULT_PREFIX = "resumable"
"""The prefix of a deployment's topics, subscriptions and functions."""

DEFAULT_COLLECTION = "resumable_runs"
"""The Firestore collection of run documents."""
