"""``python -m resumable.cli``: the ``resumable`` command."""

from resumable.cli import main

main()
