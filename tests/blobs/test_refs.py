"""Blob reference counts and the sweeper (both engines)."""

import os
import time

import pytest
from sqlalchemy import select

from mailserver.blobs.fs import FileBlobStore
from mailserver.store import schema
from mailserver.store.blobrefs import add_ref, drop_ref, sweep, sweep_orphans

DAY = 86400


@pytest.fixture
def store(tmp_path):
    return FileBlobStore(tmp_path / "blobs")


async def _row(db, blob_id):
    async with db.read() as conn:
        row = (await conn.execute(select(schema.blobs.c.size, schema.blobs.c.refcount,
                                         schema.blobs.c.updated_at)
                                  .where(schema.blobs.c.id == blob_id))).first()
    return None if row is None else tuple(row)


def _age(store, blob_id, seconds):
    t = time.time() - seconds
    os.utime(store.path(blob_id), (t, t))


async def test_add_and_drop(db):
    blob = "a" * 64
    async with db.write() as conn:
        await add_ref(conn, blob, 123, 1000)
        await add_ref(conn, blob, 123, 1001, n=3)
    assert await _row(db, blob) == (123, 4, 1001)
    async with db.write() as conn:
        assert await drop_ref(conn, blob, 1002) == 3
        assert await drop_ref(conn, blob, 1003, n=3) == 0
    assert await _row(db, blob) == (123, 0, 1003)
    async with db.write() as conn:
        assert await drop_ref(conn, blob, 1004) == 0  # held at 0, logged
        assert await drop_ref(conn, "b" * 64, 1004) is None
    assert await _row(db, blob) == (123, 0, 1004)
    # a ref taken in a rolled-back transaction never happened
    with pytest.raises(RuntimeError):
        async with db.write() as conn:
            await add_ref(conn, blob, 123, 1005)
            raise RuntimeError
    assert await _row(db, blob) == (123, 0, 1004)


async def test_concurrent_add_ref(db):
    import asyncio

    blob = "c" * 64

    async def one(i):
        async with db.write() as conn:
            await add_ref(conn, blob, 5, 2000 + i)

    await asyncio.gather(*(one(i) for i in range(8)))
    assert (await _row(db, blob))[:2] == (5, 8)


async def test_sweep_honours_refcount_and_grace(db, store):
    now = time.time()
    live = await store.put(b"still referenced")
    young = await store.put(b"unreferenced since an hour")
    old = await store.put(b"unreferenced for two days")
    touched = await store.put(b"unreferenced row, but just put again")
    async with db.write() as conn:
        await add_ref(conn, live, 16, int(now) - 3 * DAY)
        for blob_id, since in ((young, 3600), (old, 2 * DAY), (touched, 2 * DAY)):
            await add_ref(conn, blob_id, 10, int(now) - 3 * DAY)
            await drop_ref(conn, blob_id, int(now) - since)
    for blob_id in (live, young, old, touched):
        _age(store, blob_id, 3 * DAY)
    await store.put(b"unreferenced row, but just put again")  # fresh mtime

    assert await sweep(db, store, grace_seconds=DAY, now=now) == 1
    assert not await store.exists(old) and await _row(db, old) is None
    assert await store.exists(live) and (await _row(db, live))[1] == 1
    assert await store.exists(young) and await _row(db, young) is not None
    # the re-put blob's row was old enough to go, its file was not
    assert await store.exists(touched) and await _row(db, touched) is None
    # a later sweep finds nothing more; the young one goes once its grace is over
    assert await sweep(db, store, grace_seconds=DAY, now=now) == 0
    assert await sweep(db, store, grace_seconds=DAY, now=now + DAY) == 1
    assert not await store.exists(young)


async def test_sweep_in_batches(db, store):
    now = int(time.time())
    ids = [await store.put(f"m{i}".encode()) for i in range(7)]
    async with db.write() as conn:
        for blob_id in ids:
            await add_ref(conn, blob_id, 2, now - 3 * DAY)
            await drop_ref(conn, blob_id, now - 2 * DAY)
    for blob_id in ids:
        _age(store, blob_id, 3 * DAY)
    assert await sweep(db, store, grace_seconds=DAY, now=now, batch=3) == 7
    assert [i async for i in store.iter_ids()] == []


async def test_re_reference_after_row_sweep_recreates_row(db, store):
    """The re-delivery race: row swept, same content put again → new row, file kept."""
    now = int(time.time())
    data = b"popular newsletter"
    blob_id = await store.put(data)
    async with db.write() as conn:
        await add_ref(conn, blob_id, len(data), now - 3 * DAY)
        await drop_ref(conn, blob_id, now - 2 * DAY)
    _age(store, blob_id, 3 * DAY)
    # re-delivery: put (touches the file) then add_ref, racing the sweep
    assert await store.put(data) == blob_id
    assert await sweep(db, store, grace_seconds=DAY, now=now) == 0
    async with db.write() as conn:
        await add_ref(conn, blob_id, len(data), now)
    assert await _row(db, blob_id) == (len(data), 1, now)
    assert await store.get(blob_id) == data


async def test_sweep_orphans(db, store):
    now = time.time()
    with_row = await store.put(b"has a row")
    orphan_old = await store.put(b"transaction never committed")
    orphan_new = await store.put(b"transaction still running")
    async with db.write() as conn:
        await add_ref(conn, with_row, 9, int(now))
    for blob_id in (with_row, orphan_old):
        _age(store, blob_id, 2 * DAY)
    assert await sweep_orphans(db, store, grace_seconds=DAY, now=now, batch=2) == 1
    assert {i async for i in store.iter_ids()} == {with_row, orphan_new}
