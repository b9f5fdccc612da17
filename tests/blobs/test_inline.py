"""Small blobs in the database (mailserver.blobs.inline), on both engines: written by the
delivery's own transaction, read back whole, in ranges and as headers, counted, swept, and
checked by fsck; larger ones still go to the blob store."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))

from mailhelpers import create_account, directory, make_raw  # noqa: E402
from mailserver.blobs.base import BlobNotFound, InvalidBlobId, blob_id_of  # noqa: E402
from mailserver.blobs.fs import FileBlobStore  # noqa: E402
from mailserver.blobs.inline import DEFAULT_INLINE_MAX, InlineBlobStore  # noqa: E402
from mailserver.delivery import DELIVERED, Deliverer  # noqa: E402
from mailserver.events import LocalChangeBus  # noqa: E402
from mailserver.store import schema  # noqa: E402
from mailserver.store.blobrefs import sweep  # noqa: E402
from mailserver.store.fsck import fsck  # noqa: E402
from mailserver.store.mailboxes import get_mailbox_by_role  # noqa: E402
from mailserver.store.mailstore import MailStore  # noqa: E402

DAY = 86400
SMALL_MAX = 4096  # keeps the large messages of these tests small


@pytest.fixture
async def env(db, tmp_path):
    bob = await create_account(db, "bob@example.com")
    carol = await create_account(db, "carol@example.com")
    d = directory(db)
    files = FileBlobStore(tmp_path / "blobs", fsync=False)
    blobs = InlineBlobStore(db, files, SMALL_MAX)
    deliverer = Deliverer(db, blobs, d, LocalChangeBus())
    yield {"db": db, "bob": bob, "carol": carol, "files": files, "blobs": blobs,
           "deliverer": deliverer, "store": MailStore(db)}
    await deliverer.close()


def _big(subject: str) -> bytes:
    return make_raw(subject, body="x" * 70 + "\r\n" * 1 + ("line of a large body\r\n" * 400))


async def _data_rows(db) -> dict[str, bytes]:
    async with db.read() as conn:
        rows = (await conn.execute(select(schema.blob_data.c.id, schema.blob_data.c.data))).all()
    return {i: bytes(d) for i, d in rows}


async def _refcount(db, blob_id: str) -> int | None:
    async with db.read() as conn:
        return (await conn.execute(select(schema.blobs.c.refcount)
                                   .where(schema.blobs.c.id == blob_id))).scalar_one_or_none()


async def test_small_message_is_stored_in_the_delivery_transaction(env):
    raw = make_raw("small one", body="Hello inline world.\r\n")
    res = await env["deliverer"].deliver(raw, ["bob@example.com", "carol@example.com"])
    assert res["bob@example.com"].status == DELIVERED
    blob_id = res.blob_id
    assert blob_id == blob_id_of(raw)
    # in the database, once for both recipients, and no file at all
    assert await _data_rows(env["db"]) == {blob_id: raw}
    assert await _refcount(env["db"], blob_id) == 2
    assert not await env["files"].exists(blob_id)
    assert [p for p in Path(env["files"].root).rglob("*") if p.is_file()] == []
    blobs = env["blobs"]
    assert await blobs.get(blob_id) == raw
    assert await blobs.exists(blob_id) and await blobs.size(blob_id) == len(raw)
    assert await blobs.get_range(blob_id, 6, 11) == raw[6:11]
    assert await blobs.get_range(blob_id, 0, 10**12) == raw  # clamped like a slice
    assert await blobs.get_range(blob_id, len(raw) + 5, len(raw) + 9) == b""
    assert await blobs.get_range(blob_id, 3, 3) == b""
    head_end = raw.index(b"\r\n\r\n") + 4
    assert await blobs.heads([(blob_id, head_end)]) == {blob_id: raw[:head_end]}
    assert (await fsck(env["db"], blobs)).ok


async def test_large_message_goes_to_the_blob_store(env):
    raw = _big("large one")
    assert len(raw) > SMALL_MAX
    res = await env["deliverer"].deliver(raw, ["bob@example.com"])
    assert await env["files"].get(res.blob_id) == raw
    assert await _data_rows(env["db"]) == {}
    small = make_raw("small")
    res2 = await env["deliverer"].deliver(small, ["bob@example.com"])
    # heads() of a mixed batch: one from the database, one from a file
    got = await env["blobs"].heads([(res.blob_id, 20), (res2.blob_id, 15)])
    assert got == {res.blob_id: raw[:20], res2.blob_id: small[:15]}
    assert await env["blobs"].get(res.blob_id) == raw
    assert await env["blobs"].size(res.blob_id) == len(raw)
    assert (await fsck(env["db"], env["blobs"])).ok


async def test_unknown_and_invalid_ids(env):
    blobs = env["blobs"]
    missing = "0" * 64
    for call in (blobs.get(missing), blobs.get_range(missing, 0, 5), blobs.size(missing),
                 blobs.heads([(missing, 10)]), blobs.get_range(missing, 2, 2)):
        with pytest.raises(BlobNotFound):
            await call
    assert not await blobs.exists(missing)
    with pytest.raises(InvalidBlobId):
        await blobs.get("../../etc/passwd")


async def test_concurrent_deliveries_share_one_batch_and_dedupe(env):
    same = make_raw("same content", message_id="same@example.org")
    raws = [make_raw(f"n{i}", body=f"body {i}\r\n") for i in range(30)] + [same] * 5
    results = await asyncio.gather(*(env["deliverer"].deliver(r, ["bob@example.com"])
                                     for r in raws))
    assert all(r["bob@example.com"].status == DELIVERED for r in results)
    rows = await _data_rows(env["db"])
    assert len(rows) == 31 and rows[blob_id_of(same)] == same
    assert await _refcount(env["db"], blob_id_of(same)) == 5
    for raw, res in zip(raws, results):
        assert await env["blobs"].get(res.blob_id) == raw


async def test_append_to_mailbox_is_inline_too(env):
    db = env["db"]
    async with db.read() as conn:
        sent = (await get_mailbox_by_role(conn, env["bob"], "sent")).id
    raw = make_raw("appended")
    d = await env["deliverer"].append_to_mailbox(env["bob"], sent, raw, ["$seen"])
    async with db.read() as conn:
        blob_id = (await conn.execute(select(schema.emails.c.blob_id).where(
            schema.emails.c.id == d.email_id))).scalar_one()
    assert (await _data_rows(db))[blob_id] == raw
    assert await env["blobs"].get(blob_id) == raw


async def test_sweep_deletes_the_content_with_its_row_and_redelivery_restores_it(env):
    db, blobs, store = env["db"], env["blobs"], env["store"]
    raw = make_raw("to be swept")
    res = await env["deliverer"].deliver(raw, ["bob@example.com"])
    blob_id = res.blob_id
    d = res["bob@example.com"].deliveries[0]
    await store.destroy_emails(env["bob"], [d.email_id])
    assert await _refcount(db, blob_id) == 0
    # within the grace period nothing goes
    assert await sweep(db, blobs) == 0
    assert blob_id in await _data_rows(db)
    assert await sweep(db, blobs, now=time.time() + 2 * DAY) == 1
    assert await _data_rows(db) == {} and await _refcount(db, blob_id) is None
    with pytest.raises(BlobNotFound):
        await blobs.get(blob_id)
    # the same content delivered again is stored again
    res2 = await env["deliverer"].deliver(raw, ["bob@example.com"])
    assert res2.blob_id == blob_id and await blobs.get(blob_id) == raw
    assert await _refcount(db, blob_id) == 1
    assert (await fsck(db, blobs)).ok


async def test_fsck_reports_an_inline_blob_that_is_gone(env):
    db = env["db"]
    res = await env["deliverer"].deliver(make_raw("will vanish"), ["bob@example.com"])
    async with db.write() as conn:
        await conn.execute(schema.blob_data.delete())
    report = await fsck(db, env["blobs"])
    assert report.missing_blobs == [res.blob_id]


async def test_inline_off_and_the_configured_store(env, tmp_path):
    from mailserver.app import make_blob_store
    from mailserver.config import BlobsConfig

    db = env["db"]
    off = Deliverer(db, InlineBlobStore(db, env["files"], 0), directory(db), LocalChangeBus())
    try:
        raw = make_raw("not inline")
        res = await off.deliver(raw, ["bob@example.com"])
        assert await env["files"].get(res.blob_id) == raw
        async with db.read() as conn:
            n = (await conn.execute(select(func.count()).select_from(schema.blob_data))).scalar()
        assert n == 0
    finally:
        await off.close()
    configured = make_blob_store(BlobsConfig(path=str(tmp_path / "b2")), db)
    assert isinstance(configured, InlineBlobStore)
    assert configured.inline_max == DEFAULT_INLINE_MAX == 64 * 1024
    assert isinstance(make_blob_store(BlobsConfig(path=str(tmp_path / "b3"), inline_max=0), db),
                      FileBlobStore)


async def test_postgresql_keeps_inline_content_uncompressed(db):
    """``STORAGE EXTERNAL`` (schema.storage_ddl): pglz on every message cost the server more
    CPU than the rest of the delivery."""
    if db.dialect != "postgresql":
        pytest.skip("a PostgreSQL storage setting")
    async with db.read() as conn:
        storage = (await conn.exec_driver_sql(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = 'blob_data'::regclass "
            "AND attname = 'data'")).scalar_one()
    assert storage in ("e", b"e")  # a "char": asyncpg gives bytes
