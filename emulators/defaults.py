"""Names and numbers shared by the launcher, its CLI and `docker-compose.yml`.

`tests/emulators/test_launcher.py` checks that the compose file uses the same ports, project
and variables, so change them here and there together.
"""

from __future__ import annotations

from typing import Final

DEFAULT_PROJECT: Final = "resumable-local"

# Fixed ports used by the CLI and docker-compose.yml. Firestore is not on its usual 8080
# because functions-framework listens there by default.
DEFAULT_PUBSUB_PORT: Final = 8085
DEFAULT_FIRESTORE_PORT: Final = 8086
DEFAULT_STORAGE_PORT: Final = 4443

LOCALHOST: Final = "127.0.0.1"

PUBSUB_EMULATOR_HOST: Final = "PUBSUB_EMULATOR_HOST"
FIRESTORE_EMULATOR_HOST: Final = "FIRESTORE_EMULATOR_HOST"
STORAGE_EMULATOR_HOST: Final = "STORAGE_EMULATOR_HOST"
PROJECT_VARIABLES: Final = ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")

# Every variable LocalCloud.env sets, in the order the export lines print them.
ENV_VARIABLES: Final = (
    PUBSUB_EMULATOR_HOST,
    FIRESTORE_EMULATOR_HOST,
    STORAGE_EMULATOR_HOST,
    *PROJECT_VARIABLES,
)
