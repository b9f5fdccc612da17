"""Blob reference counts (table ``blobs``) and the sweeper that deletes unreferenced blobs.

Whoever stores a row that points at a blob (an email, a queue entry, an upload) calls
``add_ref`` in the same transaction; whoever deletes such a row calls ``drop_ref``. A blob whose
count has been 0 for longer than a grace period is deleted by ``sweep``: first its row (in a
transaction that re-checks count and age, so a concurrent ``add_ref`` wins), then its content,
only if the blob store says it was not put again within the grace period either.

The order on the ingest path is: ``BlobStore.put`` (durable) → metadata transaction with
``add_ref`` → commit. So a blob can exist with no row (a put whose transaction failed, or is
still running); ``sweep_orphans`` removes those, with the same grace.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.blobs.base import BlobStore
from mailserver.store import schema
from mailserver.store.engine import Database

__all__ = ["add_ref", "drop_ref", "sweep", "sweep_orphans"]

log = logging.getLogger(__name__)

_b = schema.blobs
_d = schema.blob_data


def _build_add_ref(insert):
    stmt = insert(_b).values(id=bindparam("p_id"), size=bindparam("p_size"),
                             refcount=bindparam("p_n"), updated_at=bindparam("p_now"))
    return stmt.on_conflict_do_update(
        index_elements=[_b.c.id],
        set_={"refcount": _b.c.refcount + stmt.excluded.refcount,
              "updated_at": stmt.excluded.updated_at})


# built once: on the delivery hot path, building the statement cost more than running it
_ADD_REF = {"postgresql": _build_add_ref(pg_insert), "sqlite": _build_add_ref(sqlite_insert)}


# the same as driver SQL (``mailserver.store.engine.DriverSQL``): add_ref is on the ingest path
_SQL_ADD_REF = ("INSERT INTO blobs (id, size, refcount, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET refcount = blobs.refcount + excluded.refcount, "
                "updated_at = excluded.updated_at")


async def add_ref(conn: AsyncConnection, blob_id: str, size: int, now: int, n: int = 1) -> None:
    """Count ``n`` more references to ``blob_id`` (creating its row on first use)."""
    from mailserver.store.engine import driver_sql

    await driver_sql(conn).execute(_SQL_ADD_REF, (blob_id, size, n, now))


async def drop_ref(conn: AsyncConnection, blob_id: str, now: int, n: int = 1) -> int | None:
    """Count ``n`` fewer references; returns the new count (None if the blob has no row).

    A count that would go negative is a bookkeeping bug elsewhere: it is logged and held at 0
    rather than failing the user's delete.
    """
    row = (await conn.execute(
        update(_b).where(_b.c.id == blob_id)
        .values(refcount=_b.c.refcount - n, updated_at=now)
        .returning(_b.c.refcount))).first()
    if row is None:
        log.warning("blob refcount: drop of unknown blob %s", blob_id)
        return None
    if row[0] < 0:
        log.warning("blob refcount: %s went to %d, held at 0", blob_id, row[0])
        await conn.execute(update(_b).where(_b.c.id == blob_id).values(refcount=0))
        return 0
    return row[0]


async def sweep(db: Database, blobstore: BlobStore, *, grace_seconds: int = 86400,
                now: float | None = None, batch: int = 1000) -> int:
    """Delete blobs unreferenced for more than ``grace_seconds``; returns how many were deleted.

    Per batch: one transaction deletes the rows with ``refcount = 0`` and ``updated_at`` older
    than the grace (the DELETE re-checks both, so a concurrent ``add_ref`` that committed first
    keeps its row); after the commit each blob is deleted only if the store has not seen a put
    of it within the grace either (``BlobStore.delete_if_older``).

    Why a concurrent re-delivery of the same content is safe: it does ``put`` (which, for a
    blob that still exists, refreshes its mtime) and then ``add_ref`` (which re-creates the row).
    If its put came first, the fresh mtime stops the file deletion; if it came after, the put
    found no file and wrote a new one. ``FileBlobStore`` renames the file away *before* looking
    at the mtime, so no put can slip between the check and the unlink. Inline content
    (``blob_data``) is deleted by the same transaction as the row; a re-delivery writes its
    reference before its content, so it either keeps both or writes both again.

    The remaining race: a writer whose ``put`` returned more than ``grace_seconds`` before its
    ``add_ref`` commits (the put touched the blob, but so long ago that it looks unused, and
    the row does not exist yet). On the ingest path the two are milliseconds apart; with a grace
    of a day that cannot happen short of a process stalled for a day mid-transaction, and such
    a transaction would be long dead (statement/idle timeouts). Stores without modification
    times (the base ``delete_if_older``) also lose the put-touch protection and rely on the row
    grace alone; keep the grace generous there.
    """
    now = time.time() if now is None else now
    cutoff = int(now) - grace_seconds
    deleted = 0
    while True:
        async with db.write() as conn:
            candidates = (select(_b.c.id).where(_b.c.refcount <= 0, _b.c.updated_at < cutoff)
                          .limit(batch))
            ids = (await conn.execute(
                delete(_b).where(_b.c.id.in_(candidates), _b.c.refcount <= 0,
                                 _b.c.updated_at < cutoff)
                .returning(_b.c.id))).scalars().all()
            inline: set[str] = set()
            if ids:  # the content of inline blobs goes with the row (mailserver.blobs.inline)
                inline = set((await conn.execute(
                    delete(_d).where(_d.c.id.in_(ids)).returning(_d.c.id))).scalars().all())
        for blob_id in ids:
            if await blobstore.delete_if_older(blob_id, cutoff) or blob_id in inline:
                deleted += 1
        if len(ids) < batch:
            return deleted


async def sweep_orphans(db: Database, blobstore: BlobStore, *, grace_seconds: int = 86400,
                        now: float | None = None, batch: int = 500) -> int:
    """Delete stored blobs that have no ``blobs`` row and were not put within the grace.

    They come from puts whose metadata transaction never committed. This lists the whole
    store, so it belongs in a daily fsck, not in the regular sweep.
    """
    now = time.time() if now is None else now
    cutoff = int(now) - grace_seconds
    deleted = 0
    chunk: list[str] = []

    async def flush() -> int:
        async with db.read() as conn:
            known = set((await conn.execute(
                select(_b.c.id).where(_b.c.id.in_(chunk)))).scalars().all())
        n = 0
        for blob_id in chunk:
            if blob_id not in known and await blobstore.delete_if_older(blob_id, cutoff):
                n += 1
        chunk.clear()
        return n

    async for blob_id in blobstore.iter_ids():
        chunk.append(blob_id)
        if len(chunk) >= batch:
            deleted += await flush()
    if chunk:
        deleted += await flush()
    return deleted
