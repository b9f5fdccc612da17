"""Read transactions on SQLite without the async engine: ``Database.run_read`` /
``Database.read_inline`` (and the raw variants) on a file database.

Why: through SQLAlchemy's async adapter for aiosqlite every statement costs thread hand-offs
and greenlet switches, and a transaction a pool checkout, a hop for the raw connection and a
rollback-on-return hop: measured ~0.65 ms of CPU per read transaction of one tiny SELECT and
~0.3 ms per further statement. The daemons read on every command (an IMAP status check, an
SMTP RCPT, a JMAP state check), so that overhead was the largest cost of the simple ones.

Two ways in, same semantics: ``BEGIN`` (deferred: the snapshot starts at the first read, WAL
readers never block the writer), the body (store functions written against
``AsyncConnection``, driven synchronously by ``mailserver.store.inthread``), ``COMMIT``:

- ``run``: a small thread pool, one ``sqlite3`` connection per thread kept for the thread's
  life, a *synchronous* SQLAlchemy connection over it: one hop per transaction (~0.17 ms).
  For reads that may take a while (searches, listings of a large mailbox, exports).
- ``run_inline``: on the calling (event loop) thread itself, no hop at all. For the short
  indexed reads of the hot paths (address resolution, account rows, mailbox status, the
  messages of one mailbox view): for those the hop cost more than the read. It never waits for
  a lock (``busy_timeout=0``: ``sqlite3.OperationalError``), and ``Database.read_inline`` then
  takes the ``run`` path. Nor does it hold the event loop for long: a progress handler
  interrupts a transaction still running after ``INLINE_BUDGET`` (a search over a huge
  mailbox, say) and the caller re-runs it in a thread — a read body has no side effects, so
  running it again is safe, and at most the budget is wasted. One connection per calling
  thread.

``run_raw``/``run_inline_raw`` hand the body the ``sqlite3`` connection itself, for the few
hottest statements written as plain SQL (IMAP's per-command reads). Every connection is
``query_only``: a body that tried to write fails instead of bypassing ``Database.write()``'s
lock. After ``close()`` the ``Database`` falls back to the async engine.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from mailserver.store.inthread import ThreadConnection, drive

T = TypeVar("T")
THREADS = 4
INLINE_BUDGET = 0.02  # seconds on the event loop before a transaction moves to a thread
_PROGRESS_STEPS = 2000  # VM instructions between two looks at the clock


class NotInline(Exception):
    """An inline read found a lock in the way or ran over ``INLINE_BUDGET`` (or failed with
    another ``OperationalError``, which the re-run in a thread then reports as it is)."""


class ReaderConnection(ThreadConnection):
    """A ``ThreadConnection`` that also hands out its ``sqlite3`` connection (``dbapi``):
    the hottest statements (``jmap.queries.fetch_rows``) skip SQLAlchemy's execution context."""

    __slots__ = ("dbapi",)

    def __init__(self, sync: Any, dbapi: Any) -> None:
        super().__init__(sync)
        self.dbapi = dbapi


class SqliteReader:
    def __init__(self, url: str, busy_timeout_ms: int, threads: int = THREADS) -> None:
        sync_url = make_url(url).set(drivername="sqlite")
        self.engine = create_engine(sync_url, pool_size=threads + 2, max_overflow=threads,
                                    connect_args={"check_same_thread": False})

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # BEGIN/COMMIT are ours (below)
            # no waiting for locks yet (``_open`` decides): cache_size reads the schema
            dbapi_connection.execute("PRAGMA busy_timeout=0")
            dbapi_connection.execute("PRAGMA query_only=1")

        self.threads = threads
        self.busy_timeout_ms = busy_timeout_ms
        self._executor: ThreadPoolExecutor | None = None
        self.closed = False
        # one connection per thread (pool threads and inline callers), kept for its life
        self._pooled = threading.local()
        self._inline = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Any] = []
        self._deadline = threading.local()

    def _over_budget(self) -> int:
        return time.monotonic() > getattr(self._deadline, "at", float("inf"))

    def _open(self, local: threading.local, inline: bool) -> ReaderConnection:
        conn = getattr(local, "conn", None)
        if conn is None:
            sync = self.engine.connect()
            dbapi = sync.connection.dbapi_connection
            try:
                if not inline:  # a reader thread may wait for a lock; the event loop never
                    dbapi.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
                dbapi.execute("PRAGMA cache_size=-20000")
            except BaseException:
                sync.close()
                raise
            if inline:
                dbapi.set_progress_handler(self._over_budget, _PROGRESS_STEPS)
            conn = local.conn = ReaderConnection(sync, dbapi)
            with self._lock:
                self._opened.append(sync)
        return conn

    # ---- the transaction, on whichever thread calls it ----------------------------------

    @staticmethod
    def _txn(conn: ReaderConnection, body: Callable[[Any], Awaitable[T]]) -> T:
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

    @staticmethod
    def _txn_raw(conn: ReaderConnection, fn: Callable[..., T], args: tuple) -> T:
        dbapi = conn.dbapi
        dbapi.execute("BEGIN")
        try:
            return fn(dbapi, *args)
        finally:
            if dbapi.in_transaction:
                dbapi.execute("COMMIT")

    # ---- the two ways in --------------------------------------------------------------------

    def _on_this_thread(self, txn: Callable[..., T], *args: Any) -> T:
        self._deadline.at = time.monotonic() + INLINE_BUDGET
        try:
            return txn(self._open(self._inline, True), *args)
        except (sqlite3.OperationalError, DBAPIError) as exc:
            raise NotInline(str(exc)) from exc
        finally:
            self._deadline.at = float("inf")

    def run_inline(self, body: Callable[[Any], Awaitable[T]]) -> T:
        """Raises ``NotInline`` when locked or over the budget: run it again with ``run``."""
        return self._on_this_thread(self._txn, body)

    def run_inline_raw(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(sqlite3_connection, *args)``; ``NotInline`` as ``run_inline``."""
        return self._on_this_thread(self._txn_raw, fn, args)

    async def _in_pool(self, txn: Callable[..., T], *args: Any) -> T:
        if self.closed:
            raise RuntimeError("the database is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="db-read")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: txn(self._open(self._pooled, False), *args))

    async def run(self, body: Callable[[Any], Awaitable[T]]) -> T:
        return await self._in_pool(self._txn, body)

    async def run_raw(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._in_pool(self._txn_raw, fn, args)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        with self._lock:
            opened, self._opened = self._opened, []
        for sync in opened:
            try:
                sync.close()
            except Exception:  # noqa: BLE001 - a connection of a thread that is gone
                pass
        self.engine.dispose()
