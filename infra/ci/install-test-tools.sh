#!/usr/bin/env bash
# What `make test` needs beyond Python on Debian (the python image of cloudbuild.yaml):
# the Google Cloud CLI with the Pub/Sub and Firestore emulators, a Java runtime for them,
# and Terraform (the suite checks `terraform fmt`).
#
# The CLI and its emulators are pinned to the release the suite is tested with, and the
# Java to one that release's emulators run on: the Firestore emulator of releases after
# 528.0.0 needs Java 21, which Debian bookworm does not package. Moving GCLOUD_VERSION
# past 528 therefore means a Java 21 (JAVA_MAJOR) from elsewhere; the check below stops
# before installing anything when the pair does not fit.
set -euo pipefail

GCLOUD_VERSION=528.0.0
JAVA_MAJOR=17
# The newest CLI release whose Firestore emulator still runs on Java 11 to 20.
LAST_RELEASE_BEFORE_JAVA_21=528

gcloud_major="${GCLOUD_VERSION%%.*}"
if ((gcloud_major > LAST_RELEASE_BEFORE_JAVA_21 && JAVA_MAJOR < 21)); then
  echo "error: google-cloud-cli ${GCLOUD_VERSION}'s Firestore emulator needs Java 21 or" \
    "newer, and this script installs Java ${JAVA_MAJOR}: install a Java 21 runtime and set" \
    "JAVA_MAJOR, or pin GCLOUD_VERSION to ${LAST_RELEASE_BEFORE_JAVA_21}.0.0" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq ca-certificates curl gnupg lsb-release >/dev/null

curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
  | gpg --dearmor --yes -o /usr/share/keyrings/cloud.google.gpg
echo "deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt cloud-sdk main" \
  >/etc/apt/sources.list.d/google-cloud-sdk.list

curl -fsSL https://apt.releases.hashicorp.com/gpg \
  | gpg --dearmor --yes -o /usr/share/keyrings/hashicorp.gpg
echo "deb [signed-by=/usr/share/keyrings/hashicorp.gpg] https://apt.releases.hashicorp.com $(lsb_release -cs) main" \
  >/etc/apt/sources.list.d/hashicorp.list

apt-get update -qq
apt-get install -y -qq \
  "google-cloud-cli=${GCLOUD_VERSION}-0" \
  "google-cloud-cli-pubsub-emulator=${GCLOUD_VERSION}-0" \
  "google-cloud-cli-firestore-emulator=${GCLOUD_VERSION}-0" \
  "openjdk-${JAVA_MAJOR}-jre-headless" terraform >/dev/null

# What was installed is what the suite is tested with, or stop here with the reason.
installed="$(gcloud version --format='value("Google Cloud SDK")')"
java_major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
if [[ "$installed" != "$GCLOUD_VERSION" || "$java_major" != "$JAVA_MAJOR" ]]; then
  echo "error: installed google-cloud-cli ${installed:-?} with Java ${java_major:-?};" \
    "the suite is tested with ${GCLOUD_VERSION} and Java ${JAVA_MAJOR}" >&2
  exit 1
fi
echo "google-cloud-cli ${installed} (Pub/Sub and Firestore emulators), Java ${java_major}"
