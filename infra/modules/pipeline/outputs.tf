output "topics" {
  description = "Step name => topic id."
  value       = { for step, topic in google_pubsub_topic.step : step => topic.id }
}

output "functions" {
  description = "Function name => URL."
  value       = { for step, f in module.step : f.name => f.uri }
}
