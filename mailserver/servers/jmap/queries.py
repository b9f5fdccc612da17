"""The few reads and writes JMAP needs that the store services do not offer (yet).

Kept here, small and account-first, rather than spread through the method code: exact
receivedAt bounds (the search module works in IMAP days), thread keyword conditions, thread
counts per mailbox, the email ↔ blob ownership check, and Mailbox.sortOrder.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, func, literal, not_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.store import schema
from mailserver.store.accountlock import ChangeSet
from mailserver.store.keywords import decode_keywords
from mailserver.store.messages import Email

E = schema.emails
MM = schema.mailbox_messages
MB = schema.mailboxes
A = schema.accounts


def _has_keyword(kw: str):
    return (literal(" ") + E.c.keywords + literal(" ")).like(
        "% " + kw.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + " %",
        escape="\\")


async def account_modseq(conn: AsyncConnection, account_id: int) -> int:
    return (await conn.execute(select(A.c.modseq).where(A.c.id == account_id))).scalar_one()


async def ids_received(conn: AsyncConnection, account_id: int, *, before: int | None = None,
                       after: int | None = None) -> list[int]:
    """RFC 8621 §4.4.1 before (receivedAt < t) / after (receivedAt >= t), to the second."""
    q = select(E.c.id).where(E.c.account_id == account_id)
    if before is not None:
        q = q.where(E.c.received_at < before)
    if after is not None:
        q = q.where(E.c.received_at >= after)
    return list((await conn.execute(q)).scalars())


async def ids_by_thread_keyword(conn: AsyncConnection, account_id: int, keyword: str,
                                mode: str) -> list[int]:
    """Emails whose thread has the keyword on all / some / none of its emails."""
    with_kw = select(E.c.thread_id).where(E.c.account_id == account_id, _has_keyword(keyword))
    without = select(E.c.thread_id).where(E.c.account_id == account_id,
                                          not_(_has_keyword(keyword)))
    q = select(E.c.id).where(E.c.account_id == account_id)
    if mode == "some":
        q = q.where(E.c.thread_id.in_(with_kw))
    elif mode == "none":
        q = q.where(E.c.thread_id.not_in(with_kw))
    else:  # all
        q = q.where(E.c.thread_id.not_in(without))
    return list((await conn.execute(q)).scalars())


async def thread_of(conn: AsyncConnection, account_id: int,
                    email_ids: Iterable[int]) -> dict[int, int]:
    ids = list(email_ids)
    out: dict[int, int] = {}
    for i in range(0, len(ids), 500):
        rows = await conn.execute(select(E.c.id, E.c.thread_id).where(
            E.c.account_id == account_id, E.c.id.in_(ids[i:i + 500])))
        out.update((r[0], r[1]) for r in rows)
    return out


async def thread_counts(conn: AsyncConnection, account_id: int) -> dict[int, tuple[int, int]]:
    """mailbox id → (threads, threads with an unread email) (RFC 8621 §2 totalThreads)."""
    join = MM.join(E, and_(E.c.account_id == MM.c.account_id, E.c.id == MM.c.email_id))
    total = dict((await conn.execute(
        select(MM.c.mailbox_id, func.count(E.c.thread_id.distinct())).select_from(join)
        .where(MM.c.account_id == account_id).group_by(MM.c.mailbox_id))).all())
    unread = dict((await conn.execute(
        select(MM.c.mailbox_id, func.count(E.c.thread_id.distinct())).select_from(join)
        .where(MM.c.account_id == account_id, not_(_has_keyword("$seen")))
        .group_by(MM.c.mailbox_id))).all())
    return {m: (n, unread.get(m, 0)) for m, n in total.items()}


async def owns_blob(conn: AsyncConnection, account_id: int, sha: str) -> int | None:
    """The id of an email of this account stored as blob ``sha`` (uses its index)."""
    return (await conn.execute(select(E.c.id).where(
        E.c.account_id == account_id, E.c.blob_id == sha).limit(1))).scalar()


async def email_structure(conn: AsyncConnection, account_id: int, email_id: int) -> str | None:
    return (await conn.execute(select(E.c.structure_json).where(
        E.c.account_id == account_id, E.c.id == email_id))).scalar()


async def set_sort_order(conn: AsyncConnection, cs: ChangeSet, mailbox_id: int,
                         sort_order: int) -> None:
    await conn.execute(update(MB).where(MB.c.account_id == cs.account_id, MB.c.id == mailbox_id)
                       .values(sort_order=sort_order))
    cs.record("Mailbox", mailbox_id, "u")


async def mailbox_email_count(conn: AsyncConnection, account_id: int, mailbox_id: int) -> int:
    return (await conn.execute(select(MB.c.total_count).where(
        MB.c.account_id == account_id, MB.c.id == mailbox_id))).scalar() or 0


async def mailbox_email_ids(conn: AsyncConnection, account_id: int, mailbox_id: int) -> list[int]:
    return list((await conn.execute(select(MM.c.email_id).where(
        MM.c.account_id == account_id, MM.c.mailbox_id == mailbox_id))).scalars())


async def quota(conn: AsyncConnection, account_id: int) -> tuple[int, int]:
    row = (await conn.execute(select(A.c.used_bytes, A.c.quota_bytes)
                              .where(A.c.id == account_id))).one()
    return row[0], row[1]


_ADDRESS_COLUMNS = {"from": "from_json", "sender": "sender_json", "replyTo": "reply_to_json",
                    "to": "to_json", "cc": "cc_json", "bcc": "bcc_json"}


async def emails_for_get(conn: AsyncConnection, account_id: int, email_ids: list[int],
                         props: set[str], need_structure: bool) -> dict[int, Email]:
    """``messages.get_emails`` reading only what an Email/get asked for.

    Measured (Email/get of 50, the list properties of a mail client): decoding every JSON
    column of every row was most of the request's CPU; here unrequested address lists and the
    MIME structure are neither selected nor decoded (they come back empty)."""
    wanted_addr = {p: c for p, c in _ADDRESS_COLUMNS.items() if p in props}
    cols = [E.c.id, E.c.blob_id, E.c.size, E.c.received_at, E.c.received_tz, E.c.sent_at,
            E.c.thread_id, E.c.keywords, E.c.subject, E.c.message_id, E.c.in_reply_to,
            E.c.references, E.c.preview, E.c.has_attachment, E.c.created_modseq,
            E.c.updated_modseq, *(E.c[c] for c in wanted_addr.values())]
    if need_structure:
        cols.append(E.c.structure_json)
    out: dict[int, Email] = {}
    for i in range(0, len(email_ids), 500):
        chunk = email_ids[i:i + 500]
        boxes: dict[int, dict[int, int]] = defaultdict(dict)
        if "mailboxIds" in props:
            for email_id, mbox, uid in await conn.execute(
                    select(MM.c.email_id, MM.c.mailbox_id, MM.c.uid).where(
                        MM.c.account_id == account_id, MM.c.email_id.in_(chunk))):
                boxes[email_id][mbox] = uid
        for r in await conn.execute(select(*cols).where(E.c.account_id == account_id,
                                                        E.c.id.in_(chunk))):
            m = r._mapping
            addr = {p: json.loads(m[c]) for p, c in wanted_addr.items()}
            out[r.id] = Email(
                r.id, r.blob_id, r.size, r.received_at, r.received_tz, r.sent_at, r.thread_id,
                decode_keywords(r.keywords), r.subject, addr.get("from", []),
                addr.get("sender", []), addr.get("replyTo", []), addr.get("to", []),
                addr.get("cc", []), addr.get("bcc", []), r.message_id,
                tuple(r.in_reply_to.split()), tuple(r.references.split()), r.preview,
                bool(r.has_attachment),
                json.loads(m["structure_json"]) if need_structure else {},
                r.created_modseq, r.updated_modseq, boxes.get(r.id, {}))
    return out


# ---------------------------------------------------------------------------------------------
# Hot paths of a mail client's list view (Email/query of a mailbox + Email/get of the page):
# plain driver SQL, tuples out. Measured on a 10,000-message mailbox: building, compiling and
# row-mapping the SQLAlchemy statements cost more CPU than SQLite running them.
# ---------------------------------------------------------------------------------------------

def _marks(conn: AsyncConnection, n: int, start: int = 1) -> str:
    """``n`` driver placeholders from position ``start``: ``?`` (SQLite), ``$k`` (asyncpg)."""
    if conn.dialect.paramstyle == "qmark":
        return ",".join("?" * n)
    return ",".join(f"${k}" for k in range(start, start + n))


def _sql(conn: AsyncConnection, statement: str) -> str:
    """``statement`` written with ``?`` placeholders, in the driver's own style."""
    if conn.dialect.paramstyle == "qmark":
        return statement
    parts = statement.split("?")
    return "".join(p + (f"${k}" if k < len(parts) else "") for k, p in enumerate(parts, 1))


async def fetch_rows(conn: AsyncConnection, statement: str, params: tuple) -> list[Any]:
    """``statement`` (driver placeholders) → its rows as tuples; straight on the ``sqlite3``
    connection when the JMAP SQLite reader lends it (``sqlitereader.ReaderConnection``)."""
    dbapi = getattr(conn, "dbapi", None)
    if dbapi is not None:
        return dbapi.execute(statement, params).fetchall()
    return (await conn.exec_driver_sql(statement, params)).fetchall()


async def account_modseq_fast(conn: AsyncConnection, account_id: int) -> int:
    rows = await fetch_rows(conn, _sql(conn, "SELECT modseq FROM accounts WHERE id = ?"),
                            (account_id,))
    return rows[0][0]


async def mailbox_page(conn: AsyncConnection, account_id: int, mailbox_id: int | None,
                       descending: bool, offset: int, limit: int) -> list[int]:
    """Email ids of one mailbox (or the account when ``mailbox_id`` is None) by receivedAt,
    ties by id in the same direction, ``limit`` from ``offset``: walks the (account,
    receivedAt) index and stops at the limit instead of sorting the mailbox."""
    d = "DESC" if descending else "ASC"
    if mailbox_id is None:
        sql = (f"SELECT e.id FROM emails e WHERE e.account_id = ? "
               f"ORDER BY e.received_at {d}, e.id {d} LIMIT ? OFFSET ?")
        params: tuple = (account_id, limit, offset)
    else:
        sql = (f"SELECT e.id FROM emails e WHERE e.account_id = ? AND EXISTS ("
               f"SELECT 1 FROM mailbox_messages m WHERE m.account_id = e.account_id "
               f"AND m.email_id = e.id AND m.mailbox_id = ?) "
               f"ORDER BY e.received_at {d}, e.id {d} LIMIT ? OFFSET ?")
        params = (account_id, mailbox_id, limit, offset)
    return [r[0] for r in await fetch_rows(conn, _sql(conn, sql), params)]


# the immutable part of an Email (RFC 8621 §4.1: everything but keywords and mailboxIds)
SUMMARY_COLUMNS = ("id, blob_id, created_modseq, size, received_at, sent_at, thread_id, "
                   "subject, message_id, in_reply_to, \"references\", preview, "
                   "has_attachment, from_json, sender_json, reply_to_json, to_json, cc_json, "
                   "bcc_json")


async def email_list_rows(conn: AsyncConnection, account_id: int, email_ids: list[int],
                          cached: Any, *, mailboxes: bool):
    """What an Email/get of list properties reads, in one transaction, for ``email_ids``:

    - ``keywords``: id → stored keywords of every email that exists;
    - ``hits``: id → the entry of ``cached`` (``get((account_id, email_id))`` → an object with
      ``blob_id`` and ``created_modseq``, or None) that matches the row read now;
    - ``summaries``: the ``SUMMARY_COLUMNS`` rows of the others;
    - ``boxes``: id → mailbox ids, when ``mailboxes``.
    """
    keywords: dict[int, str] = {}
    hits: dict[int, Any] = {}
    summaries: list[tuple] = []
    boxes: dict[int, list[int]] = defaultdict(list)
    for i in range(0, len(email_ids), 500):
        chunk = email_ids[i:i + 500]
        n = len(chunk)
        rows = await fetch_rows(
            conn, f"SELECT id, blob_id, created_modseq, keywords FROM emails "
            f"WHERE account_id = {_marks(conn, 1)} AND id IN ({_marks(conn, n, 2)})",
            (account_id, *chunk))
        missing = []
        for r in rows:
            keywords[r[0]] = r[3]
            hit = cached.get((account_id, r[0]))
            if hit is None or hit.blob_id != r[1] or hit.created_modseq != r[2]:
                missing.append(r[0])
            else:
                hits[r[0]] = hit
        if missing:
            summaries.extend(await fetch_rows(
                conn, f"SELECT {SUMMARY_COLUMNS} FROM emails WHERE account_id = "
                f"{_marks(conn, 1)} AND id IN ({_marks(conn, len(missing), 2)})",
                (account_id, *missing)))
        if mailboxes:
            # uid selected too: with (email_id, mailbox_id) alone SQLite prefers scanning the
            # covering (account, mailbox, email) index of the whole account — 20× slower
            for email_id, mailbox_id, _uid in await fetch_rows(
                    conn, f"SELECT email_id, mailbox_id, uid FROM mailbox_messages "
                    f"WHERE account_id = {_marks(conn, 1)} AND email_id IN ({_marks(conn, n, 2)})",
                    (account_id, *chunk)):
                boxes[email_id].append(mailbox_id)
    return keywords, hits, summaries, boxes
