# The watchdog re-publishes steps whose lease expired or whose message was lost.
resource "google_cloud_scheduler_job" "watchdog" {
  name        = var.watchdog.job
  region      = var.region
  description = "Triggers the resumable watchdog (${var.prefix})."
  schedule    = var.watchdog.schedule
  time_zone   = "Etc/UTC"

  pubsub_target {
    topic_name = google_pubsub_topic.control["watchdog"].id
    data       = base64encode("{}")
  }
}
