#!/usr/bin/env bash
# What `make test` needs beyond Python on Debian (the python image of cloudbuild.yaml):
# the Google Cloud CLI with the Pub/Sub and Firestore emulators, a Java runtime for them,
# and Terraform (the suite checks `terraform fmt`).
set -euo pipefail

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
  google-cloud-cli google-cloud-cli-pubsub-emulator google-cloud-cli-firestore-emulator \
  openjdk-17-jre-headless terraform >/dev/null
