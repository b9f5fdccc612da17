"""The reads IMAP makes on every command, in as few hops as possible.

Profiled (server CPU per command, one client, SQLite): ~0.1-0.2 ms per SQLAlchemy statement
even without any thread hop, and every IMAP command makes one or two reads (the
``MailboxView.sync`` status check after each command alone). The same statements as plain
``sqlite3`` calls cost ~0.01-0.05 ms.

So on SQLite ``SqliteReads`` runs them as plain SQL on the Database's inline read connection
(``Database.raw_reader()``, ``store.sqlitereader``), directly on the event loop: each is a
short read of an indexed range (WAL readers never wait for writers) and costs far less than a
hand-off to a thread would. The SQL mirrors the store's
functions of the same names (``mailserver.store.messages``/``mailboxes``/``changes``) and
returns the same value objects. Every method is one transaction (a consistent snapshot).
``run(body)`` runs any store read function there too (``ImapStore.read``: LIST, STATUS,
SEARCH, …) through ``Database.read_inline``.
On PostgreSQL, ``StoreReads`` calls those store functions in one ``run_read`` each.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from mailserver.store import changes as changes_mod
from mailserver.store import messages as msg
from mailserver.store.keywords import decode_keywords
from mailserver.store.mailboxes import (
    InvalidMailboxName,
    Mailbox,
    MailboxNotFound,
    normalize_path,
)
from mailserver.store.sqlitereader import NotInline

Structures = dict[int, dict]  # email id → stored MIME structure (``emails.structure_json``)


class StoreReads:
    """Any engine: each method one read transaction through the store's functions."""

    def __init__(self, store) -> None:
        self.store = store

    async def mailbox_by_path(self, account_id: int, path: str) -> Mailbox | None:
        from mailserver.store import mailboxes as mbx

        return await self.store.read(lambda c: mbx.get_mailbox_by_path(c, account_id, path))

    async def open_mailbox(self, account_id: int, path: str):
        """(mailbox, status, messages ascending by UID) or (None, None, None)."""
        from mailserver.store import mailboxes as mbx

        async def read(conn):
            box = await mbx.get_mailbox_by_path(conn, account_id, path)
            if box is None:
                return None, None, None
            status = await msg.mailbox_status(conn, account_id, box.id)
            return box, status, await msg.list_messages(conn, account_id, box.id)

        return await self.store.read(read)

    async def changes(self, account_id: int, mailbox_id: int, since: int, known: list[int]):
        """(status or None when the mailbox is gone, messages changed after ``since``, UIDs
        expunged after it) — just the status when its HIGHESTMODSEQ is still ``since``."""
        async def read(conn):
            try:
                st = await msg.mailbox_status(conn, account_id, mailbox_id)
            except MailboxNotFound:
                return None, [], []
            if st.highest_modseq == since:
                return st, [], []
            rows = await msg.changed_since(conn, account_id, mailbox_id, since)
            try:
                gone = await changes_mod.vanished_since(conn, account_id, mailbox_id, since)
            except msg.CannotCalculateChanges:
                present = {u for u, _e, _m in await msg.uid_map(conn, account_id, mailbox_id)}
                gone = [u for u in known if u not in present]
            return st, rows, gone

        return await self.store.read(read)

    async def messages(self, account_id: int, mailbox_id: int, uids: list[int],
                       since: int | None = None,
                       structures: bool = False) -> tuple[list[msg.Message], Structures]:
        """The messages with these (ascending) UIDs — only those with MODSEQ > ``since`` —
        and, with ``structures``, their emails' MIME structures."""
        async def read(conn):
            rows = await _messages_in(conn, account_id, mailbox_id, uids)
            if since is not None:
                rows = [m for m in rows if m.modseq > since]
            found: Structures = {}
            if structures and rows:
                emails = await msg.get_emails(conn, account_id, [m.email_id for m in rows])
                found = {i: e.structure for i, e in emails.items()}
            return rows, found

        return await self.store.read(read)

    async def account_modseqs(self, account_ids: list[int]) -> dict[int, int]:
        async def read(conn):
            return {a: (await changes_mod.account_state(conn, a))[0] for a in account_ids}

        return await self.store.read(read)

    async def run(self, body):
        """``await body(conn)`` in one read transaction (a store function's body)."""
        return await self.store.db.run_read(body)

    def close(self) -> None:
        pass


async def _messages_in(conn, account_id: int, mailbox_id: int,
                       uids: list[int]) -> list[msg.Message]:
    if len(uids) > 200:
        rows = await msg.list_messages(conn, account_id, mailbox_id, uid_min=uids[0],
                                       uid_max=uids[-1])
        wanted = set(uids)
        return [m for m in rows if m.uid in wanted]
    return await msg.get_messages_by_uid(conn, account_id, mailbox_id, uids)


# ---- SQLite: plain sqlite3 on the event loop --------------------------------------------------

_MB_COLS = ("account_id, id, parent_id, name, path, role, sort_order, subscribed, uidvalidity, "
            "uid_next, highest_modseq, total_count, unseen_count, total_size")
_STATUS = ("SELECT total_count, unseen_count, uid_next, uidvalidity, highest_modseq, total_size "
           "FROM mailboxes WHERE account_id = ? AND id = ?")
_MSG = ("SELECT mm.mailbox_id, mm.uid, mm.email_id, mm.modseq, mm.saved_at, e.keywords, e.size, "
        "e.received_at, e.received_tz, e.sent_at, e.thread_id, e.blob_id "
        "FROM mailbox_messages mm JOIN emails e "
        "ON e.account_id = mm.account_id AND e.id = mm.email_id "
        "WHERE mm.account_id = ? AND mm.mailbox_id = ?")


def _message(r) -> msg.Message:
    return msg.Message(r[0], r[1], r[2], r[3], r[4], decode_keywords(r[5]), *r[6:])


class SqliteReads(StoreReads):
    def __init__(self, store, reader) -> None:
        super().__init__(store)
        self.reader = reader  # the Database's ``store.sqlitereader.SqliteReader``

    @classmethod
    def for_store(cls, store) -> StoreReads:
        reader = store.db.raw_reader()
        return StoreReads(store) if reader is None else cls(store, reader)

    async def _txn(self, fn, *args) -> Any:
        """``fn(sqlite3_connection, *args)`` in one read transaction, here on the event loop;
        in a reader thread when a lock is in the way (``Database.read_inline``)."""
        try:
            return self.reader.run_inline_raw(fn, *args)
        except NotInline:
            return await self.reader.run_raw(fn, *args)

    async def mailbox_by_path(self, account_id: int, path: str) -> Mailbox | None:
        return await self._txn(_mailbox_by_path, account_id, path)

    async def open_mailbox(self, account_id: int, path: str):
        def read(conn):
            box = _mailbox_by_path(conn, account_id, path)
            if box is None:
                return None, None, None
            st = msg.MailboxStatus(*conn.execute(_STATUS, (account_id, box.id)).fetchone())
            rows = conn.execute(_MSG + " ORDER BY mm.uid", (account_id, box.id)).fetchall()
            return box, st, [_message(r) for r in rows]

        return await self._txn(read)

    async def changes(self, account_id: int, mailbox_id: int, since: int, known: list[int]):
        def read(conn):
            row = conn.execute(_STATUS, (account_id, mailbox_id)).fetchone()
            if row is None:
                return None, [], []
            st = msg.MailboxStatus(*row)
            if st.highest_modseq == since:
                return st, [], []
            rows = [_message(r) for r in conn.execute(
                _MSG + " AND mm.modseq > ? ORDER BY mm.uid", (account_id, mailbox_id, since))]
            floor = conn.execute("SELECT changes_floor FROM accounts WHERE id = ?",
                                 (account_id,)).fetchone()
            if floor is not None and since >= floor[0]:
                gone = sorted({r[0] for r in conn.execute(
                    "SELECT uid FROM changes WHERE account_id = ? AND mailbox_id = ? "
                    "AND modseq > ? AND object_type = 'Membership' AND change = 'd'",
                    (account_id, mailbox_id, since))})
            else:  # the log is compacted past ``since``: compare UIDs
                present = {r[0] for r in conn.execute(
                    "SELECT uid FROM mailbox_messages WHERE account_id = ? AND mailbox_id = ?",
                    (account_id, mailbox_id))}
                gone = [u for u in known if u not in present]
            return st, rows, gone

        return await self._txn(read)

    async def messages(self, account_id: int, mailbox_id: int, uids: list[int],
                       since: int | None = None,
                       structures: bool = False) -> tuple[list[msg.Message], Structures]:
        def read(conn):
            if not uids:
                return [], {}
            if len(uids) > 200 or uids[-1] - uids[0] < 2 * len(uids):
                wanted = set(uids)
                rows = [_message(r) for r in conn.execute(
                    _MSG + " AND mm.uid BETWEEN ? AND ? ORDER BY mm.uid",
                    (account_id, mailbox_id, uids[0], uids[-1])) if r[1] in wanted]
            else:
                rows = []
                for chunk in msg._chunks(uids):
                    rows.extend(_message(r) for r in conn.execute(
                        _MSG + f" AND mm.uid IN ({','.join('?' * len(chunk))})",
                        (account_id, mailbox_id, *chunk)))
                rows.sort(key=lambda m: m.uid)
            if since is not None:
                rows = [m for m in rows if m.modseq > since]
            found: Structures = {}
            if structures and rows:
                ids = sorted({m.email_id for m in rows})
                for chunk in msg._chunks(ids):
                    for email_id, js in conn.execute(
                            "SELECT id, structure_json FROM emails WHERE account_id = ? "
                            f"AND id IN ({','.join('?' * len(chunk))})", (account_id, *chunk)):
                        found[email_id] = json.loads(js)
            return rows, found

        return await self._txn(read)

    async def account_modseqs(self, account_ids: list[int]) -> dict[int, int]:
        def read(conn):
            out = {}
            for a in account_ids:
                row = conn.execute("SELECT modseq FROM accounts WHERE id = ?", (a,)).fetchone()
                if row is not None:
                    out[a] = row[0]
            return out

        return await self._txn(read)

    async def run(self, body):
        """Store functions (LIST, STATUS, SEARCH …) inline too (``Database.read_inline``)."""
        return await self.store.db.read_inline(body)

    def close(self) -> None:
        pass  # the connections are the Database's


def _mailbox_by_path(conn: sqlite3.Connection, account_id: int, path: str) -> Mailbox | None:
    try:
        path = normalize_path(path)
    except InvalidMailboxName:
        return None
    row = conn.execute(f"SELECT {_MB_COLS} FROM mailboxes WHERE account_id = ? AND path = ?",
                       (account_id, path)).fetchone()
    if row is None:
        return None
    return Mailbox(*row[:7], bool(row[7]), *row[8:])
