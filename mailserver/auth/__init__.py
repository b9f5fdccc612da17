"""Credentials: password hashing and verification (argon2id, imported crypt-style hashes)."""
