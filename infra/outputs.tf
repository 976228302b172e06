output "start_topic" {
  description = "Publish {\"pipeline\": ..., \"params\": {...}} here to start a run."
  value       = google_pubsub_topic.control["start"].id
}

locals {
  client_environment = {
    for name in [
      "RESUMABLE_PROJECT", "RESUMABLE_STORAGE", "RESUMABLE_PIPELINES",
      "RESUMABLE_TOPIC_PREFIX", "RESUMABLE_COLLECTION", "RESUMABLE_DATABASE",
    ] : name => var.environment[name]
  }
}

output "client_environment" {
  description = "Variables for the resumable CLI (status, list, watch) against this deployment."
  value       = local.client_environment
}

output "client_exports" {
  description = "The same as shell lines: eval \"$(terraform output -raw client_exports)\"."
  value       = join("\n", [for name, value in local.client_environment : "export ${name}='${value}'"])
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
