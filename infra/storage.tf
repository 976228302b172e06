# Checkpoints: run folders under runs/{tenant}/{pipeline}/{run_id}/.
resource "google_storage_bucket" "runs" {
  name                        = var.bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  # No rule deletes live objects by age: a run resumed after weeks still needs its params
  # and blobs, however old. Only what no run reads goes: overwritten or deleted versions,
  # and the parts of uploads abandoned midway. (The same rules as `resumable deploy gcloud`.)
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }
}

# The functions' source archives; the runtime account cannot read or change them.
resource "google_storage_bucket" "sources" {
  name                        = var.source_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_retention_days
    }
    action {
      type = "Delete"
    }
  }
}

data "archive_file" "functions" {
  type        = "zip"
  source_dir  = var.source_dir
  output_path = "${path.root}/.terraform/functions-source.zip"
}

# Named by content: a changed bundle is a new object, which redeploys the functions.
resource "google_storage_bucket_object" "functions" {
  name   = "functions/${data.archive_file.functions.output_sha256}.zip"
  bucket = google_storage_bucket.sources.name
  source = data.archive_file.functions.output_path
}
