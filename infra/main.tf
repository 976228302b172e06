provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  runtime_member = "serviceAccount:${google_service_account.runtime.email}"
  # Pub/Sub's service agent: it signs push requests and forwards dead letters.
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

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
