# Two accounts, each with only what it needs:
# - runtime runs every function: objects in its bucket, documents in its Firestore
#   database, publishing to its step topics (granted in modules/pipeline);
# - trigger invokes the functions (granted in modules/function) and nothing else.
# No function is publicly invokable: no allUsers binding anywhere, internal-only ingress.

resource "google_service_account" "runtime" {
  account_id   = var.service_accounts.runtime
  display_name = "resumable functions (${var.prefix})"
  description  = "Runs the resumable functions: checkpoints, run documents, step messages."
}

resource "google_service_account" "trigger" {
  account_id   = var.service_accounts.trigger
  display_name = "resumable triggers (${var.prefix})"
  description  = "Invokes the resumable functions for Pub/Sub; has no other permission."
}

resource "google_storage_bucket_iam_member" "runtime_objects" {
  bucket = google_storage_bucket.runs.name
  role   = "roles/storage.objectUser"
  member = local.runtime_member
}

# Firestore roles are granted on the project; the condition limits this one to the
# deployment's database.
resource "google_project_iam_member" "runtime_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = local.runtime_member

  condition {
    title      = "only-${trim(var.database, "()")}"
    expression = "resource.name == \"projects/${var.project_id}/databases/${var.database}\""
  }
}

# Push subscriptions authenticate as the trigger account: Pub/Sub's service agent signs
# their OIDC tokens.
resource "google_service_account_iam_member" "pubsub_signs_push_tokens" {
  count              = var.delivery == "push" ? 1 : 0
  service_account_id = google_service_account.trigger.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}
