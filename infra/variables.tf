# Every name and setting below comes from `resumable deploy tfvars`, which derives them
# from the pipeline definitions with the library's own functions (build_topology,
# Settings.to_env): write terraform.tfvars.json with it rather than by hand.

variable "project_id" {
  description = "The Google Cloud project."
  type        = string
}

variable "region" {
  description = "Region of the functions, the bucket, the scheduler job."
  type        = string
}

variable "prefix" {
  description = "Prefix of every resource name (RESUMABLE_TOPIC_PREFIX)."
  type        = string
}

variable "delivery" {
  description = "push: Pub/Sub push subscriptions with the code's delivery policy and dead-lettering; eventarc: Eventarc triggers with retry (no dead-letter policy, see README)."
  type        = string
  default     = "push"

  validation {
    condition     = contains(["push", "eventarc"], var.delivery)
    error_message = "The delivery must be push or eventarc."
  }
}

variable "bucket" {
  description = "The checkpoint bucket (run folders under runs/)."
  type        = string
}

variable "source_bucket" {
  description = "The bucket holding the functions' source archives."
  type        = string
}

variable "source_dir" {
  description = "The function bundle folder (`resumable deploy bundle`), relative to this folder."
  type        = string
}

variable "python_runtime" {
  description = "Cloud Run functions runtime, the Python the bundle's requirements were pinned with."
  type        = string
}

variable "build_service_account" {
  description = "Service account Cloud Build uses to build the functions (projects/P/serviceAccounts/EMAIL); null: the project's default."
  type        = string
  default     = null
}

variable "max_instances" {
  description = "Most instances of one function at once."
  type        = number
}

variable "firestore_location" {
  description = "Location of the Firestore database."
  type        = string
}

variable "database" {
  description = "The Firestore database (RESUMABLE_DATABASE)."
  type        = string
}

variable "collection" {
  description = "The collection of run documents (RESUMABLE_COLLECTION)."
  type        = string
}

variable "ttl_field" {
  description = "Timestamp field of finished run documents after which the TTL policy deletes them."
  type        = string
}

variable "map_items_collection" {
  description = "The collection group of map steps' item documents (sub-collections of run documents)."
  type        = string
  default     = "resumable_map_items"
}

variable "unindexed_item_fields" {
  description = "Item document fields no query uses: their single-field indexes are turned off."
  type        = list(string)
  default     = []
}

variable "firestore_indexes" {
  description = "Composite indexes the CLI's queries need, each a list of fields."
  type = list(list(object({
    field_path = string
    order      = string
  })))
}

variable "noncurrent_retention_days" {
  description = "Days an overwritten or deleted object version stays recoverable."
  type        = number
}

variable "create_database" {
  description = "Create the Firestore database; false: use `database`, which exists already (a project has at most one (default) database)."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the Firestore database from deletion."
  type        = bool
  default     = true
}

variable "environment" {
  description = "Variables every function reads (RESUMABLE_PROJECT, RESUMABLE_STORAGE, ...)."
  type        = map(string)
}

variable "delivery_policy" {
  description = "How Pub/Sub pushes to a function (resumable.topology.DeliveryPolicy); each function's max delivery attempts are in its own object."
  type = object({
    ack_deadline_seconds = number
    min_backoff_seconds  = number
    max_backoff_seconds  = number
  })
}

variable "service_accounts" {
  description = "Account ids: runtime runs the functions, trigger invokes them."
  type = object({
    runtime = string
    trigger = string
  })
}

variable "topics" {
  description = "The start, dead-letter and watchdog topics."
  type = object({
    start       = string
    dead_letter = string
    watchdog    = string
  })
}

variable "watchdog" {
  description = "The scheduler job that triggers the watchdog."
  type = object({
    job      = string
    schedule = string
  })
}

variable "control_functions" {
  description = "The start, dead-letter and watchdog functions."
  type = map(object({
    name            = string
    entry_point     = string
    topic           = string
    subscription    = string
    push_path       = string
    timeout_seconds = number
    memory          = string
    cpu             = optional(string)
    concurrency     = number
    max_instances   = optional(number)
    dead_letter     = bool
    # Deliveries before dead-lettering, from the step's retries; null without dead-lettering.
    max_delivery_attempts = optional(number)
    environment           = map(string)
  }))
}

variable "pipelines" {
  description = "Pipeline name => its steps' functions (one topic and one function per step)."
  type = map(object({
    steps = map(object({
      name            = string
      entry_point     = string
      topic           = string
      subscription    = string
      push_path       = string
      timeout_seconds = number
      memory          = string
      cpu             = optional(string)
      concurrency     = number
      # A map step's items at once (one per instance); null: var.max_instances.
      max_instances = optional(number)
      dead_letter   = bool
      # Deliveries before dead-lettering, from the step's retries.
      max_delivery_attempts = optional(number)
      environment           = map(string)
    }))
  }))
}
