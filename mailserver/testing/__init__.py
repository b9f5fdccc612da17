"""Helpers for tests and benchmarks that start real components (no mocks)."""
