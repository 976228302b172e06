#!/bin/sh
# Apply infra/ with its state in a Cloud Storage bucket (Cloud Build steps start empty, so
# the state cannot stay local). Run from infra/, after `resumable deploy tfvars` and
# `resumable deploy bundle`.  Usage: ci/terraform-apply.sh STATE_BUCKET [STATE_PREFIX]
set -eu

bucket="$1"
prefix="${2:-resumable}"

cat >backend_override.tf <<'HCL'
terraform {
  backend "gcs" {}
}
HCL

terraform init -input=false -backend-config="bucket=${bucket}" -backend-config="prefix=${prefix}"
terraform apply -input=false -auto-approve
