# The start, dead-letter and watchdog topics; each pipeline module adds its step topics.
resource "google_pubsub_topic" "control" {
  for_each = { for role, name in var.topics : role => name }
  name     = each.value
}

# With push delivery, Pub/Sub forwards a message that exhausted its delivery attempts to
# the dead-letter topic as its service agent.
resource "google_pubsub_topic_iam_member" "dead_letter_forwarding" {
  count  = var.delivery == "push" ? 1 : 0
  topic  = google_pubsub_topic.control["dead_letter"].id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}
