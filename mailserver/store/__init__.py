"""Metadata store: schema, per-aggregate queries and migrations (SQLite and PostgreSQL)."""
