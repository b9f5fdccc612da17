"""``InlineBlobStore``: small blobs in the database, the others in the blob store.

Why: on the ingest path a blob put into ``FileBlobStore`` costs a new file and its directory
entries (inode allocation, ``ab/cd`` directories), two or three fsyncs and a thread hop, before
the metadata transaction pays its own commit. For the sizes most mail has that was the largest
single cost of a delivery: ~11% of an MX process's CPU went to ext4's inode allocator alone,
and the fsyncs and hops to and from the blob thread came on top. A blob of at most
``max_size`` bytes (``[blobs] inline_max``, 64 KiB by default: most mail without attachments)
is instead written into ``blob_data`` by the same transaction that adds its reference
(``mailserver.store.messages.append``), so one commit — batched across concurrent deliveries by
the group commit — makes both the content and the metadata durable, atomically. SQLite
itself recommends this for blobs of this size ("Internal Versus External BLOBs"); Dovecot's
mdbox and Stalwart also keep many messages per file rather than one file per message.

Who writes inline: only ``Deliverer`` (``deliver``, ``append_to_mailbox``), which knows the
transaction. ``put`` — the queue, JMAP uploads, vacation replies — still stores in the blob
store first and durably, as the ``BlobStore`` contract says. Reads (``get``, ``get_range``,
``size``, ``exists``, ``heads``) look in ``blob_data`` first, then in the blob store, so blobs
written before this existed, or too large to be inline, are found as before.

Deletion: ``mailserver.store.blobrefs.sweep`` deletes a swept blob's ``blob_data`` row in the
transaction that deletes its ``blobs`` row (so a concurrent re-delivery either keeps both or
writes both again: ``messages`` writes the reference before the content, see there), then the
blob store's copy if any. ``iter_ids`` (orphan sweep, fsck) lists the blob store only: an inline
blob cannot be an orphan, its content and its reference commit together.

On PostgreSQL the same table (``bytea``) serves ``[blobs] backend = "s3"`` setups as well: one
round trip to the database instead of a PUT to object storage per small message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from mailserver.blobs.base import BlobNotFound, BlobStore, _check_range, validate_blob_id

__all__ = ["DEFAULT_INLINE_MAX", "InlineBlobStore"]

DEFAULT_INLINE_MAX = 64 * 1024

# substr() counts from 1 and works on BLOB (SQLite) and bytea (PostgreSQL) alike
_SQL_RANGE = "SELECT substr(data, ?, ?) FROM blob_data WHERE id = ?"
_SQL_ALL = "SELECT data FROM blob_data WHERE id = ?"
_SQL_SIZE = "SELECT length(data) FROM blob_data WHERE id = ?"
_SQL_DELETE = "DELETE FROM blob_data WHERE id = ?"
_BIG = 2**31 - 1  # "to the end" for substr (an int4 on PostgreSQL)


def _fetch_ranges(cur: Any, wanted: list[tuple[str, int, int]]) -> dict[str, bytes]:
    """blob id → bytes [start, end) for the ids that are inline (plain sqlite3 connection)."""
    out: dict[str, bytes] = {}
    for blob_id, start, end in wanted:
        row = cur.execute(_SQL_RANGE, (start + 1, min(end - start, _BIG), blob_id)).fetchone()
        if row is not None:
            out[blob_id] = bytes(row[0])
    return out


class InlineBlobStore(BlobStore):
    """``blob_data`` rows of ``db`` for blobs up to ``max_size`` bytes, ``files`` for the rest."""

    def __init__(self, db: Any, files: BlobStore, max_size: int = DEFAULT_INLINE_MAX) -> None:
        self.db = db
        self.files = files
        self.inline_max = max_size  # what Deliverer looks at; 0 turns inlining off

    # -- reads ------------------------------------------------------------------------------

    async def _ranges(self, wanted: list[tuple[str, int, int]]) -> dict[str, bytes]:
        """The inline ones among (blob id, start, end): one read transaction, on the calling
        thread when the database allows it (a few indexed rows)."""
        reader = self.db.raw_reader()
        if reader is not None:
            from mailserver.store.sqlitereader import NotInline

            try:
                return reader.run_inline_raw(_fetch_ranges, wanted)
            except NotInline:
                return await reader.run_raw(_fetch_ranges, wanted)

        async def body(conn: Any) -> dict[str, bytes]:
            from mailserver.store.engine import driver_sql

            sql = driver_sql(conn)
            out: dict[str, bytes] = {}
            for blob_id, start, end in wanted:
                rows = await sql.fetch(_SQL_RANGE, (start + 1, min(end - start, _BIG), blob_id))
                if rows:
                    out[blob_id] = bytes(rows[0][0])
            return out

        return await self.db.run_read(body)

    async def get(self, blob_id: str) -> bytes:
        validate_blob_id(blob_id)
        found = await self._ranges([(blob_id, 0, _BIG)])
        if blob_id in found:
            return found[blob_id]
        return await self.files.get(blob_id)

    async def get_range(self, blob_id: str, start: int, end: int) -> bytes:
        _check_range(start, end)
        validate_blob_id(blob_id)
        if end == start:
            if not await self.exists(blob_id):
                raise BlobNotFound(blob_id)
            return b""
        found = await self._ranges([(blob_id, start, end)])
        if blob_id in found:
            return found[blob_id]
        return await self.files.get_range(blob_id, start, end)

    async def heads(self, wanted: list[tuple[str, int]]) -> dict[str, bytes]:
        """blob id → its first ``end`` octets, for (blob id, end) pairs (FETCH ENVELOPE)."""
        for blob_id, _end in wanted:
            validate_blob_id(blob_id)
        out = await self._ranges([(b, 0, end) for b, end in wanted])
        rest = [(b, end) for b, end in wanted if b not in out]
        if rest:
            out.update(await self.files.heads(rest))
        return out

    async def _inline_size(self, blob_id: str) -> int | None:
        async def body(conn: Any) -> int | None:
            from mailserver.store.engine import driver_sql

            rows = await driver_sql(conn).fetch(_SQL_SIZE, (blob_id,))
            return int(rows[0][0]) if rows else None

        return await self.db.read_inline(body)

    async def exists(self, blob_id: str) -> bool:
        validate_blob_id(blob_id)
        return await self._inline_size(blob_id) is not None or await self.files.exists(blob_id)

    async def size(self, blob_id: str) -> int:
        validate_blob_id(blob_id)
        n = await self._inline_size(blob_id)
        return n if n is not None else await self.files.size(blob_id)

    # -- writes -----------------------------------------------------------------------------

    async def put(self, data: bytes) -> str:
        """Into the blob store, durable on return (the ``BlobStore`` contract): callers other
        than the ingest path reference the blob from a transaction of their own later."""
        return await self.files.put(data)

    async def delete(self, blob_id: str) -> None:
        validate_blob_id(blob_id)

        async def body(conn: Any) -> None:
            from mailserver.store.engine import driver_sql

            await driver_sql(conn).execute(_SQL_DELETE, (blob_id,))

        await self.db.run_write(body)
        await self.files.delete(blob_id)

    async def delete_if_older(self, blob_id: str, cutoff: float) -> bool:
        """The blob store's copy only: ``blobrefs.sweep`` deleted the inline row already, in
        the transaction that re-checked the reference count."""
        return await self.files.delete_if_older(blob_id, cutoff)

    def iter_ids(self) -> AsyncIterator[str]:
        return self.files.iter_ids()

    async def close(self) -> None:
        await self.files.close()
