"""Database connections for both engines: SQLite (aiosqlite) and PostgreSQL (asyncpg).

``Database.write()`` opens a write transaction, ``Database.read()`` a read transaction.
``run_read(body)`` / ``run_write(body)`` run a whole transaction body in one go; on a SQLite
file ``run_read`` goes through ``mailserver.store.sqlitereader`` (a small thread pool on plain
``sqlite3`` connections) and ``read_inline(body)``, for the short indexed reads of the hot
paths, runs it on the calling thread without any hop.

SQLite: WAL, ``synchronous=FULL`` (a commit is on disk when it returns), ``BEGIN IMMEDIATE`` for
writers so that a writer never fails half-way on a lock upgrade, a busy timeout for writers in
other processes, and an in-process lock so that writers of one process queue on the event loop
instead of spinning on SQLITE_BUSY. Readers use deferred transactions and never block writers.
``run_write`` also takes an ``flock`` on ``<database>-writer.lock`` so that writers of several
processes hand over at once instead of sleeping in the busy handler (``_writer_lock_fd``).

PostgreSQL: READ COMMITTED; writers serialise per account by locking the ``accounts`` row
(see ``mailserver.store.schema``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from mailserver.store.sqlitereader import NotInline, SqliteReader
from mailserver.store.sqlitewriter import SqliteWriter

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
            # the rollback-on-return is done by _on_reset below, only when needed
            kwargs.update(pool_reset_on_return=None)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._reader: Any = None  # sqlitereader.SqliteReader, made on first use
        self._writer: Any = None  # sqlitewriter.SqliteWriter, made on first use
        self._sqlite_file: str | None = None  # a SQLite file (not :memory:): fast paths
        self._writer_file: str | None = None
        self._writer_fd: int | None = None
        if self.dialect == "sqlite":
            self._setup_sqlite()
            path = make_url(self.url).database
            if path and path != ":memory:" and not path.startswith("file:"):
                self._sqlite_file = path
                self._writer_file = path + "-writer.lock"

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

        @event.listens_for(sync_engine, "reset")
        def _on_reset(dbapi_connection: Any, _record: Any, state: Any) -> None:
            # The pool's rollback-on-return, skipped when no transaction is open: each one is
            # a round trip to the connection's thread, and run_read()/run_write() always end
            # their transactions themselves (behind SQLAlchemy's back, so it cannot know).
            if not state.asyncio_safe or state.transaction_was_reset:
                return
            try:
                open_txn = dbapi_connection.driver_connection.in_transaction
            except Exception:  # closed or broken: let the pool deal with it
                return
            if open_txn:
                dbapi_connection.rollback()

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

    def _sqlite_writer(self) -> Any:
        """The ``SqliteWriter`` of a SQLite file database (None otherwise or after close)."""
        if self._writer is None and self._sqlite_file is not None:
            self._writer = SqliteWriter(self._sqlite_file, SQLITE_BUSY_TIMEOUT_MS)
        return None if self._writer is None or self._writer.closed else self._writer

    def raw_reader(self) -> Any:
        """The ``SqliteReader`` of a SQLite file database (``store.sqlitereader``), also for
        plain-``sqlite3`` reads (``run_inline_raw``/``run_raw``); None for PostgreSQL,
        ``:memory:`` or after close, where callers keep a store-function path."""
        if self._reader is None and self._sqlite_file is not None:
            self._reader = SqliteReader(self.url, SQLITE_BUSY_TIMEOUT_MS)
        return None if self._reader is None or self._reader.closed else self._reader

    async def run_read(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``await body(conn)`` in one read transaction.

        On a SQLite file the whole transaction runs in one hop to a reader thread on a plain
        ``sqlite3`` connection (``mailserver.store.sqlitereader``). ``body`` must only execute
        statements on ``conn`` (it is driven synchronously: ``mailserver.store.inthread``).
        """
        reader = self.raw_reader()
        if reader is not None:
            return await reader.run(body)
        if self.dialect != "sqlite":
            async with self.read() as conn:
                return await body(conn)
        async with self.engine.connect() as conn:  # :memory: & co.: the connection's thread
            return await _in_sqlite_thread(conn, "BEGIN", body)

    async def read_inline(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``run_read``, but on a SQLite file right here on the calling thread: for a few short
        indexed reads (an address, an account row, a mailbox's status), where the hop to a
        thread cost more than the read. Never waits for a lock: when one is in the way
        (WAL recovery, a checkpoint restarting the log) it takes the ``run_read`` path."""
        reader = self.raw_reader()
        if reader is not None:
            try:
                return reader.run_inline(body)
            except NotInline:
                return await reader.run(body)
        return await self.run_read(body)

    async def run_write(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``await body(conn)`` in one write transaction, committed when it returns.

        Same as ``write()``, but on SQLite ``BEGIN IMMEDIATE``, the body and ``COMMIT`` (or
        ``ROLLBACK`` when the body raises) run in the connection's thread in one hop.
        """
        if self._write_lock is None:
            async with self.write() as conn:
                return await body(conn)
        async with self._write_lock:
            writer = self._sqlite_writer()
            if writer is not None:  # one hop to the writer thread: mailserver.store.sqlitewriter
                return await writer.run(body, self._writer_lock_fd())
            async with self.engine.connect() as conn:
                return await _in_sqlite_thread(conn, "BEGIN IMMEDIATE", body,
                                               self._writer_lock_fd())

    def _writer_lock_fd(self) -> int | None:
        """The ``<database>-writer.lock`` file that ``run_write`` takes (``flock``) around
        ``BEGIN IMMEDIATE`` … ``COMMIT`` on SQLite.

        Why: writers of several processes queue on SQLite's busy handler, which sleeps 1, 2,
        5 … 100 ms between retries, so the lock sat idle for most of each sleep while the other
        process had long committed (with two delivering processes the database was free ~40%
        of the time). A blocked ``flock`` wakes the moment the holder releases. It is advisory
        and only orders ``run_write`` callers among themselves; SQLite's own locking still
        decides (``write()`` users keep the busy handler), and the lock is always taken
        before the database lock, so no cycle. The kernel releases it when a process dies.
        """
        if self._writer_file is None:
            return None
        if self._writer_fd is None:
            try:
                # read-only and world-readable: flock needs no write access, so daemons
                # under another user share a lock file that root's CLI created
                self._writer_fd = os.open(self._writer_file,
                                          os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:  # read-only directory & co.: the busy handler alone
                self._writer_file = None
                return None
        return self._writer_fd

    async def create_schema(self) -> None:
        """Create every table and the engine-specific search index (tests, ``init``).

        Production upgrades go through the Alembic migrations (``mailserver migrate``), whose
        baseline revision calls this same function.
        """
        from mailserver.store.schema import metadata, storage_ddl
        from mailserver.store.search import search_ddl

        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            for statement in search_ddl(self.dialect) + storage_ddl(self.dialect):
                await conn.exec_driver_sql(statement)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._writer is not None:
            self._writer.close()
        await self.engine.dispose()
        if self._writer_fd is not None:
            os.close(self._writer_fd)
            self._writer_fd = None


async def _in_sqlite_thread(conn: AsyncConnection, begin: str,
                            body: Callable[[Any], Awaitable[T]], lock_fd: int | None = None) -> T:
    """``inthread.transaction`` in the aiosqlite connection's own thread."""
    from mailserver.store import inthread

    return await inthread.run_in_thread(
        conn, lambda tc: inthread.transaction(tc, begin, body, lock_fd))


# ---------------------------------------------------------------------------------------------
# Driver-level statements for the ingest hot path
# ---------------------------------------------------------------------------------------------


class DriverSQL:
    """Hand-written SQL straight to the DB-API driver, inside the caller's transaction.

    Why: a delivery runs ~12 statements; through SQLAlchemy Core each costs ~0.1–0.2 ms of
    Python (cache key, compiled-parameter processing, result wrapping, and on PostgreSQL a
    greenlet hop) against ~0.01 ms for sqlite3 in the writer thread and ~0.05 ms for asyncpg.
    Only the ingest path uses it; everything else keeps Core.

    SQL is written once with ``?`` placeholders (converted to ``$n`` for asyncpg, cached) and
    must be valid on both engines. ``fetch`` returns a list of tuples (asyncpg Records index
    like tuples), ``execute`` the row count. Errors are the driver's own exceptions.
    """

    __slots__ = ()
    dialect: str = ""

    async def fetch(self, sql: str, args: tuple = ()) -> list:
        raise NotImplementedError

    async def execute(self, sql: str, args: tuple = ()) -> int:
        raise NotImplementedError

    async def executemany(self, sql: str, rows: list[tuple]) -> None:
        raise NotImplementedError


_DOLLAR: dict[str, str] = {}


def _dollar(sql: str) -> str:
    """``?`` placeholders → ``$1``, ``$2`` … (the SQL here never has ``?`` inside literals)."""
    out = _DOLLAR.get(sql)
    if out is None:
        parts = sql.split("?")
        out = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1))
        if len(_DOLLAR) < 1000:
            _DOLLAR[sql] = out
    return out


class _SqliteRaw(DriverSQL):
    """The sqlite3 connection itself (in its own thread: see ``mailserver.store.inthread``)."""

    __slots__ = ("raw",)
    dialect = "sqlite"

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    async def fetch(self, sql: str, args: tuple = ()) -> list:
        return self.raw.execute(sql, args).fetchall()

    async def execute(self, sql: str, args: tuple = ()) -> int:
        return self.raw.execute(sql, args).rowcount

    async def executemany(self, sql: str, rows: list[tuple]) -> None:
        self.raw.executemany(sql, rows)


class _Asyncpg(DriverSQL):
    __slots__ = ("raw",)
    dialect = "postgresql"

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    async def fetch(self, sql: str, args: tuple = ()) -> list:
        return await self.raw.fetch(_dollar(sql), *args)

    async def execute(self, sql: str, args: tuple = ()) -> int:
        status = await self.raw.execute(_dollar(sql), *args)
        tail = status.rpartition(" ")[2]
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: list[tuple]) -> None:
        await self.raw.executemany(_dollar(sql), rows)


class _ThroughCore(DriverSQL):
    """Fallback: the same SQL through ``exec_driver_sql`` (an SQLite AsyncConnection outside the
    writer thread, or a PostgreSQL connection whose transaction has not begun yet)."""

    __slots__ = ("conn", "dialect")

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else _dollar(sql)

    async def fetch(self, sql: str, args: tuple = ()) -> list:
        return [tuple(r) for r in (await self.conn.exec_driver_sql(self._sql(sql), args)).all()]

    async def execute(self, sql: str, args: tuple = ()) -> int:
        return (await self.conn.exec_driver_sql(self._sql(sql), args)).rowcount

    async def executemany(self, sql: str, rows: list[tuple]) -> None:
        if rows:
            await self.conn.exec_driver_sql(self._sql(sql), rows)


def driver_sql(conn: Any) -> DriverSQL:
    """The ``DriverSQL`` for a transaction's connection (a ``ThreadConnection`` on SQLite's
    writer path, an ``AsyncConnection`` otherwise). No I/O: only attribute look-ups."""
    from mailserver.store.inthread import ThreadConnection

    if isinstance(conn, ThreadConnection):
        return _SqliteRaw(conn.sync.connection.dbapi_connection)
    name = conn.dialect.name
    if name == "postgresql":
        try:
            adapted = conn.sync_connection.connection.dbapi_connection
            if adapted._transaction is not None:  # BEGIN sent: statements join it
                return _Asyncpg(adapted._connection)
        except AttributeError:  # another driver / SQLAlchemy internals moved
            pass
    return _ThroughCore(conn, name)
