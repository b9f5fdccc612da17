"""Content-addressed blob stores (sha256): filesystem by default, S3 for many nodes."""
