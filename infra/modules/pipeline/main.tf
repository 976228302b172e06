# One pipeline: a topic and a run_step function per step.

resource "google_pubsub_topic" "step" {
  for_each = var.steps
  name     = each.value.topic
}

# A finished step publishes its successors' messages; the watchdog re-publishes lost ones.
resource "google_pubsub_topic_iam_member" "runtime_publishes" {
  for_each = google_pubsub_topic.step
  topic    = each.value.id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${var.deployment.runtime_service_account}"
}

module "step" {
  source   = "../function"
  for_each = var.steps

  function   = each.value
  topic_id   = google_pubsub_topic.step[each.key].id
  deployment = var.deployment
}
