"""Database.run_read / read_inline: one snapshot per body, inline on the loop for short reads,
moved to a reader thread when a lock is in the way or the read runs over its budget."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from sqlalchemy import func, insert, select, text

from mailserver.store import schema, sqlitereader
from mailserver.store.engine import Database


@pytest.fixture
async def sqlite_db(tmp_path):
    database = Database(f"sqlite:///{tmp_path}/mail.sqlite3")
    await database.create_schema()
    try:
        yield database
    finally:
        await database.close()


async def _count_domains(conn) -> tuple[int, str]:
    n = (await conn.execute(select(func.count()).select_from(schema.domains))).scalar_one()
    return n, threading.current_thread().name


async def _add_domain(db, name: str) -> None:
    async with db.write() as conn:
        await conn.execute(insert(schema.domains).values(name=name, created_at=1))


async def test_read_inline_and_run_read_see_commits(db):
    await _add_domain(db, "a.example")
    n, where = await db.read_inline(_count_domains)
    assert n == 1
    if db.is_sqlite:
        assert where == threading.current_thread().name  # no hop
    await _add_domain(db, "b.example")
    n, where = await db.run_read(_count_domains)
    assert n == 2
    if db.is_sqlite:
        assert where.startswith("db-read")  # one hop to a reader thread


async def test_inline_body_is_one_snapshot(sqlite_db):
    """A commit between two statements of one inline read body is not seen by the second."""
    await _add_domain(sqlite_db, "a.example")
    other = sqlite3.connect(sqlite_db.url.split("///", 1)[1], isolation_level=None)
    try:
        async def body(conn):
            first = (await conn.execute(select(func.count()).select_from(schema.domains))
                     ).scalar_one()
            other.execute("INSERT INTO domains (name, created_at) VALUES ('b.example', 1)")
            second = (await conn.execute(select(func.count()).select_from(schema.domains))
                      ).scalar_one()
            return first, second

        assert await sqlite_db.read_inline(body) == (1, 1)
        assert (await sqlite_db.read_inline(_count_domains))[0] == 2
    finally:
        other.close()


async def test_inline_reads_refuse_writes(sqlite_db):

    async def writes(conn):
        await conn.execute(insert(schema.domains).values(name="x.example", created_at=1))

    with pytest.raises(Exception, match="readonly|read-only|query_only|attempt to write"):
        await sqlite_db.read_inline(writes)
    with pytest.raises(Exception, match="readonly|read-only|query_only|attempt to write"):
        await sqlite_db.run_read(writes)
    assert (await sqlite_db.read_inline(_count_domains))[0] == 0


async def test_long_inline_read_moves_to_a_thread(sqlite_db, monkeypatch):
    """Over the budget, the progress handler interrupts the inline transaction and the body
    runs again in a reader thread: the caller gets the full answer, the loop is not held."""
    monkeypatch.setattr(sqlitereader, "INLINE_BUDGET", 0.001)
    runs: list[str] = []

    async def heavy(conn):
        runs.append(threading.current_thread().name)
        return (await conn.execute(text(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
            "SELECT count(*) FROM c"))).scalar_one()

    loop_ticks = 0
    done = asyncio.Event()

    async def ticker():
        nonlocal loop_ticks
        while not done.is_set():
            loop_ticks += 1
            await asyncio.sleep(0.001)

    t = asyncio.create_task(ticker())
    try:
        assert await sqlite_db.read_inline(heavy) == 2000000
    finally:
        done.set()
        await t
    assert runs[0] == threading.current_thread().name  # tried inline first …
    assert len(runs) == 2 and runs[1].startswith("db-read")  # … then in a reader thread
    assert loop_ticks > 1  # the event loop kept running while the thread counted

    async def small(conn):
        return (await conn.execute(text("SELECT 42"))).scalar_one()

    assert await sqlite_db.read_inline(small) == 42  # the inline connection is usable again


async def test_inline_read_never_waits_for_a_lock(tmp_path):
    """A writer holding an exclusive lock (a rollback-journal file, where readers are blocked:
    the closest WAL gets is recovery or a checkpoint restart): the inline read does not sleep
    in the busy handler on the event loop; it goes to a reader thread, which waits there."""
    path = tmp_path / "lock.sqlite3"
    blocker = sqlite3.connect(str(path), isolation_level=None)
    blocker.execute("CREATE TABLE domains (id INTEGER PRIMARY KEY, name TEXT, created_at INT)")
    db = Database(f"sqlite:///{path}")  # only its readers touch the file: no switch to WAL
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        blocker.execute("INSERT INTO domains (name, created_at) VALUES ('held.example', 1)")
        asyncio.get_running_loop().call_later(0.3, blocker.execute, "COMMIT")
        n, where = await db.read_inline(_count_domains)
        assert n == 1  # read after the lock was released …
        assert where.startswith("db-read")  # … in a reader thread, the loop free meanwhile
    finally:
        blocker.close()
        await db.close()


async def test_reads_after_close_still_work(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/c.sqlite3")
    await db.create_schema()
    await _add_domain(db, "a.example")
    assert (await db.read_inline(_count_domains))[0] == 1
    db._reader.close()  # what Database.close() does first
    assert (await db.read_inline(_count_domains))[0] == 1  # the async engine's path
    assert (await db.run_read(_count_domains))[0] == 1
    await db.close()
