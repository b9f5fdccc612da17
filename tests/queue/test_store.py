"""Queue rows: enqueue inside the caller's transaction, claims by lease, finish/defer."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailserver.blobs.fs import FileBlobStore
from mailserver.queue import store
from mailserver.queue.store import Recipient
from mailserver.store import schema

RAW = b"From: a@example.test\r\nTo: x@remote.test\r\nSubject: hi\r\n\r\nbody\r\n"


async def _enqueue(db, blobs, recipients, now=1000, **kw):
    blob_id = await blobs.put(RAW)
    async with db.write() as conn:
        return await store.enqueue(conn, blob_id=blob_id, size=len(RAW), sender="a@example.test",
                                   recipients=recipients, now=now, **kw)


async def test_enqueue_rows_and_blob_ref(db, tmp_path):
    blobs = FileBlobStore(tmp_path / "blobs")
    qid = await _enqueue(db, blobs, [Recipient("X@Remote.test", frozenset({"SUCCESS", "FAILURE"}),
                                               "rfc822;x@remote.test"),
                                     "x@remote.test", "y@other.test"],
                         ret="HDRS", envid="E1", requiretls=True, account_id=None)
    async with db.read() as conn:
        msg = (await conn.execute(select(schema.queue_messages))).one()
        rcpts = (await conn.execute(select(schema.queue_recipients)
                                    .order_by(schema.queue_recipients.c.id))).all()
        ref = (await conn.execute(select(schema.blobs.c.refcount)
                                  .where(schema.blobs.c.id == msg.blob_id))).scalar_one()
    assert msg.id == qid and msg.ret == "HDRS" and msg.envid == "E1" and msg.requiretls
    assert [r.recipient for r in rcpts] == ["X@Remote.test", "y@other.test"]  # deduplicated
    assert [r.domain for r in rcpts] == ["remote.test", "other.test"]
    assert rcpts[0].notify == "FAILURE,SUCCESS" and rcpts[0].orcpt == "rfc822;x@remote.test"
    assert ref == 1


async def test_enqueue_rolls_back_with_the_callers_transaction(db, tmp_path):
    blobs = FileBlobStore(tmp_path / "blobs")
    blob_id = await blobs.put(RAW)
    with pytest.raises(RuntimeError):
        async with db.write() as conn:
            await store.enqueue(conn, blob_id=blob_id, size=len(RAW), sender="",
                                recipients=["x@remote.test"], now=1)
            raise RuntimeError("caller fails after enqueue")
    async with db.read() as conn:
        assert (await conn.execute(select(schema.queue_messages))).all() == []
        assert (await conn.execute(select(schema.blobs))).all() == []


async def test_enqueue_rejects_bad_input(db, tmp_path):
    blobs = FileBlobStore(tmp_path / "blobs")
    for bad in ([], ["nodomain"], [Recipient("x@r.test", frozenset({"NEVER", "SUCCESS"}))]):
        with pytest.raises(ValueError):
            await _enqueue(db, blobs, bad)


async def test_claim_lease_finish_defer(db, tmp_path):
    blobs = FileBlobStore(tmp_path / "blobs")
    qid = await _enqueue(db, blobs, ["a@r.test", "b@r.test"], now=1000)
    async with db.write() as conn:
        mine = await store.claim(conn, owner="w1", now=1000, lease_seconds=60, limit=10)
    assert [c.recipient for c in mine] == ["a@r.test", "b@r.test"]
    assert mine[0].message.id == qid
    async with db.write() as conn:  # leased: nobody else gets them
        assert await store.claim(conn, owner="w2", now=1030, lease_seconds=60, limit=10) == []
    async with db.write() as conn:  # the lease expired (w1 crashed): w2 takes over
        theirs = await store.claim(conn, owner="w2", now=1061, lease_seconds=60, limit=10)
    assert len(theirs) == 2
    async with db.write() as conn:  # w1's late result is refused
        assert not await store.finish(conn, mine[0], 1062)
        assert await store.finish(conn, theirs[0], 1062)
        assert await store.defer(conn, theirs[1], now=1062, next_attempt_at=2000,
                                 status="4.0.0", error="451 try later")
    async with db.write() as conn:
        assert await store.claim(conn, owner="w3", now=1999, lease_seconds=60, limit=10) == []
        again = await store.claim(conn, owner="w3", now=2000, lease_seconds=60, limit=10)
        assert [c.attempts for c in again] == [1]
        assert await store.finish(conn, again[0], 2001)
    async with db.read() as conn:
        assert (await conn.execute(select(schema.queue_messages))).all() == []
        assert (await conn.execute(select(schema.blobs.c.refcount))).scalar_one() == 0
