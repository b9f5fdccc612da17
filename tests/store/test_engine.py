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
