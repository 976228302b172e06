output "start_topic" {
  description = "Publish {\"pipeline\": ..., \"params\": {...}} here to start a run."
  value       = google_pubsub_topic.control["start"].id
}

output "client_environment" {
  description = "Variables for the resumable CLI (status, list, watch) against this deployment."
  value = {
    RESUMABLE_PROJECT      = var.environment["RESUMABLE_PROJECT"]
    RESUMABLE_STORAGE      = var.environment["RESUMABLE_STORAGE"]
    RESUMABLE_PIPELINES    = var.environment["RESUMABLE_PIPELINES"]
    RESUMABLE_TOPIC_PREFIX = var.environment["RESUMABLE_TOPIC_PREFIX"]
    RESUMABLE_COLLECTION   = var.environment["RESUMABLE_COLLECTION"]
    RESUMABLE_DATABASE     = var.environment["RESUMABLE_DATABASE"]
  }
}

output "functions" {
  description = "Function name => URL (internal ingress, authenticated)."
  value = merge(
    { for key, f in module.control_function : f.name => f.uri },
    merge([for p in module.pipeline : p.functions]...),
  )
}

output "runtime_service_account" {
  value = google_service_account.runtime.email
}

output "trigger_service_account" {
  value = google_service_account.trigger.email
}
