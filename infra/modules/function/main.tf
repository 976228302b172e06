# One Cloud Run function (2nd gen), the account that may invoke it, and how Pub/Sub
# delivers to it: a push subscription (delivery = "push") or an Eventarc trigger
# (delivery = "eventarc").

locals {
  push = var.deployment.delivery == "push"
}

resource "google_cloudfunctions2_function" "this" {
  name        = var.function.name
  location    = var.deployment.region
  description = "resumable ${var.function.entry_point} (${var.function.topic})"

  build_config {
    runtime         = var.deployment.python_runtime
    entry_point     = var.function.entry_point
    service_account = var.deployment.build_service_account

    source {
      storage_source {
        bucket = var.deployment.source_bucket
        object = var.deployment.source_object
      }
    }
  }

  service_config {
    available_memory                 = var.function.memory
    available_cpu                    = var.function.cpu
    timeout_seconds                  = var.function.timeout_seconds
    max_instance_request_concurrency = var.function.concurrency
    max_instance_count               = coalesce(var.function.max_instances, var.deployment.max_instances)
    environment_variables            = merge(var.deployment.environment, var.function.environment)
    service_account_email            = var.deployment.runtime_service_account
    # Pub/Sub, Eventarc and Cloud Scheduler in the project count as internal.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
  }

  dynamic "event_trigger" {
    for_each = local.push ? [] : [var.topic_id]
    content {
      trigger_region        = var.deployment.region
      event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic          = event_trigger.value
      retry_policy          = "RETRY_POLICY_RETRY"
      service_account_email = var.deployment.trigger_service_account
    }
  }
}

# The only principal that may invoke the function.
resource "google_cloud_run_service_iam_member" "trigger_invokes" {
  location = google_cloudfunctions2_function.this.location
  service  = google_cloudfunctions2_function.this.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${var.deployment.trigger_service_account}"
}

# The delivery the code expects (resumable.topology.DeliveryPolicy), as the local stack
# has it: ack deadline, backoff, dead-lettering, authenticated as the trigger account.
resource "google_pubsub_subscription" "push" {
  count = local.push ? 1 : 0

  name                 = var.function.subscription
  topic                = var.topic_id
  ack_deadline_seconds = var.deployment.delivery_policy.ack_deadline_seconds

  retry_policy {
    minimum_backoff = "${var.deployment.delivery_policy.min_backoff_seconds}s"
    maximum_backoff = "${var.deployment.delivery_policy.max_backoff_seconds}s"
  }

  # Never expire: by default Pub/Sub deletes a subscription idle for 31 days, and a
  # rarely run pipeline would then stall at that step.
  expiration_policy {
    ttl = ""
  }

  dynamic "dead_letter_policy" {
    for_each = var.function.dead_letter ? [var.deployment.dead_letter_topic_id] : []
    content {
      dead_letter_topic     = dead_letter_policy.value
      max_delivery_attempts = var.function.max_delivery_attempts
    }
  }

  push_config {
    # The path makes functions-framework name the topic as the CloudEvent's source.
    push_endpoint = "${google_cloudfunctions2_function.this.service_config[0].uri}${var.function.push_path}"

    oidc_token {
      service_account_email = var.deployment.trigger_service_account
      audience              = google_cloudfunctions2_function.this.service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_service_iam_member.trigger_invokes]
}

# Dead-lettering acknowledges the message on the source subscription as Pub/Sub's agent.
resource "google_pubsub_subscription_iam_member" "dead_letter_forwarding" {
  count = local.push && var.function.dead_letter ? 1 : 0

  subscription = google_pubsub_subscription.push[0].id
  role         = "roles/pubsub.subscriber"
  member       = var.deployment.pubsub_agent
}
