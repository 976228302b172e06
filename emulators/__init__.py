"""The local cloud: Google's Pub/Sub and Firestore emulators and fake-gcs-server, offline.

`LocalCloud` starts, resets and stops the three; `python -m emulators start` runs them in the
foreground; `emulators.pytest_plugin` provides the `local_cloud`, `clean_cloud` and
`gcs_bucket` fixtures. See emulators/README.md.
"""

from emulators.errors import EmulatorStartError, LocalCloudError, PortInUse
from emulators.launcher import LocalCloud
from emulators.prereqs import MissingPrerequisite, check_prerequisites

__all__ = [
    "EmulatorStartError",
    "LocalCloud",
    "LocalCloudError",
    "MissingPrerequisite",
    "PortInUse",
    "check_prerequisites",
]
