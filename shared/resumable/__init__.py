"""resumable: crash-safe resumable pipelines."""
