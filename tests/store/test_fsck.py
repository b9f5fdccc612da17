"""fsck finds and repairs broken counters and refcounts, and reports missing blobs."""

from __future__ import annotations

import os

from sqlalchemy import update

from mailhelpers import create_account, directory, make_raw
from mailserver.blobs.fs import FileBlobStore
from mailserver.delivery import Deliverer
from mailserver.store import schema
from mailserver.store.fsck import fsck


async def test_fsck_detects_and_repairs(db, tmp_path):
    acc = await create_account(db)
    blobs = FileBlobStore(tmp_path / "blobs", fsync=False)
    dl = Deliverer(db, blobs, directory(db))
    results = [await dl.deliver(make_raw(f"m{i}"), ["bob@example.com"]) for i in range(3)]
    await dl.close()
    assert (await fsck(db, blobs)).ok

    mb, a, b = schema.mailboxes, schema.accounts, schema.blobs
    inbox = results[0]["bob@example.com"].deliveries[0].mailbox_id
    async with db.write() as conn:
        await conn.execute(update(mb).where(mb.c.id == inbox).values(
            total_count=7, unseen_count=0, uid_next=2))
        await conn.execute(update(a).where(a.c.id == acc).values(used_bytes=1))
        await conn.execute(update(b).where(b.c.id == results[1].blob_id).values(refcount=5))
    os.unlink(blobs.path(results[2].blob_id))

    report = await fsck(db, blobs)
    assert not report.ok
    assert report.missing_blobs == [results[2].blob_id]
    assert report.refcount_mismatches == [(results[1].blob_id, 5, 1)]
    assert report.uid_next_errors == [(acc, inbox, 3, 2)]
    assert report.counter_mismatches and report.used_bytes_mismatches
    assert "counter_mismatches=1" in report.summary()

    fixed = await fsck(db, blobs, repair=True)
    assert fixed.repaired >= 3
    after = await fsck(db, blobs)
    assert after.missing_blobs == [results[2].blob_id]  # reported, not invented
    after.missing_blobs.clear()
    assert after.ok
