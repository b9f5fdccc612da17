"""Run store functions inside the SQLite connection's own thread, one hop per transaction body.

Why: SQLAlchemy's async adapter for aiosqlite costs a thread hop (and a GIL hand-off) per
cursor operation — several per statement. Measured here: ~1.3 ms per simple statement through
``AsyncConnection.execute`` against ~0.06 ms through plain aiosqlite and ~0.003 ms inside the
thread; a delivery needs ~12 statements. So the group-commit writer hands the whole batch to the
thread that owns the sqlite3 connection and runs it there through a *synchronous* SQLAlchemy
connection on that same sqlite3 connection.

The store functions are ``async`` (they take an ``AsyncConnection``); ``ThreadConnection`` looks
like one but completes every ``execute`` at once, so their coroutines finish without ever
suspending and ``drive()`` runs them to completion synchronously. A store function that awaited
anything else (a lock, a sleep, the network) would be a bug in the store layer and is reported.

The transaction itself (``BEGIN IMMEDIATE`` … ``COMMIT``) stays with ``Database.write()``; the
borrowed connection ignores commit/rollback requests from the synchronous side.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import StaticPool

T = TypeVar("T")


class ThreadConnection:
    """An ``AsyncConnection`` look-alike over a synchronous connection (see module docstring)."""

    __slots__ = ("sync", "dialect")

    def __init__(self, sync: Connection) -> None:
        self.sync = sync
        self.dialect = sync.dialect

    async def execute(self, statement: Any, parameters: Any = None, **kw: Any) -> Any:
        return self.sync.execute(statement, parameters, **kw)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> Any:
        if parameters is None:
            return self.sync.exec_driver_sql(statement)
        return self.sync.exec_driver_sql(statement, parameters)


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to completion, synchronously."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a store function awaited something other than the database")


async def transaction(tc: ThreadConnection, begin: str,
                      body: Callable[[ThreadConnection], Coroutine[Any, Any, T]],
                      lock_fd: int | None = None) -> T:
    """``begin``; body; ``COMMIT`` — or ``ROLLBACK`` if the body or the commit fails — on the
    sqlite3 connection under ``tc``, holding ``flock(lock_fd)`` throughout when given (see
    ``Database._writer_lock_fd``). Meant for ``drive``/``run_in_thread``: it never suspends."""
    raw = tc.sync.connection.dbapi_connection
    if lock_fd is not None:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # blocks this connection's thread only
    try:
        raw.execute(begin)
        try:
            result = await body(tc)
            raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
        return result
    finally:
        if lock_fd is not None:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)


class _Borrowed:
    """The sqlite3 connection, minus transaction control (Database.write() owns it)."""

    def __init__(self, raw: Any) -> None:
        object.__setattr__(self, "_raw", raw)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __setattr__(self, name: str, value: Any) -> None:
        pass  # isolation_level & co. stay as Database configured them


def _sync_engine(aio: Any):
    engine = getattr(aio, "_mailserver_sync_engine", None)
    if engine is None:
        borrowed = _Borrowed(aio._conn)
        engine = create_engine("sqlite://", creator=lambda: borrowed, poolclass=StaticPool)
        aio._mailserver_sync_engine = engine
    return engine


def supported(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "sqlite"


async def run_in_thread(conn: AsyncConnection,
                        body: Callable[[ThreadConnection], Coroutine[Any, Any, T]]) -> T:
    """Run ``body(thread_conn)`` inside the SQLite thread of ``conn`` (in its transaction)."""
    raw = await conn.get_raw_connection()
    aio = raw.driver_connection  # aiosqlite.Connection

    def run() -> T:
        engine = _sync_engine(aio)
        with engine.connect() as sync:
            return drive(body(ThreadConnection(sync)))

    return await aio._execute(run)
