"""``ImapStore``: ``MailStore`` with every transaction body run in one hop.

``MailStore.read``/``change`` go through SQLAlchemy's async adapter, which on SQLite costs a
thread hand-off per cursor operation (~1 ms a statement, see ``mailserver.store.inthread``);
``Database.run_read``/``run_write`` run the whole body inside the connection's thread instead
(PostgreSQL: the same as ``read()``/``write()``). IMAP issues several small transactions per
command, so this is most of its database cost. Bodies must only execute statements on the
connection (no blob reads, no awaiting anything else): the one IMAP query that needs blob
headers (SEARCH HEADER on a header the store does not keep) uses ``slow_read``. Reads go
through the daemon's ``reads`` (on SQLite: its own connection, on the event loop); the
change set of a write is opened and flushed by ``writes`` (plain sqlite3 on SQLite), and on
SQLite ``Database.run_write`` runs the transaction (one hop to its writer thread).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.events import ChangeEvent
from mailserver.servers.imap import writes
from mailserver.store.accountlock import ChangeSet
from mailserver.store.mailstore import MailStore

T = TypeVar("T")


class ImapStore(MailStore):
    async def change(self, account_id: int,
                     fn: Callable[[AsyncConnection, ChangeSet], Awaitable[T]]) -> T:
        async def body(conn: AsyncConnection):
            cs = await writes.begin(conn, account_id)
            result = await fn(conn, cs)
            types = frozenset(cs.types)
            await writes.flush(conn, cs)
            return result, cs.modseq, types

        result, modseq, types = await self.db.run_write(body)
        if self.bus is not None and types:  # after the commit
            await self.bus.publish(ChangeEvent(account_id, modseq, types))
        return result

    reads = None  # the daemon's ``reads.StoreReads`` (set by it)

    async def read(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        if self.reads is not None:
            return await self.reads.run(fn)
        return await self.db.run_read(fn)

    async def slow_read(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        return await MailStore.read(self, fn)
