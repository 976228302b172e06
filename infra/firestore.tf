resource "google_firestore_database" "runs" {
  name                              = var.database
  location_id                       = var.firestore_location
  type                              = "FIRESTORE_NATIVE"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = "ABANDON"
}

# Finished runs carry ttl_field (finish time + run_retention_days); Firestore deletes
# them after it. No single-field index on it: a timestamp written in order would make
# a hotspot, and no query filters on it.
resource "google_firestore_field" "expire_at" {
  database   = google_firestore_database.runs.name
  collection = var.collection
  field      = var.ttl_field

  ttl_config {}

  index_config {}
}

resource "google_firestore_index" "runs" {
  for_each = {
    for fields in var.firestore_indexes :
    join("-", [for f in fields : "${f.field_path}-${lower(f.order)}"]) => fields
  }

  database    = google_firestore_database.runs.name
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
