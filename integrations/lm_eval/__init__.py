"""lm-evaluation-harness: the `fastdecode` model backend and task templates for local data."""
