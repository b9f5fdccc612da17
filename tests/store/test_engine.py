"""The engine layer: schema creation and transaction discipline on both engines."""

from sqlalchemy import func, insert, select, text

from mailserver.store import schema


async def test_schema_and_roundtrip(db):
    async with db.write() as conn:
        await conn.execute(insert(schema.domains).values(name="example.com", created_at=1))
    async with db.read() as conn:
        n = (await conn.execute(select(func.count()).select_from(schema.domains))).scalar_one()
    assert n == 1


async def test_rollback_on_error(db):
    try:
        async with db.write() as conn:
            await conn.execute(insert(schema.domains).values(name="a.example", created_at=1))
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    async with db.read() as conn:
        n = (await conn.execute(select(func.count()).select_from(schema.domains))).scalar_one()
    assert n == 0


async def test_sqlite_pragmas(db):
    if not db.is_sqlite:
        return
    async with db.read() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
        assert (await conn.execute(text("PRAGMA synchronous"))).scalar_one() == 2  # FULL


async def test_account_changeset_and_default_mailboxes(db):
    from mailserver.store.accountlock import begin_change
    from mailserver.store.mailboxes import create_default_mailboxes

    async with db.write() as conn:
        await conn.execute(insert(schema.domains).values(name="example.com", created_at=1))
        dom = (await conn.execute(select(schema.domains.c.id))).scalar_one()
        res = await conn.execute(insert(schema.accounts).values(
            domain_id=dom, login="u@example.com", password_hash="x", created_at=1))
        acc = res.inserted_primary_key[0]
        cs = await begin_change(conn, acc)
        ids = await create_default_mailboxes(conn, cs)
        await cs.flush(conn)
    assert set(ids) == {"inbox", "sent", "drafts", "trash", "junk", "archive"}
    async with db.read() as conn:
        rows = (await conn.execute(select(schema.mailboxes.c.uidvalidity))).scalars().all()
        modseq = (await conn.execute(select(schema.accounts.c.modseq))).scalar_one()
        nchanges = (await conn.execute(select(func.count()).select_from(schema.changes))).scalar_one()
    assert len(set(rows)) == 6 and all(0 < v < 2**32 for v in rows)
    assert modseq == 2 and nchanges == 6
