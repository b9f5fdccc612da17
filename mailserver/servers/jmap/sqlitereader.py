"""Read transactions of the JMAP daemon on SQLite: a few threads, each running a whole
transaction body on a plain ``sqlite3`` connection.

Why: ``Database.run_read`` already runs the body in one thread hop, but around that hop the
async engine checks a connection out through greenlets, fetches the raw aiosqlite connection and
on check-in rolls back through another hop: measured ~0.65 ms of CPU per read transaction of a
single tiny SELECT, against ~0.17 ms here (a synchronous SQLAlchemy connection per thread on
the same database file, ``loop.run_in_executor``). A list view's JMAP request is two reads.

Same semantics as ``run_read``: ``BEGIN`` (deferred: the snapshot starts at the first read,
WAL readers never block the writer), the body (store functions written against
``AsyncConnection``, driven synchronously by ``mailserver.store.inthread``), ``COMMIT``. The
connections are ``query_only``: a body that tried to write would fail instead of bypassing the
write lock of ``Database.write()``. After ``close()`` (daemon stop) reads fall back to
``Database.run_read`` so requests still in flight finish.

``run_inline``: one more connection, used on the event loop thread itself for the reads that
are a single indexed row (the account MODSEQ that validates the JMAP state caches), where the
hop would cost more than the read; it never waits on a lock (``busy_timeout=0``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url

from mailserver.store.engine import SQLITE_BUSY_TIMEOUT_MS
from mailserver.store.inthread import ThreadConnection, drive

T = TypeVar("T")
THREADS = 4


class ReaderConnection(ThreadConnection):
    """A ``ThreadConnection`` that also hands out its ``sqlite3`` connection (``dbapi``):
    the hottest statements (``queries.fetch_rows``) skip SQLAlchemy's execution context."""

    __slots__ = ("dbapi",)

    def __init__(self, sync: Any, dbapi: Any) -> None:
        super().__init__(sync)
        self.dbapi = dbapi


class SqliteReader:
    def __init__(self, db: Any, threads: int = THREADS) -> None:
        self.db = db
        url = make_url(db.url).set(drivername="sqlite")
        self.engine = create_engine(url, pool_size=threads + 1, max_overflow=0,
                                    connect_args={"check_same_thread": False})

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # BEGIN/COMMIT are ours (below)
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA cache_size=-20000")
            cursor.execute("PRAGMA query_only=1")
            cursor.close()

        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="jmap-read")
        self.closed = False
        # one connection per thread, kept for the thread's life: no pool round trip per read
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Any] = []
        self._inline: ReaderConnection | None = None

    @staticmethod
    def usable(db: Any) -> bool:
        """A file database (not ``:memory:``, which is private to each connection)."""
        if not db.is_sqlite:
            return False
        name = make_url(db.url).database
        return bool(name) and name != ":memory:" and not name.startswith("file:")

    def _connection(self) -> ReaderConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            sync = self.engine.connect()
            conn = self._local.conn = ReaderConnection(sync, sync.connection.dbapi_connection)
            with self._lock:
                self._opened.append(sync)
        return conn

    def _run(self, body: Callable[[Any], Awaitable[T]]) -> T:
        conn = self._connection()
        dbapi = conn.dbapi
        dbapi.execute("BEGIN")
        try:
            result = drive(body(conn))  # type: ignore[arg-type]
        except BaseException:
            if dbapi.in_transaction:
                dbapi.execute("ROLLBACK")
            conn.sync.rollback()  # and SQLAlchemy's view of the connection with it
            raise
        dbapi.execute("COMMIT")
        return result

    def run_inline(self, body: Callable[[Any], Awaitable[T]]) -> T:
        """``body`` in a read transaction on the calling (event loop) thread, for a few
        indexed single-row reads only: cheaper than the thread hop. Never waits for a lock
        (``busy_timeout=0``): raises ``sqlite3.OperationalError`` instead, and the caller
        takes the ``run`` path."""
        conn = self._inline
        if conn is None:
            sync = self.engine.connect()
            conn = self._inline = ReaderConnection(sync, sync.connection.dbapi_connection)
            conn.dbapi.execute("PRAGMA busy_timeout=0")
            self._opened.append(sync)
        dbapi = conn.dbapi
        dbapi.execute("BEGIN")
        try:
            return drive(body(conn))  # type: ignore[arg-type]
        finally:
            if dbapi.in_transaction:
                dbapi.execute("COMMIT")

    async def run(self, body: Callable[[Any], Awaitable[T]]) -> T:
        if self.closed:
            return await self.db.run_read(body)
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._run, body)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.executor.shutdown(wait=True)
        for sync in self._opened:
            sync.close()
        self.engine.dispose()
