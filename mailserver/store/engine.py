"""Database connections for both engines: SQLite (aiosqlite) and PostgreSQL (asyncpg).

``Database.write()`` opens a write transaction, ``Database.read()`` a read transaction.

SQLite: WAL, ``synchronous=FULL`` (a commit is on disk when it returns), ``BEGIN IMMEDIATE`` for
writers so that a writer never fails half-way on a lock upgrade, a busy timeout for writers in
other processes, and an in-process lock so that writers of one process queue on the event loop
instead of spinning on SQLITE_BUSY. Readers use deferred transactions and never block writers.

PostgreSQL: READ COMMITTED; writers serialise per account by locking the ``accounts`` row
(see ``mailserver.store.schema``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")


def normalize_url(url: str) -> str:
    """Accept plain ``sqlite:///…`` / ``postgresql://…`` URLs and pick our async drivers."""
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+aiosqlite"):
        return str(u.set(drivername="sqlite+aiosqlite"))
    if u.drivername in ("postgresql", "postgres", "postgresql+asyncpg"):
        return u.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL scheme {u.drivername!r} (sqlite or postgresql)")


class Database:
    """An engine plus the transaction discipline of this project."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = normalize_url(url)
        self.dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "postgresql":
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False)
        else:
            # Every aiosqlite connection is a thread plus an open database with its PRAGMAs:
            # keep enough of them pooled that concurrent sessions do not open and close
            # overflow connections all the time (that churn cost more CPU than the queries).
            kwargs.update(pool_size=max(pool_size, 20), max_overflow=20)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        if self.dialect == "sqlite":
            self._setup_sqlite()

    def _setup_sqlite(self) -> None:
        sync_engine = self.engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control away from the driver so BEGIN IMMEDIATE is ours to emit.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA cache_size=-20000")
            cursor.close()

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            if conn.get_execution_options().get("writer"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block exits normally, rolled back otherwise."""
        if self._write_lock is not None:
            async with self._write_lock:
                async with self.engine.connect() as conn:
                    conn = await conn.execution_options(writer=True)
                    async with conn.begin():
                        yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (a consistent snapshot on both engines)."""
        async with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield conn

    async def run_read(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``await body(conn)`` in one read transaction.

        On SQLite the whole body runs inside the connection's own thread in one hop
        (``mailserver.store.inthread``): through the async adapter every statement costs
        ~1 ms of thread hand-offs, which made a three-query address lookup cost more CPU
        than parsing the message. ``body`` must only execute statements on ``conn``.
        """
        if self.dialect != "sqlite":
            async with self.read() as conn:
                return await body(conn)
        async with self.engine.connect() as conn:
            return await _in_sqlite_thread(conn, "BEGIN", body)

    async def run_write(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``await body(conn)`` in one write transaction, committed when it returns.

        Same as ``write()``, but on SQLite ``BEGIN IMMEDIATE``, the body and ``COMMIT`` (or
        ``ROLLBACK`` when the body raises) run in the connection's thread in one hop.
        """
        if self._write_lock is None:
            async with self.write() as conn:
                return await body(conn)
        async with self._write_lock:
            async with self.engine.connect() as conn:
                return await _in_sqlite_thread(conn, "BEGIN IMMEDIATE", body)

    async def create_schema(self) -> None:
        """Create every table and the engine-specific search index (tests, ``init``).

        Production upgrades go through the Alembic migrations (``mailserver migrate``), whose
        baseline revision calls this same function.
        """
        from mailserver.store.schema import metadata
        from mailserver.store.search import search_ddl

        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            for statement in search_ddl(self.dialect):
                await conn.exec_driver_sql(statement)

    async def close(self) -> None:
        await self.engine.dispose()


async def _in_sqlite_thread(conn: AsyncConnection, begin: str,
                            body: Callable[[Any], Awaitable[T]]) -> T:
    """``begin``; body; COMMIT — or ROLLBACK if the body raises — all in the sqlite thread."""
    from mailserver.store import inthread

    async def txn(tc: Any) -> T:
        await tc.exec_driver_sql(begin)
        try:
            result = await body(tc)
        except BaseException:
            await tc.exec_driver_sql("ROLLBACK")
            raise
        await tc.exec_driver_sql("COMMIT")
        return result

    return await inthread.run_in_thread(conn, txn)
