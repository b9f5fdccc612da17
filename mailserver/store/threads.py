"""Threads: which conversation an email belongs to (JMAP Thread, IMAP THREAD=REFERENCES-ish).

Design (decisions):

- ``thread_refs`` maps every Message-ID an account has seen — the own ``Message-ID``, the
  ``In-Reply-To`` and ``References`` of every stored email — to a thread id. A new email looks
  its ids up with one indexed query; a hit puts it in that thread, otherwise it gets a new id
  (``cs.next_id("thread")``). All its ids not yet in the table are then added, pointing at its
  thread. So a reply finds its parent, a References chain holds together even when middle
  messages are missing, and a parent arriving *after* its reply joins the reply's thread (its
  own Message-ID was recorded by the reply).
- **No merging.** When the ids point at several threads we take the lowest id that qualifies
  and leave the others alone (JMAP thread ids of existing emails never change, RFC 8621 §3:
  an email's threadId is immutable). Ids already mapped keep their thread.
- **Same base subject.** A reference hit only joins a thread that holds an email with the same
  RFC 5256 base subject (``emails.sort_subject``, compared case-insensitively — ASCII only on
  SQLite), or when the new email has none, or when the thread has no email left. (A subjectless
  email in a thread does not open it to every subject.) Like Gmail and Cyrus,
  this keeps giant accidental threads apart ("reply to an old mail to start a new topic"):
  a reply whose subject was changed starts a new thread.
- Emails without any id get a new thread of their own.
- Ids are stored without angle brackets; ids over ``MAX_ID_BYTES`` are ignored (PostgreSQL
  btree keys are limited) and of a long References list only the first (the root) and the last
  ``MAX_REFERENCES`` are used.
- The messages service deletes the refs of threads whose last email is expunged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.store import schema
from mailserver.store.accountlock import ChangeSet

if TYPE_CHECKING:
    from mailserver.message.model import ParsedMessage

MAX_ID_BYTES = 500
MAX_REFERENCES = 50


def thread_message_ids(parsed: "ParsedMessage") -> list[str]:
    """The ids that link an email to a thread, own Message-ID first, without duplicates."""
    refs = list(parsed.references)
    if len(refs) > MAX_REFERENCES + 1:
        refs = refs[:1] + refs[-MAX_REFERENCES:]
    out: list[str] = []
    for raw in (parsed.message_id, *parsed.in_reply_to, *refs):
        mid = (raw or "").strip().strip("<>").strip()
        if mid and len(mid.encode()) <= MAX_ID_BYTES and mid not in out:
            out.append(mid)
    return out


_SQL_SAME_SUBJECT = ("SELECT 1 FROM emails WHERE account_id = ? AND thread_id = ? "
                     "AND lower(sort_subject) = ? LIMIT 1")
_SQL_ANY_EMAIL = "SELECT 1 FROM emails WHERE account_id = ? AND thread_id = ? LIMIT 1"
_SQL_ADD_REF = ("INSERT INTO thread_refs (account_id, message_id, thread_id) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING")


def _sql_known_refs(n: int) -> str:
    return ("SELECT message_id, thread_id FROM thread_refs WHERE account_id = ? "
            "AND message_id IN (" + ", ".join("?" * n) + ")")


async def _qualifies(conn: AsyncConnection, account_id: int, thread_id: int,
                     base_subject: str) -> bool:
    from mailserver.store.engine import driver_sql
    from mailserver.store.messages import DEFERRED

    sql = driver_sql(conn)
    pending = DEFERRED.get()
    waiting = pending.thread_subjects.get((account_id, thread_id)) if pending else None
    if waiting and base_subject.lower() in waiting:  # an email of this batch, not written yet
        return True
    if await sql.fetch(_SQL_SAME_SUBJECT, (account_id, thread_id, base_subject.lower())):
        return True
    # a thread whose emails are all gone (refs not yet cleaned up) is free to join
    return not waiting and not await sql.fetch(_SQL_ANY_EMAIL, (account_id, thread_id))


_KNOWN_REFS = select(schema.thread_refs.c.message_id, schema.thread_refs.c.thread_id).where(
    schema.thread_refs.c.account_id == bindparam("p_a"),
    schema.thread_refs.c.message_id.in_(bindparam("p_ids", expanding=True)))


async def assign_thread(conn: AsyncConnection, cs: ChangeSet, parsed: "ParsedMessage", *,
                        match_subject: bool = True) -> int:
    """The thread id for a new email of ``cs.account_id`` (call before inserting the email).

    Records ("Thread", id, "c") for a new thread and ("Thread", id, "u") for an existing one.
    (Driver SQL: this is on the ingest hot path, see ``mailserver.store.engine.DriverSQL``.)
    """
    from mailserver.store.engine import driver_sql

    sql = driver_sql(conn)
    ids = thread_message_ids(parsed)
    known: dict[str, int] = {}
    if ids:
        rows = await sql.fetch(_sql_known_refs(len(ids)), (cs.account_id, *ids))
        known = {r[0]: r[1] for r in rows}
    thread_id = None
    base = (parsed.base_subject or "").strip()
    for candidate in sorted(set(known.values())):
        if (not match_subject or not base
                or await _qualifies(conn, cs.account_id, candidate, base)):
            thread_id = candidate
            break
    created = thread_id is None
    if thread_id is None:
        thread_id = cs.next_id("thread")
    missing = [i for i in ids if i not in known]
    if missing:
        await sql.executemany(_SQL_ADD_REF, [(cs.account_id, m, thread_id) for m in missing])
    _record_once(cs, thread_id, "c" if created else "u")
    return thread_id


def _insert_ignore(conn: AsyncConnection):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return pg_insert(schema.thread_refs).on_conflict_do_nothing()
    return insert(schema.thread_refs).prefix_with("OR IGNORE")


def _record_once(cs: ChangeSet, thread_id: int, change: str) -> None:
    for row in cs.rows:
        if row["object_type"] == "Thread" and row["object_id"] == thread_id:
            return
    cs.record("Thread", thread_id, change)


async def thread_email_ids(conn: AsyncConnection, account_id: int, thread_id: int) -> list[int]:
    """Email ids of a thread, oldest first (RFC 8621 §3 Thread/get: by receivedAt), then id."""
    e = schema.emails
    rows = await conn.execute(
        select(e.c.id).where(e.c.account_id == account_id, e.c.thread_id == thread_id)
        .order_by(e.c.received_at, e.c.id))
    return list(rows.scalars().all())
