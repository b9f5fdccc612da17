"""Write transactions on a SQLite file: one dedicated thread with its own ``sqlite3``
connection (``Database.run_write``).

Why: through the async engine a write transaction cost ~0.6 ms of CPU before its first
statement (a pool checkout through greenlets, a hop for the raw aiosqlite connection, the
pool's reset on return), and every delivery, APPEND, STORE and EXPUNGE is one. Writers of one
process are serialised anyway (``Database._write_lock``, then SQLite's single writer), so one
thread and one connection are all they need: one executor hop per transaction.

Same discipline as the async engine's connections: WAL, ``synchronous=FULL`` (a commit is on
disk when it returns), foreign keys, the busy timeout for writers of other processes,
``BEGIN IMMEDIATE`` so a writer never fails half-way on a lock upgrade, and ``flock`` on the
``<database>-writer.lock`` around the transaction when the caller passes its descriptor
(``Database._writer_lock_fd``). The body (store functions written against
``AsyncConnection``) runs through a synchronous SQLAlchemy connection on the same
``sqlite3`` connection, driven by ``mailserver.store.inthread``; ``driver_sql`` hands the hot
paths the ``sqlite3`` connection itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import create_engine
from sqlalchemy.pool import StaticPool

from mailserver.store.inthread import ThreadConnection, _Borrowed, drive, transaction

T = TypeVar("T")


class SqliteWriter:
    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="db-write")
        self._conn: sqlite3.Connection | None = None
        self._engine: Any = None
        self.closed = False

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                               f"busy_timeout={self.busy_timeout_ms}", "cache_size=-20000"):
                    conn.execute("PRAGMA " + pragma)
            except BaseException:
                conn.close()
                raise
            borrowed = _Borrowed(conn)  # transactions stay with _run
            self._engine = create_engine("sqlite://", creator=lambda: borrowed,
                                         poolclass=StaticPool)
            self._conn = conn
        return self._conn

    def _run(self, body: Callable[[Any], Awaitable[T]], lock_fd: int | None) -> T:
        self._open()
        with self._engine.connect() as sync:
            return drive(transaction(ThreadConnection(sync), "BEGIN IMMEDIATE", body, lock_fd))

    async def run(self, body: Callable[[Any], Awaitable[T]], lock_fd: int | None = None) -> T:
        """``body`` in one write transaction, committed when it returns (the caller holds
        the process's write lock)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._run, body, lock_fd)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._executor.shutdown(wait=True)
        if self._engine is not None:
            self._engine.dispose()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
