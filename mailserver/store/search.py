"""Full-text search index (SQLite FTS5 / PostgreSQL tsvector + GIN) and search queries.

SQLite: the FTS5 table ``email_fts`` is keyed by ``rowid = (account_id << 32) | email_id`` so an
account's rows form one rowid range (an index-driven account filter); email ids are below 2**32
per account.
PostgreSQL: ``email_search(account_id, email_id, tsv)`` with a GIN index on ``tsv``.
"""

from __future__ import annotations


def search_ddl(dialect: str) -> list[str]:
    """Statements that create the engine-specific full-text index (idempotent)."""
    if dialect == "sqlite":
        return [
            "CREATE VIRTUAL TABLE IF NOT EXISTS email_fts USING fts5("
            "subject, addresses, body, tokenize = 'unicode61 remove_diacritics 2', "
            "prefix = '2 3')",
        ]
    return [
        "CREATE TABLE IF NOT EXISTS email_search ("
        " account_id BIGINT NOT NULL, email_id BIGINT NOT NULL, tsv TSVECTOR NOT NULL,"
        " PRIMARY KEY (account_id, email_id),"
        " FOREIGN KEY (account_id, email_id) REFERENCES emails (account_id, id) ON DELETE CASCADE)",
        "CREATE INDEX IF NOT EXISTS ix_email_search_tsv ON email_search USING GIN (tsv)",
    ]
