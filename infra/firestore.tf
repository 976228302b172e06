# A project has one (default) database: set create_database = false to use one that
# exists already (Terraform would otherwise fail to create it).
resource "google_firestore_database" "runs" {
  count = var.create_database ? 1 : 0

  name                              = var.database
  location_id                       = var.firestore_location
  type                              = "FIRESTORE_NATIVE"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = "ABANDON"
}

locals {
  # The database's name once it exists, whether created here or not.
  database = var.create_database ? google_firestore_database.runs[0].name : var.database
}

# Finished runs carry ttl_field (finish time + RESUMABLE_RUN_RETENTION_DAYS); Firestore
# deletes them after it. No single-field index on it: a timestamp written in order would
# make a hotspot, and no query filters on it.
resource "google_firestore_field" "expire_at" {
  database   = local.database
  collection = var.collection
  field      = var.ttl_field

  ttl_config {}

  index_config {}
}

# Map steps write an item document at every claim, renewal and finish: indexes of fields
# no query uses would only cost writes (and, for timestamps, make hotspots).
resource "google_firestore_field" "map_items" {
  for_each = toset(var.unindexed_item_fields)

  database   = local.database
  collection = var.map_items_collection
  field      = each.value

  index_config {}
}

resource "google_firestore_index" "runs" {
  for_each = {
    for fields in var.firestore_indexes :
    join("-", [for f in fields : "${f.field_path}-${lower(f.order)}"]) => fields
  }

  database    = local.database
  collection  = var.collection
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value.field_path
      order      = fields.value.order
    }
  }
}
