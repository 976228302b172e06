provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}

# Pub/Sub's service agent signs push requests and forwards dead letters. A fresh project
# may not have it yet: this creates it if needed, and every grant to it waits for it.
resource "google_project_service_identity" "pubsub" {
  provider = google-beta
  project  = var.project_id
  service  = "pubsub.googleapis.com"
}

locals {
  runtime_member = "serviceAccount:${google_service_account.runtime.email}"
  pubsub_agent   = "serviceAccount:${google_project_service_identity.pubsub.email}"

  control_topic_ids = { for topic in google_pubsub_topic.control : topic.name => topic.id }

  # What every function shares; each module adds one function's own settings.
  deployment = {
    project_id              = var.project_id
    region                  = var.region
    python_runtime          = var.python_runtime
    source_bucket           = google_storage_bucket.sources.name
    source_object           = google_storage_bucket_object.functions.name
    build_service_account   = var.build_service_account
    environment             = var.environment
    max_instances           = var.max_instances
    runtime_service_account = google_service_account.runtime.email
    trigger_service_account = google_service_account.trigger.email
    delivery                = var.delivery
    delivery_policy         = var.delivery_policy
    dead_letter_topic_id    = google_pubsub_topic.control["dead_letter"].id
    pubsub_agent            = local.pubsub_agent
  }
}
