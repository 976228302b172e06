variable "function" {
  description = "One function, as `resumable deploy tfvars` derives it from the topology."
  type = object({
    name            = string
    entry_point     = string
    topic           = string
    subscription    = string
    push_path       = string
    timeout_seconds = number
    memory          = string
    cpu             = optional(string)
    concurrency     = number
    # A map step's items at once (one per instance); null: the deployment's max_instances.
    max_instances = optional(number)
    dead_letter   = bool
    # Deliveries before dead-lettering, from the step's retries; null without dead-lettering.
    max_delivery_attempts = optional(number)
    environment           = map(string)
  })
}

variable "topic_id" {
  description = "The topic whose messages trigger the function (projects/P/topics/T)."
  type        = string
}

variable "deployment" {
  description = "What all functions of the deployment share (see the root module's locals)."
  type = object({
    project_id              = string
    region                  = string
    python_runtime          = string
    source_bucket           = string
    source_object           = string
    build_service_account   = string
    environment             = map(string)
    max_instances           = number
    runtime_service_account = string
    trigger_service_account = string
    delivery                = string
    delivery_policy = object({
      ack_deadline_seconds = number
      min_backoff_seconds  = number
      max_backoff_seconds  = number
    })
    dead_letter_topic_id = string
    pubsub_agent         = string
  })
}
